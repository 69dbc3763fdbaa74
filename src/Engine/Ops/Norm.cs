using Engine.Autograd;

namespace Engine;

// LayerNorm, per-channel scale-shift (SSF) and row L2 normalisation. Kernels: CpuKernels.Norm.cs, cuda/norm.cu.
public static unsafe partial class Ops
{
    /// <summary>LayerNorm over the last dimension: y = (x − μ)/√(σ² + eps)·weight + bias, biased variance.
    /// weight, bias [C] or null. Saves x, μ and 1/σ for backward (and a computed weight, which its caller may dispose).
    /// <paramref name="gemmInput"/>: y is read only by Linear layers (<see cref="Linear"/>, <see cref="LinearGelu"/>,
    /// <see cref="LinearScaleShift(Tensor, Tensor, Tensor, Tensor, Tensor, bool)"/>, <see cref="LinearScaleShiftGelu"/>; a ViT block's
    /// norms before qkv and fc1), so under bf16 or fp16 GEMMs it is written in that 16-bit format, which those products
    /// round their input to anyway: their outputs and gradients are bit for bit those of a float32 y, with half the bytes
    /// written and read and no conversion before the product. Else y is float32.</summary>
    public static Tensor LayerNorm(Tensor x, Tensor? weight, Tensor? bias, float eps, bool gemmInput = false)
    {
        const string op = "LayerNorm";
        Check(op, "input", x);
        int C = LastDim(x), rows = Rows(x);
        CheckVector(op, "weight", weight, C, x);
        CheckVector(op, "bias", bias, C, x);
        var y = OutputFor(x.Device, gemmInput, x.Shape);
        bool record = Tape.ShouldRecord(x, weight, bias);
        Tensor? mean = record ? Tensor.Empty(x.Device, DType.F32, rows) : null;
        Tensor? rstd = record ? Tensor.Empty(x.Device, DType.F32, rows) : null;
        x.Device.Kernels.LayerNormForward(Floats(y), Halves(y), mean == null ? null : mean.Data, rstd == null ? null : rstd.Data, x.Data,
            weight == null ? null : weight.Data, bias == null ? null : bias.Data, rows, C, eps);
        if (record)
            Tape.Push(y, new LayerNormSaved
            {
                X = x, Weight = weight, Bias = bias, XKept = Tape.Save(x), Mean = Tape.Keep(mean!),
                Rstd = Tape.Keep(rstd!), Rows = rows, C = C,
                WeightKept = weight is { IsLeaf: false } ? Tape.Save(weight) : null,
            });
        return y;
    }

    /// <summary>LayerNorm's backward state: x [Rows, C], weight and bias [C], μ and 1/σ [Rows].</summary>
    struct LayerNormSaved : IBackward<LayerNormSaved>
    {
        public Tensor X, XKept, Mean, Rstd;
        public Tensor? Weight, Bias, WeightKept;
        public int Rows, C;

        public static void Backward(ref LayerNormSaved s, Tensor y)
        {
            float* dx = Tape.GradOutputIfNeeded(s.X, out bool acc);
            y.Device.Kernels.LayerNormBackward(dx, Tape.GradCopyIfWanted(s.X), Tape.GradAccumulatorIfNeeded(s.Weight), Tape.GradAccumulatorIfNeeded(s.Bias),
                y.Grad!.Data, s.XKept.Data, (s.WeightKept ?? s.Weight) is { } w ? w.Data : null, s.Mean.Data, s.Rstd.Data, s.Rows, s.C, acc);
        }
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
            Tape.Push(y, new ScaleShiftSaved
            {
                X = x, Scale = scale, Shift = shift,
                XKept = scale.RequiresGrad ? Tape.Save(x) : null,
            });
        return y;
    }

    /// <summary>ScaleShift's backward state: x [rows, C], scale and shift [C].</summary>
    struct ScaleShiftSaved : IBackward<ScaleShiftSaved>
    {
        public Tensor X, Scale, Shift;
        public Tensor? XKept;

        public static void Backward(ref ScaleShiftSaved s, Tensor y)
        {
            float* dx = Tape.GradOutputIfNeeded(s.X, out bool acc);
            // dscale needs x; when scale is frozen x was not saved and the kernel never reads it.
            float* x = s.XKept == null ? null : s.XKept.Data;
            y.Device.Kernels.ScaleShiftBackward(dx, null, Tape.GradAccumulatorIfNeeded(s.Scale), Tape.GradAccumulatorIfNeeded(s.Shift),
                y.Grad!.Data, x, s.Scale.Data, Rows(y), LastDim(y), acc);
        }
    }

    /// <summary>Row L2 normalisation over the last dimension: y = x / max(‖x‖₂, eps) (torch's F.normalize). Saves x
    /// and y for backward.</summary>
    public static Tensor L2Normalize(Tensor x, float eps = 1e-12f)
    {
        Check("L2Normalize", "input", x);
        var y = NewLike(x);
        x.Device.Kernels.L2NormalizeForward(y.Data, x.Data, Rows(x), LastDim(x), eps);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new L2NormalizeSaved { X = x, XKept = Tape.Save(x), YKept = Tape.Save(y), Eps = eps });
        return y;
    }

    /// <summary>L2Normalize's backward state: x and y [rows, C].</summary>
    struct L2NormalizeSaved : IBackward<L2NormalizeSaved>
    {
        public Tensor X, XKept, YKept;
        public float Eps;

        public static void Backward(ref L2NormalizeSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            y.Device.Kernels.L2NormalizeBackward(dx, y.Grad!.Data, s.XKept.Data, s.YKept.Data, Rows(y), LastDim(y), s.Eps, acc);
        }
    }
}
