using Engine.Kernels;
using Engine.Kernels.Cpu;

namespace Engine.Tests;

/// <summary>The seeded initialisers draw in parallel the values a plain loop over the definition gives, whatever the
/// thread count.</summary>
[TestFixture, NonParallelizable]
public class InitTests
{
    // Normal(0, 1) from draw d of a seed, written out from the definition: Box–Muller on uniforms 0 and 1 of Hash(seed, d).
    static float StandardNormal(ulong seed, ulong d)
    {
        ulong h = CounterRng.Hash(seed, d);
        double u1 = 1.0 - CounterRng.Uniform(h, 0), u2 = CounterRng.Uniform(h, 1);
        return (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }

    // timm's trunc_normal_ as one loop: redraw until the value is inside [low, high].
    static float[] TruncatedNormalLoop(long count, float std, ulong seed, float low, float high)
    {
        var values = new float[count];
        ulong draw = 0;
        for (long i = 0; i < count; i++)
        {
            float v;
            do v = std * StandardNormal(seed, draw++); while (v < low || v > high);
            values[i] = v;
        }
        return values;
    }

    [TestCase(0.02f, -2f, 2f)]   // timm's weights: no draw can leave ±2, so the values are drawn in parallel
    [TestCase(1f, -1.5f, 1.5f)]  // bounds that bind: about 13% of draws are redrawn, in order
    public void TruncatedNormalIsTheRedrawingLoopAtAnyThreadCount(float std, float low, float high)
    {
        const int Count = 200_003; // four chunks of 65,536 values, the last one short
        var expected = TruncatedNormalLoop(Count, std, 7, low, high);
        int threads = CpuParallel.Threads;
        try
        {
            foreach (int t in new[] { 1, Environment.ProcessorCount })
            {
                CpuParallel.Threads = t;
                using var x = Tensor.Zeros(Device.Cpu, Count);
                Init.TruncatedNormal(x, std, 7, low, high);
                Assert.That(x.ToArray(), Is.EqualTo(expected), $"{t} threads");
            }
        }
        finally
        {
            CpuParallel.Threads = threads;
        }
        Assert.That(expected.Max(), Is.LessThanOrEqualTo(high));
        Assert.That(expected.Min(), Is.GreaterThanOrEqualTo(low));
    }

    [Test]
    public void NormalAndUniformDrawElementIFromTheSeedAndI()
    {
        const int Count = 150_001;
        var normal = Init.NormalValues(Count, 0.5f, 2f, 11);
        using var uniform = Tensor.Zeros(Device.Cpu, Count);
        Init.Uniform(uniform, -3f, 1f, 13);
        var u = uniform.ToArray();
        foreach (int i in new[] { 0, 1, 65_535, 65_536, 100_000, Count - 1 })
        {
            Assert.That(normal[i], Is.EqualTo(0.5f + 2f * BoxMullerOfCounter(11, i)), $"normal {i}");
            Assert.That(u[i], Is.EqualTo(-3f + 4f * CounterRng.Uniform(13, (ulong)i)), $"uniform {i}");
        }
    }

    // NormalValues' element i: Box–Muller on uniforms 2i and 2i + 1 of the seed itself.
    static float BoxMullerOfCounter(ulong seed, long i)
    {
        double u1 = 1.0 - CounterRng.Uniform(seed, 2 * (ulong)i), u2 = CounterRng.Uniform(seed, 2 * (ulong)i + 1);
        return (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }
}
