using Engine.Autograd;

namespace Engine;

// LayerNorm, softmax and per-channel scale-shift (SSF).
public static unsafe partial class Ops
{
    /// <summary>LayerNorm over the last dimension: y = (x − μ)/√(σ² + eps)·weight + bias, biased variance.
    /// weight, bias [C] or null. Saves x, μ and 1/σ for backward (and a computed weight, which its caller may dispose).</summary>
    public static Tensor LayerNorm(Tensor x, Tensor? weight, Tensor? bias, float eps)
    {
        const string op = "LayerNorm";
        Check(op, "input", x);
        int C = LastDim(x), rows = Rows(x);
        CheckVector(op, "weight", weight, C, x);
        CheckVector(op, "bias", bias, C, x);
        var y = NewLike(x);
        bool record = Tape.ShouldRecord(x, weight, bias);
        Tensor? mean = record ? Tensor.Empty(x.Device, DType.F32, rows) : null;
        Tensor? rstd = record ? Tensor.Empty(x.Device, DType.F32, rows) : null;
        x.Device.Kernels.LayerNormForward(y.Data, mean == null ? null : mean.Data, rstd == null ? null : rstd.Data, x.Data,
            weight == null ? null : weight.Data, bias == null ? null : bias.Data, rows, C, eps);
        if (record)
        {
            ref var n = ref Tape.Push(&LayerNormBackward, y);
            n.In0 = x;
            n.In1 = weight;
            n.In2 = bias;
            n.Saved0 = Tape.Save(x);
            n.Saved1 = mean;
            n.Saved2 = rstd;
            if (weight is { IsLeaf: false }) n.Saved3 = Tape.Save(weight);
            n.I0 = rows;
            n.I1 = C;
        }
        return y;
    }

    static void LayerNormBackward(ref Node n)
    {
        float* dx = Tape.GradOutputIfNeeded(n.In0, out bool acc);
        n.Out.Device.Kernels.LayerNormBackward(dx, Tape.GradAccumulatorIfNeeded(n.In1), Tape.GradAccumulatorIfNeeded(n.In2),
            n.Out.Grad!.Data, n.Saved0!.Data, (n.Saved3 ?? n.In1) is { } w ? w.Data : null, n.Saved1!.Data, n.Saved2!.Data, n.I0, n.I1, acc);
    }

    /// <summary>Softmax over the last dimension (max-subtracted). Saves the output.</summary>
    public static Tensor Softmax(Tensor x)
    {
        Check("Softmax", "input", x);
        var y = NewLike(x);
        x.Device.Kernels.SoftmaxForward(y.Data, x.Data, Rows(x), LastDim(x));
        if (Tape.ShouldRecord(x))
        {
            ref var n = ref Tape.Push(&SoftmaxBackward, y);
            n.In0 = x;
            n.Saved0 = Tape.Save(y);
        }
        return y;
    }

    static void SoftmaxBackward(ref Node n)
    {
        float* dx = Tape.GradOutput(n.In0!, out bool acc);
        n.Out.Device.Kernels.SoftmaxBackward(dx, n.Out.Grad!.Data, n.Saved0!.Data, Rows(n.Out), LastDim(n.Out), acc);
    }

    /// <summary>SSF scale-shift over the last dimension: y = x·scale + shift, scale and shift [C].
    /// x is kept for backward only when scale trains.</summary>
    public static Tensor ScaleShift(Tensor x, Tensor scale, Tensor shift)
    {
        const string op = "ScaleShift";
        Check(op, "input", x);
        int C = LastDim(x);
        CheckVector(op, "scale", scale, C, x);
        CheckVector(op, "shift", shift, C, x);
        var y = NewLike(x);
        x.Device.Kernels.ScaleShiftForward(y.Data, x.Data, scale.Data, shift.Data, Rows(x), C);
        if (Tape.ShouldRecord(x, scale, shift))
        {
            ref var n = ref Tape.Push(&ScaleShiftBackward, y);
            n.In0 = x;
            n.In1 = scale;
            n.In2 = shift;
            if (scale.RequiresGrad) n.Saved0 = Tape.Save(x);
        }
        return y;
    }

    static void ScaleShiftBackward(ref Node n)
    {
        float* dx = Tape.GradOutputIfNeeded(n.In0, out bool acc);
        // dscale needs x; when scale is frozen x was not saved and the kernel never reads it.
        float* x = n.Saved0 == null ? null : n.Saved0.Data;
        n.Out.Device.Kernels.ScaleShiftBackward(dx, Tape.GradAccumulatorIfNeeded(n.In1), Tape.GradAccumulatorIfNeeded(n.In2),
            n.Out.Grad!.Data, x, n.In1!.Data, Rows(n.Out), LastDim(n.Out), acc);
    }

    /// <summary>Row L2 normalisation over the last dimension: y = x / max(‖x‖₂, eps) (torch's F.normalize). Saves x
    /// and y for backward.</summary>
    public static Tensor L2Normalize(Tensor x, float eps = 1e-12f)
    {
        Check("L2Normalize", "input", x);
        var y = NewLike(x);
        x.Device.Kernels.L2NormalizeForward(y.Data, x.Data, Rows(x), LastDim(x), eps);
        if (Tape.ShouldRecord(x))
        {
            ref var n = ref Tape.Push(&L2NormalizeBackward, y);
            n.In0 = x;
            n.Saved0 = Tape.Save(x);
            n.Saved1 = Tape.Save(y);
            n.F0 = eps;
        }
        return y;
    }

    static void L2NormalizeBackward(ref Node n)
    {
        float* dx = Tape.GradOutput(n.In0!, out bool acc);
        n.Out.Device.Kernels.L2NormalizeBackward(dx, n.Out.Grad!.Data, n.Saved0!.Data, n.Saved1!.Data, Rows(n.Out), LastDim(n.Out), n.F0, acc);
    }
}
