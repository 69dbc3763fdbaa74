using Engine.Autograd;

namespace Engine;

// Dropout and drop-path (stochastic depth). Kernels: CpuKernels.Dropout.cs, cuda/dropout.cu.
public static unsafe partial class Ops
{
    /// <summary>Dropout with probability <paramref name="p"/> (scaled by 1/(1−p)); the mask is a function of
    /// <paramref name="seed"/> and the element index, recomputed in backward. p = 0 returns a copy-free view.</summary>
    public static Tensor Dropout(Tensor x, float p, ulong seed) => DropSamples("Dropout", x, p, seed, wholeSamples: false);

    /// <summary>Stochastic depth: drops whole samples (dimension 0) with probability <paramref name="p"/> and scales
    /// the kept ones by 1/(1−p), as timm's drop_path.</summary>
    public static Tensor DropPath(Tensor x, float p, ulong seed) => DropSamples("DropPath", x, p, seed, wholeSamples: true);

    /// <summary>A block's residual join after stochastic depth: residual + <see cref="DropPath"/>(x) in one pass, the same
    /// values bit for bit as DropPath then <see cref="Add"/> without the dropped tensor written and read again. The
    /// residual's gradient is dy itself, x's the masked and scaled dy. p = 0 is <see cref="Add"/>.</summary>
    public static Tensor DropPathAdd(Tensor residual, Tensor x, float p, ulong seed)
    {
        Check("DropPathAdd", "residual", residual);
        Check("DropPathAdd", "x", x, device: residual.Device);
        CheckSameShape("DropPathAdd", residual, x);
        if (p is < 0f or >= 1f) throw new ArgumentOutOfRangeException(nameof(p), p, "DropPathAdd: probability must be in [0, 1)");
        if (p == 0f) return Add(residual, x);
        var y = NewLike(residual);
        long perSample = x.Count / x.Shape[0];
        ulong* offset = x.Device.IsCapturing ? x.Device.GraphSeedOffset : null;
        x.Device.Kernels.DropPathAdd(y.Data, residual.Data, x.Data, x.Shape[0], perSample, p, seed, offset);
        if (Tape.ShouldRecord(residual, x))
            Tape.Push(y, new DropPathAddSaved { Residual = residual, X = x, P = p, Seed = seed, Offset = offset });
        return y;
    }

    /// <summary>DropPathAdd's backward state: x's gradient is DropPath's backward of dy (first, as Add's backward takes b's
    /// share first), then the residual takes dy itself.</summary>
    struct DropPathAddSaved : IBackward<DropPathAddSaved>
    {
        public Tensor Residual, X;
        public float P;
        public ulong Seed;
        public ulong* Offset;

        public static void Backward(ref DropPathAddSaved s, Tensor y)
        {
            float* dx = Tape.GradOutputIfNeeded(s.X, out bool acc);
            if (dx != null)
                y.Device.Kernels.DropPathBackward(dx, y.Grad!.Data, y.Shape[0], y.Count / y.Shape[0], s.P, s.Seed, s.Offset, acc);
            if (s.Residual.RequiresGrad) Tape.HandOverGradient(s.Residual, y.Grad!);
        }
    }

    static Tensor DropSamples(string op, Tensor x, float p, ulong seed, bool wholeSamples)
    {
        Check(op, "input", x);
        if (p is < 0f or >= 1f) throw new ArgumentOutOfRangeException(nameof(p), p, $"{op}: probability must be in [0, 1)");
        if (p == 0f) return x.Reshape(x.Shape);
        var y = NewLike(x);
        long perSample = wholeSamples ? x.Count / x.Shape[0] : 1, samples = x.Count / perSample;
        // Captured: the kernels also read the graph's seed offset, which each replay sets, so every step draws new masks.
        ulong* offset = x.Device.IsCapturing ? x.Device.GraphSeedOffset : null;
        x.Device.Kernels.DropPathForward(y.Data, x.Data, samples, perSample, p, seed, offset);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new DropSamplesSaved { X = x, P = p, Seed = seed, Offset = offset, WholeSamples = wholeSamples });
        return y;
    }

    /// <summary>Dropout's and DropPath's backward state: the mask is recomputed from (seed, element or sample).</summary>
    struct DropSamplesSaved : IBackward<DropSamplesSaved>
    {
        public Tensor X;
        public float P;
        public ulong Seed;
        public ulong* Offset;
        public bool WholeSamples;

        public static void Backward(ref DropSamplesSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            long perSample = s.WholeSamples ? y.Count / y.Shape[0] : 1;
            y.Device.Kernels.DropPathBackward(dx, y.Grad!.Data, y.Count / perSample, perSample, s.P, s.Seed, s.Offset, acc);
        }
    }
}
