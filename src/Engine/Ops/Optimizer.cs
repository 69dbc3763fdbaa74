namespace Engine;

// The optimizer's update, as the parameter's trainability says (not recorded: it runs outside autograd).
// Kernels: CpuKernels.Optimizer.cs, cuda/optimizer.cu.
public static unsafe partial class Ops
{
    /// <summary>
    /// One Adam/AdamW step of <paramref name="param"/> from its gradient and moments m, v (torch.optim's update, bias
    /// corrections for step <paramref name="step"/>). Dense: every element; masked: the mask's elements, the others
    /// bitwise unchanged; selected entries: grad, m and v are [rows, K] and only those entries move. With
    /// <paramref name="stepValues"/> the kernels read lr and the bias corrections from the device instead (see
    /// <see cref="Kernels.IKernels.AdamStep"/>).
    /// </summary>
    internal static void AdamStep(Tensor param, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps, float weightDecay,
        int step, bool decoupled, float* stepValues = null)
    {
        param.CheckNotFrozen("take an optimizer step of");
        var grad = param.Grad ?? throw new InvalidOperationException($"AdamStep: {param.Describe()} has no gradient");
        var trainability = param.Trainability;
        if (!m.Shape.AsSpan().SequenceEqual(trainability.StateShape(param)))
            throw new InvalidOperationException($"AdamStep: {param.Describe()} trains {trainability.Kind} now, but its moments {m.Describe()} were made for another trainability");
        var k = param.Device.Kernels;
        if (trainability.Entries is { } index)
            k.SparseAdamStep(param.Data, grad.Data, m.Data, v.Data, index.IntData, index.Shape[0], (int)(param.Count / index.Shape[0]), index.Shape[1],
                lr, beta1, beta2, eps, weightDecay, step, decoupled, stepValues);
        else
            k.AdamStep(param.Data, grad.Data, m.Data, v.Data, trainability.Mask is { } mask ? mask.Data : null, param.Count, lr, beta1, beta2, eps,
                weightDecay, step, decoupled, stepValues);
    }
}
