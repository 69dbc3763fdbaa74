using Engine.Kernels;

namespace Engine;

/// <summary>Seeded parameter initialisers. Values come from <see cref="CounterRng"/>, so a seed gives the same
/// numbers on every machine and .NET version.</summary>
public static class Init
{
    /// <summary>Normal(mean, std) values, element i from (seed, i).</summary>
    public static float[] NormalValues(long count, float mean, float std, ulong seed)
    {
        var values = new float[count];
        for (long i = 0; i < count; i++) values[i] = mean + std * StandardNormal(seed, (ulong)i);
        return values;
    }

    /// <summary>The i-th Normal(0, 1) value of a seed: Box–Muller on two independent uniforms, u1 in (0, 1].</summary>
    static float StandardNormal(ulong seed, ulong i)
    {
        double u1 = 1.0 - CounterRng.Uniform(seed, 2 * i), u2 = CounterRng.Uniform(seed, 2 * i + 1);
        return (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }

    /// <summary>Fills <paramref name="t"/> with Normal(mean, std).</summary>
    public static void Normal(Tensor t, float std, ulong seed, float mean = 0f) => t.CopyFrom(NormalValues(t.Count, mean, std, seed));

    /// <summary>Fills <paramref name="t"/> with Normal(0, std), redrawing values outside the absolute bounds
    /// [low, high] (timm's trunc_normal_, whose default bounds are ±2 in absolute units, not in std).</summary>
    public static void TruncatedNormal(Tensor t, float std, ulong seed, float low = -2f, float high = 2f)
    {
        var values = new float[t.Count];
        ulong draw = 0;
        for (long i = 0; i < values.Length; i++)
        {
            float v;
            do v = std * StandardNormal(CounterRng.Hash(seed, draw++), 0); while (v < low || v > high);
            values[i] = v;
        }
        t.CopyFrom(values);
    }

    /// <summary>Fills <paramref name="t"/> with Uniform(low, high).</summary>
    public static void Uniform(Tensor t, float low, float high, ulong seed)
    {
        var values = new float[t.Count];
        for (long i = 0; i < values.Length; i++) values[i] = low + (high - low) * CounterRng.Uniform(seed, (ulong)i);
        t.CopyFrom(values);
    }

    /// <summary>Fills <paramref name="t"/> with a constant.</summary>
    public static unsafe void Constant(Tensor t, float value)
    {
        t.CheckNotFrozen("fill");
        t.Device.Kernels.Fill(t.Data, t.Count, value);
    }
}
