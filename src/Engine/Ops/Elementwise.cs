using Engine.Autograd;

namespace Engine;

// Residual add, GELU, dropout and drop-path.
public static unsafe partial class Ops
{
    /// <summary>Residual add y = a + b (same shape). Both inputs receive the output gradient.</summary>
    public static Tensor Add(Tensor a, Tensor b)
    {
        Check("Add", "a", a);
        Check("Add", "b", b, device: a.Device);
        CheckSameShape("Add", a, b);
        var y = NewLike(a);
        a.Device.Kernels.Add(y.Data, a.Data, b.Data, a.Count);
        if (Tape.ShouldRecord(a, b))
        {
            ref var n = ref Tape.Push<AddSaved>(y);
            n.A = a;
            n.B = b;
        }
        return y;
    }

    /// <summary>Add's backward state: both inputs receive the output gradient.</summary>
    struct AddSaved : IBackward<AddSaved>
    {
        public Tensor A, B;

        public readonly void Release() { }

        public static void Backward(ref AddSaved s, Tensor y)
        {
            var k = y.Device.Kernels;
            float* da = Tape.GradOutputIfNeeded(s.A, out bool accA);
            if (da != null) k.Copy(da, y.Grad!.Data, y.Count, accA);
            float* db = Tape.GradOutputIfNeeded(s.B, out bool accB);
            if (db != null) k.Copy(db, y.Grad!.Data, y.Count, accB);
        }
    }

    /// <summary>Exact (erf) GELU. Saves its input.</summary>
    public static Tensor Gelu(Tensor x)
    {
        Check("Gelu", "input", x);
        var y = NewLike(x);
        x.Device.Kernels.GeluForward(y.Data, x.Data, x.Count);
        if (Tape.ShouldRecord(x))
        {
            ref var n = ref Tape.Push<GeluSaved>(y);
            n.X = x;
            n.XKept = Tape.Save(x);
        }
        return y;
    }

    /// <summary>GELU's backward state: its input, kept.</summary>
    struct GeluSaved : IBackward<GeluSaved>
    {
        public Tensor X, XKept;

        public readonly void Release() => XKept?.Dispose();

        public static void Backward(ref GeluSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            y.Device.Kernels.GeluBackward(dx, y.Grad!.Data, s.XKept.Data, y.Count, acc);
        }
    }

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
        x.Device.Kernels.DropPathForward(y.Data, x.Data, samples, perSample, p, seed);
        if (Tape.ShouldRecord(x))
        {
            ref var n = ref Tape.Push<DropSamplesSaved>(y);
            n.X = x;
            n.P = p;
            n.Seed = seed;
            n.WholeSamples = wholeSamples;
        }
        return y;
    }

    /// <summary>Dropout's and DropPath's backward state: the mask is recomputed from (seed, element or sample).</summary>
    struct DropSamplesSaved : IBackward<DropSamplesSaved>
    {
        public Tensor X;
        public float P;
        public ulong Seed;
        public bool WholeSamples;

        public readonly void Release() { }

        public static void Backward(ref DropSamplesSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            long perSample = s.WholeSamples ? y.Count / y.Shape[0] : 1;
            y.Device.Kernels.DropPathBackward(dx, y.Grad!.Data, y.Count / perSample, perSample, s.P, s.Seed, acc);
        }
    }
}
