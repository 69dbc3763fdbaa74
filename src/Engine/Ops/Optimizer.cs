using Engine.Kernels;

namespace Engine;

// The optimizer's update, as each parameter's trainability says (not recorded: it runs outside autograd).
// Kernels: CpuKernels.Optimizer.cs, cuda/optimizer.cu.
public static unsafe partial class Ops
{
    /// <summary>A parameter and its Adam state: moments m and v, and its weight decay.</summary>
    internal readonly record struct AdamParameter(Tensor Param, Tensor M, Tensor V, float WeightDecay);

    /// <summary>
    /// One Adam/AdamW step of every parameter in <paramref name="parameters"/> from its gradient and moments (torch.optim's
    /// update, bias corrections for step <paramref name="step"/>). Dense: every element; masked: the mask's elements, the
    /// others bitwise unchanged; selected entries: grad, m and v are [rows, K] and only those entries move. All go to the
    /// backend together (<see cref="IKernels.AdamStepMany"/>: on a GPU, small parameters share a launch, whatever their
    /// trainability). With <paramref name="stepValues"/> the kernels read lr and the bias corrections from the device
    /// instead (see <see cref="IKernels.AdamStep"/>).
    /// </summary>
    internal static void AdamStep(IReadOnlyList<AdamParameter> parameters, float lr, float beta1, float beta2, float eps, int step,
        bool decoupled, float* stepValues = null)
    {
        foreach (var group in parameters.GroupBy(p => p.Param.Device))
        {
            var k = group.Key.Kernels;
            var tensors = new List<AdamTensor>();
            foreach (var (param, m, v, weightDecay) in group)
            {
                param.CheckNotFrozen("take an optimizer step of");
                var grad = param.Grad ?? throw new InvalidOperationException($"AdamStep: {param.Describe()} has no gradient");
                var trainability = param.Trainability;
                if (!m.Shape.AsSpan().SequenceEqual(trainability.StateShape(param)))
                    throw new InvalidOperationException($"AdamStep: {param.Describe()} trains {trainability.Kind} now, but its moments {m.Describe()} were made for another trainability");
                tensors.Add(trainability.Entries is { } index
                    ? new AdamTensor(param.Data, grad.Data, m.Data, v.Data, index.Count, weightDecay, index: index.IntData, perRow: index.Shape[1],
                        columns: (int)(param.Count / index.Shape[0]))
                    : new AdamTensor(param.Data, grad.Data, m.Data, v.Data, param.Count, weightDecay, mask: trainability.Mask is { } mask ? mask.Data : null));
            }
            if (tensors.Count > 0) k.AdamStepMany(tensors.ToArray(), lr, beta1, beta2, eps, step, decoupled, stepValues);
        }
    }

    /// <summary>Zeroes the gradient of every parameter that has one (keeping the buffers): on a GPU the small ones share a
    /// launch (<see cref="IKernels.FillMany"/>).</summary>
    internal static void ZeroGrads(IEnumerable<Tensor> parameters)
    {
        foreach (var group in parameters.Where(p => p.Grad != null).GroupBy(p => p.Device))
            group.Key.Kernels.FillMany([.. group.Select(p => new TensorSpan(p.Grad!.Data, p.Grad.Count))], 0f);
    }
}
