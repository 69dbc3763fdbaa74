using Engine.Kernels;
using Engine.Kernels.Cpu;

namespace Engine;

/// <summary>Seeded parameter initialisers. Values come from <see cref="CounterRng"/>, so a seed gives the same
/// numbers on every machine and .NET version.</summary>
public static class Init
{
    /// <summary>Normal(mean, std) values, element i from (seed, i).</summary>
    public static float[] NormalValues(long count, float mean, float std, ulong seed)
    {
        var values = new float[count];
        ForChunks(count, (start, end) =>
        {
            for (long i = start; i < end; i++) values[i] = mean + std * StandardNormal(seed, (ulong)i);
        });
        return values;
    }

    // The largest |StandardNormal|: u1 is at least 2⁻²⁴ (24-bit uniforms), so √(−2 ln 2⁻²⁴) ≈ 5.77.
    static readonly double MaxStandardNormal = Math.Sqrt(-2 * Math.Log(1.0 / (1 << 24)));

    // body(start, end) over chunks of [0, count), on the kernels' CPU threads: a ViT-B/16 draws 86 M values (seconds
    // on one thread). Element i depends on i alone, so the values are the same whatever the split.
    static void ForChunks(long count, Action<long, long> body)
    {
        const long Chunk = 1 << 16;
        long chunks = (count + Chunk - 1) / Chunk;
        if (chunks <= 1 || CpuParallel.Threads == 1)
        {
            body(0, count);
            return;
        }
        Parallel.For(0L, chunks, new ParallelOptions { MaxDegreeOfParallelism = CpuParallel.Threads },
            c => body(c * Chunk, Math.Min(count, (c + 1) * Chunk)));
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
        if (std * MaxStandardNormal * 1.001 < Math.Min(-low, high))
        {
            // No draw can fall outside the bounds (timm's ±2 at std 0.02 is 100 std), so value i is draw i: the same
            // values as the redrawing loop below gives, drawn in parallel.
            ForChunks(values.Length, (start, end) =>
            {
                for (long i = start; i < end; i++) values[i] = std * StandardNormal(CounterRng.Hash(seed, (ulong)i), 0);
            });
        }
        else
        {
            ulong draw = 0;
            for (long i = 0; i < values.Length; i++)
            {
                float v;
                do v = std * StandardNormal(CounterRng.Hash(seed, draw++), 0); while (v < low || v > high);
                values[i] = v;
            }
        }
        t.CopyFrom(values);
    }

    /// <summary>Fills <paramref name="t"/> with Uniform(low, high).</summary>
    public static void Uniform(Tensor t, float low, float high, ulong seed)
    {
        var values = new float[t.Count];
        ForChunks(values.Length, (start, end) =>
        {
            for (long i = start; i < end; i++) values[i] = low + (high - low) * CounterRng.Uniform(seed, (ulong)i);
        });
        t.CopyFrom(values);
    }

    /// <summary>Fills <paramref name="t"/> with a constant.</summary>
    public static unsafe void Constant(Tensor t, float value)
    {
        t.CheckNotFrozen("fill");
        t.Device.Kernels.Fill(t.Data, t.Count, value);
    }
}
