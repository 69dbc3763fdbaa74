using Engine.Kernels;

namespace Engine;

/// <summary>
/// 16-bit copies of a model's weights for the products of one training step at a time. Under bf16 or fp16 GEMMs a
/// backend whose products read 16-bit operands (CUDA, <see cref="IKernels.ReadsPackedGemmOperands"/>) converts a
/// float32 weight at every product that reads it: a Linear's twice a step (its forward, and dx = dy·W in the backward),
/// one launch each, about a fifth of a ViT step's launches. While a <see cref="Hold"/> lasts, each weight is converted
/// once, all of them in one launch per 32 weights (<see cref="IKernels.PackLowPrecisionMany"/>), and the products read
/// the copies (<see cref="IKernels.ShareWeightCopies"/>): the same results bit for bit, with half the conversion traffic.
/// The copies live in one 16-bit tensor from the device's pool, kept between holds and counted in the device's memory
/// figures (2 bytes per weight value). While held, writes to the weights through the engine are refused, as for
/// <see cref="FrozenWeights"/>. <c>TrainStep</c> holds them around each step's forward and backward when given the
/// model's weights.
/// </summary>
/// <example><code>
/// using var copies = new WeightCopies(model.Parameters);
/// using (copies.Hold())
/// {
///     // forward and backward; no optimizer step until the hold ends
/// }
/// </code></example>
public sealed unsafe class WeightCopies : IDisposable
{
    readonly List<Tensor> _weights = [];
    Tensor? _copies;
    PackTarget[] _targets = [];
    bool _held, _disposed;
    int _holds; // numbers each hold, so that disposing an old one twice cannot end a newer one

    /// <summary>Takes every contiguous float32 tensor of two or more dimensions among <paramref name="weights"/> (vectors
    /// are never a product's weight; a strided view is left to convert as before), keeping each alive until this is
    /// disposed. Where two share values (a weight and a view into it, or the same weight twice), the first one given
    /// is copied and the other left out: a product inside either reads the copy where it lies within it.</summary>
    /// <exception cref="ArgumentException">The weights are on more than one device.</exception>
    public WeightCopies(IEnumerable<Tensor> weights)
    {
        foreach (var w in weights)
        {
            if (w.DType != DType.F32 || w.Rank < 2 || !w.IsContiguous || _weights.Any(taken => Overlap(taken, w))) continue;
            if (_weights.Count > 0 && w.Device != _weights[0].Device)
                throw new ArgumentException($"WeightCopies: {w.Describe()} is on {w.Device}, the others on {_weights[0].Device}", nameof(weights));
            _weights.Add(w.Alias());
        }
    }

    static bool Overlap(Tensor a, Tensor b) => a.Data < b.Data + b.Count && b.Data < a.Data + a.Count;

    /// <summary>How many weights are copied.</summary>
    public int Count => _weights.Count;

    /// <summary>Whether <see cref="Hold"/> would convert the weights now: there are some, and the device's products read
    /// 16-bit operands under its current GEMM precision (bf16 or fp16 on CUDA).</summary>
    public bool Active
    {
        get
        {
            if (_disposed || _weights.Count == 0) return false;
            var kernels = _weights[0].Device.Kernels;
            return kernels.ReadsPackedGemmOperands && kernels.GemmPrecision is Precision.BF16 or Precision.FP16;
        }
    }

    /// <summary>Bytes the copies take on the device (0 until the first <see cref="Hold"/> that made them).</summary>
    public long Bytes => _copies?.Bytes ?? 0;

    /// <summary>
    /// Converts every weight into its copy and shares the copies with the device's products until the returned object
    /// is disposed; the weights refuse writes meanwhile. Null, doing nothing, where the products would not read them:
    /// no weights, a backend that does not read 16-bit operands (the CPU), or GEMMs in fp32 or tf32.
    /// </summary>
    /// <exception cref="InvalidOperationException">A hold is already open.</exception>
    /// <exception cref="DeviceOutOfMemoryException">The device has no room for the copies; nothing is held.</exception>
    public IDisposable? Hold()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_held) throw new InvalidOperationException("WeightCopies: a hold is already open");
        if (!Active) return null;
        var kernels = _weights[0].Device.Kernels;
        var precision = kernels.GemmPrecision;
        var dtype = precision == Precision.BF16 ? DType.BF16 : DType.F16;
        if (_copies?.DType != dtype) MakeCopies(dtype);
        foreach (var w in _weights) w.Storage.Frozen++;
        _held = true;
        try
        {
            kernels.PackLowPrecisionMany(_targets, precision);
            kernels.ShareWeightCopies(_targets, precision);
        }
        catch
        {
            Release();
            throw;
        }
        return new Held(this, ++_holds);
    }

    /// <summary>One tensor for all the copies, each starting on a 256-byte boundary (the alignment cuBLAS's fastest
    /// kernels want).</summary>
    void MakeCopies(DType dtype)
    {
        _copies?.Dispose();
        _copies = null;
        var offsets = new long[_weights.Count];
        long total = 0;
        for (int i = 0; i < _weights.Count; i++)
        {
            offsets[i] = total;
            total += (_weights[i].Count + 127) / 128 * 128;
        }
        _copies = Tensor.Empty(_weights[0].Device, dtype, checked((int)(total / 128)), 128);
        _targets = new PackTarget[_weights.Count];
        for (int i = 0; i < _weights.Count; i++) _targets[i] = new PackTarget(_copies.HalfData + offsets[i], _weights[i].Data, _weights[i].Count);
    }

    /// <summary>Stops sharing the copies and lets the weights change again.</summary>
    void Release()
    {
        if (!_held) return;
        _held = false;
        try
        {
            _weights[0].Device.Kernels.ShareWeightCopies([], Precision.FP32);
        }
        finally
        {
            foreach (var w in _weights) w.Storage.Frozen--;
        }
    }

    sealed class Held(WeightCopies owner, int hold) : IDisposable
    {
        public void Dispose()
        {
            if (owner._holds == hold) owner.Release();
        }
    }

    /// <summary>Ends any hold, frees the copies and lets go of the weights.</summary>
    public void Dispose()
    {
        _disposed = true;
        Release();
        _copies?.Dispose();
        _copies = null;
        foreach (var w in _weights) w.Dispose();
        _weights.Clear();
    }
}
