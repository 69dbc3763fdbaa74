using System.Runtime.CompilerServices;
namespace Engine.Kernels.Cpu;

// Dropout and drop-path on the CPU (cuda/dropout.cu): one kernel with counter-based masks.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void DropPathForward(float* y, float* x, long samples, long perSample, float p, ulong seed, ulong* seedOffset)
    {
        var body = new DropSamplesBody { Y = y, X = x, P = p, Seed = seed ^ (seedOffset == null ? 0 : *seedOffset), PerSample = perSample };
        CpuRange.For(samples * perSample, ElementGrain, ref body);
    }

    /// <inheritdoc/>
    public void DropPathBackward(float* dx, float* dy, long samples, long perSample, float p, ulong seed, ulong* seedOffset, bool accumulate)
    {
        var body = new DropSamplesBody
        {
            Y = dx, X = dy, P = p, Seed = seed ^ (seedOffset == null ? 0 : *seedOffset), PerSample = perSample, Accumulate = accumulate,
        };
        CpuRange.For(samples * perSample, ElementGrain, ref body);
    }

    /// <summary>y[i] = keep(i / PerSample) ? x[i]/(1−p) : 0, keep(j) = uniform(seed, j) ≥ p. The forward and the
    /// backward are the same map (the derivative of a masked scaling is itself).</summary>
    struct DropSamplesBody : IRangeBody
    {
        public float* Y, X;
        public float P;
        public ulong Seed;
        public long PerSample;
        public bool Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            float scale = 1f / (1f - P);
            for (long i = start; i < end; i++)
            {
                float v = CounterRng.Uniform(Seed, (ulong)(i / PerSample)) >= P ? X[i] * scale : 0f;
                Y[i] = Accumulate ? Y[i] + v : v;
            }
        }
    }
}
