namespace Engine;

/// <summary>
/// Weights promised not to change while this object lives, so each backend may keep them in the form its products read
/// fastest (<see cref="Kernels.IKernels.FreezeWeight"/>): the CPU packs a frozen Linear weight at its first product and
/// streams the packed panels from then on, as ONNX Runtime packs a session's weights when it loads them. Products with
/// few rows (batch 1, the late stages of Swin and ConvNeXt) gain the most: 5–16% for single products of 49–197 rows in
/// docs/benchmarks.md, a few percent or less of a whole forward. The packed copies cost as much memory again as the
/// weights that are used by a Linear layer. While frozen, <see cref="Tensor.CopyFrom(ReadOnlySpan{float})"/>
/// (loading a checkpoint, merging a PEFT method), <see cref="Init"/> and optimizer steps refuse the weights; dispose this to
/// change them.
/// </summary>
/// <example><code>
/// using (FrozenWeights.Freeze(model.Parameters))
///     foreach (var images in batches)
///     {
///         using var logits = model.Forward(images);
///         ...
///     }
/// </code></example>
public sealed unsafe class FrozenWeights : IDisposable
{
    readonly List<Tensor> _weights;

    FrozenWeights(List<Tensor> weights) => _weights = weights;

    /// <summary>Freezes every float32 tensor of two or more dimensions among <paramref name="weights"/> (vectors are
    /// never a product's weight); each stays alive until this is disposed.</summary>
    /// <exception cref="ArgumentException">A weight is a strided view (only whole, contiguous weights can be packed).</exception>
    public static FrozenWeights Freeze(IEnumerable<Tensor> weights)
    {
        var frozen = new List<Tensor>();
        try
        {
            foreach (var w in weights)
            {
                if (w.DType != DType.F32 || w.Rank < 2 || frozen.Contains(w)) continue;
                if (!w.IsContiguous) throw new ArgumentException($"cannot freeze the strided view {w.Describe()}: freeze the whole weight", nameof(weights));
                var view = w.Alias(); // holds the storage until Dispose, whatever the caller does with w
                view.Storage.Frozen++;
                frozen.Add(view);
                w.Device.Kernels.FreezeWeight(view.Data, view.Count);
            }
        }
        catch
        {
            new FrozenWeights(frozen).Dispose();
            throw;
        }
        return new FrozenWeights(frozen);
    }

    /// <summary>How many weights are frozen.</summary>
    public int Count => _weights.Count;

    /// <summary>Thaws every weight (freeing packed copies) and lets them change again.</summary>
    public void Dispose()
    {
        foreach (var w in _weights)
        {
            w.Device.Kernels.ThawWeight(w.Data);
            w.Storage.Frozen--;
            w.Dispose();
        }
        _weights.Clear();
    }
}
