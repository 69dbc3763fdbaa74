using Engine.Autograd;
using Engine.Kernels;

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

    /// <summary>Many [C] vectors scaled and shifted at once: y_j = x_j ⊙ scale_j + shift_j, a null shift adding nothing
    /// (C may differ from vector to vector). The values and gradients of a <see cref="ScaleShift"/> each, in one kernel
    /// call forward and one backward (<see cref="IKernels.ScaleShiftMany"/>: on a GPU a launch per 32 vectors instead of
    /// one each): SSF folds every site's scale and shift into its layer's vectors so. x_j is kept for backward only when
    /// scale_j trains.</summary>
    /// <returns>The outputs, in the inputs' order.</returns>
    public static Tensor[] ScaleShiftMany(IReadOnlyList<(Tensor X, Tensor Scale, Tensor? Shift)> vectors)
    {
        const string op = "ScaleShiftMany";
        if (vectors.Count == 0) return [];
        var device = vectors[0].X.Device;
        var spans = new ScaleShiftVector[vectors.Count];
        var outputs = new Tensor[vectors.Count];
        for (int j = 0; j < vectors.Count; j++)
        {
            var (x, scale, shift) = vectors[j];
            Check(op, $"vector {j}", x, 1, device);
            CheckVector(op, $"scale {j}", scale, x.Shape[0], x);
            CheckVector(op, $"shift {j}", shift, x.Shape[0], x);
        }
        try
        {
            for (int j = 0; j < vectors.Count; j++)
            {
                var (x, scale, shift) = vectors[j];
                outputs[j] = NewLike(x);
                spans[j] = new ScaleShiftVector(outputs[j].Data, x.Data, scale.Data, shift == null ? null : shift.Data, x.Shape[0]);
            }
        }
        catch
        {
            foreach (var y in outputs) y?.Dispose();
            throw;
        }
        device.Kernels.ScaleShiftMany(spans);
        ScaleShiftGroup? group = null;
        for (int j = 0; j < vectors.Count; j++)
        {
            var (x, scale, shift) = vectors[j];
            if (!Tape.ShouldRecord(x, scale, shift)) continue;
            group ??= new ScaleShiftGroup();
            group.Members.Add((outputs[j], x, scale, shift, scale.RequiresGrad ? Tape.Save(x) : null));
            Tape.Push(outputs[j], new ScaleShiftManySaved { Group = group });
        }
        return outputs;
    }

    /// <summary>The recorded vectors of one <see cref="ScaleShiftMany"/>, whose backward runs once for all of them: when
    /// the tape reaches the first of their nodes with a gradient (every consumer of every output was recorded after
    /// them, so each output's gradient is complete by then).</summary>
    sealed class ScaleShiftGroup
    {
        public readonly List<(Tensor Y, Tensor X, Tensor Scale, Tensor? Shift, Tensor? XKept)> Members = new();
        public bool Done;

        public void Backward(Device device)
        {
            Done = true;
            var grads = new List<ScaleShiftVectorGrad>(Members.Count);
            // Last vector first, the order in which a ScaleShift each would run on the tape: where two share a target
            // (a norm's γ scales its weight and bias) the additions land in the same order, so the sums are bit for bit.
            for (int j = Members.Count - 1; j >= 0; j--)
            {
                var (y, x, scale, shift, xKept) = Members[j];
                if (y.Grad == null) continue;
                float* dx = Tape.GradOutputIfNeeded(x, out bool accumulate);
                grads.Add(new ScaleShiftVectorGrad(dx, accumulate, Tape.GradAccumulatorIfNeeded(scale), Tape.GradAccumulatorIfNeeded(shift),
                    y.Grad.Data, xKept == null ? null : xKept.Data, scale.Data, y.Shape[0]));
            }
            device.Kernels.ScaleShiftManyBackward(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(grads));
        }
    }

    /// <summary>A <see cref="ScaleShiftMany"/> output's node: the group's backward, run by the first node reached.</summary>
    struct ScaleShiftManySaved : IBackward<ScaleShiftManySaved>
    {
        public ScaleShiftGroup Group;

        public static void Backward(ref ScaleShiftManySaved s, Tensor y)
        {
            if (!s.Group.Done) s.Group.Backward(y.Device);
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
