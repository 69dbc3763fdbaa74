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
