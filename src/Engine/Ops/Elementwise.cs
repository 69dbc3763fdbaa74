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
            ref var n = ref Tape.Push(&AddBackward, y);
            n.In0 = a;
            n.In1 = b;
        }
        return y;
    }

    static void AddBackward(ref Node n)
    {
        var k = n.Out.Device.Kernels;
        float* da = Tape.GradOutputIfNeeded(n.In0, out bool accA);
        if (da != null) k.Copy(da, n.Out.Grad!.Data, n.Out.Count, accA);
        float* db = Tape.GradOutputIfNeeded(n.In1, out bool accB);
        if (db != null) k.Copy(db, n.Out.Grad!.Data, n.Out.Count, accB);
    }

    /// <summary>Exact (erf) GELU. Saves its input.</summary>
    public static Tensor Gelu(Tensor x)
    {
        Check("Gelu", "input", x);
        var y = NewLike(x);
        x.Device.Kernels.GeluForward(y.Data, x.Data, x.Count);
        if (Tape.ShouldRecord(x))
        {
            ref var n = ref Tape.Push(&GeluBackward, y);
            n.In0 = x;
            n.Saved0 = Tape.Save(x);
        }
        return y;
    }

    static void GeluBackward(ref Node n)
    {
        float* dx = Tape.GradOutput(n.In0!, out bool acc);
        n.Out.Device.Kernels.GeluBackward(dx, n.Out.Grad!.Data, n.Saved0!.Data, n.Out.Count, acc);
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
            ref var n = ref Tape.Push(&DropSamplesBackward, y);
            n.In0 = x;
            n.F0 = p;
            n.Seed = seed;
            n.Flag = wholeSamples;
        }
        return y;
    }

    static void DropSamplesBackward(ref Node n)
    {
        float* dx = Tape.GradOutput(n.In0!, out bool acc);
        long perSample = n.Flag ? n.Out.Count / n.Out.Shape[0] : 1;
        n.Out.Device.Kernels.DropPathBackward(dx, n.Out.Grad!.Data, n.Out.Count / perSample, perSample, n.F0, n.Seed, acc);
    }
}
