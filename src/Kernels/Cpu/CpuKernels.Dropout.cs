using System.Numerics;
using System.Runtime.CompilerServices;
namespace Engine.Kernels.Cpu;

// Dropout and drop-path on the CPU (cuda/dropout.cu): one kernel with counter-based masks.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void DropPathForward(float* y, float* x, long samples, long perSample, float p, ulong seed, ulong* seedOffset) =>
        DropSamples(y, x, null, samples, perSample, p, seed, seedOffset, false);

    /// <inheritdoc/>
    public void DropPathAdd(float* y, float* residual, float* x, long samples, long perSample, float p, ulong seed, ulong* seedOffset) =>
        DropSamples(y, x, residual, samples, perSample, p, seed, seedOffset, false);

    /// <inheritdoc/>
    public void DropPathBackward(float* dx, float* dy, long samples, long perSample, float p, ulong seed, ulong* seedOffset, bool accumulate) =>
        DropSamples(dx, dy, null, samples, perSample, p, seed, seedOffset, accumulate);

    void DropSamples(float* y, float* x, float* residual, long samples, long perSample, float p, ulong seed, ulong* seedOffset, bool accumulate)
    {
        var body = new DropSamplesBody
        {
            Y = y, X = x, R = residual, P = p, Seed = seed ^ (seedOffset == null ? 0 : *seedOffset), PerSample = perSample, Accumulate = accumulate,
        };
        CpuRange.For(samples * perSample, ElementGrain, ref body);
    }

    /// <summary>y[i] = keep(i / PerSample) ? x[i]/(1−p) : 0, keep(j) = uniform(seed, j) ≥ p, plus R[i] when R is set
    /// (DropPathAdd) and plus y[i] when Accumulate. The forward and the backward are the same map (the derivative of a
    /// masked scaling is itself). Drop path's ranges are walked a sample's stretch at a time: one draw and one
    /// division per stretch, not per value.</summary>
    struct DropSamplesBody : IRangeBody
    {
        public float* Y, X, R;
        public float P;
        public ulong Seed;
        public long PerSample;
        public bool Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            float scale = 1f / (1f - P);
            if (PerSample == 1) // element dropout: a draw per value
            {
                for (long i = start; i < end; i++)
                {
                    float v = CounterRng.Uniform(Seed, (ulong)i) >= P ? X[i] * scale : 0f;
                    if (R != null) v = R[i] + v;
                    Y[i] = Accumulate ? Y[i] + v : v;
                }
                return;
            }
            for (long i = start; i < end;)
            {
                long sample = i / PerSample, stop = Math.Min(end, (sample + 1) * PerSample);
                if (CounterRng.Uniform(Seed, (ulong)sample) >= P) Stretch(i, stop, true, scale);
                else Stretch(i, stop, false, scale);
                i = stop;
            }
        }

        /// <summary>Values [i, stop) of one sample: x·scale when kept, else 0 (not x·0: x may be infinite).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        readonly void Stretch(long i, long stop, bool keep, float scale)
        {
            var scales = new Vector<float>(scale);
            for (; i + Vector<float>.Count <= stop; i += Vector<float>.Count)
            {
                var v = keep ? Vec.Load(X + i) * scales : Vector<float>.Zero;
                if (R != null) v = Vec.Load(R + i) + v;
                if (Accumulate) v = Vec.Load(Y + i) + v;
                Vec.Store(Y + i, v);
            }
            for (; i < stop; i++)
            {
                float v = keep ? X[i] * scale : 0f;
                if (R != null) v = R[i] + v;
                Y[i] = Accumulate ? Y[i] + v : v;
            }
        }
    }
}
