namespace Engine.Kernels.Cpu;

// Training-only kernels on the CPU: dropout and drop-path (counter-based masks), Adam/AdamW, and the reductions
// a training loop needs (gradient norm, non-finite check).
public sealed unsafe partial class CpuKernels
{
    // ---------------------------------------------------------------- drop-path and dropout (one kernel)

    /// <inheritdoc/>
    public void DropPathForward(float* y, float* x, long samples, long perSample, float p, ulong seed)
    {
        var body = new DropSamplesBody { Y = y, X = x, P = p, Seed = seed, PerSample = perSample };
        CpuRange.For(samples * perSample, ElementGrain, ref body);
    }

    /// <inheritdoc/>
    public void DropPathBackward(float* dx, float* dy, long samples, long perSample, float p, ulong seed, bool accumulate)
    {
        var body = new DropSamplesBody { Y = dx, X = dy, P = p, Seed = seed, PerSample = perSample, Accumulate = accumulate };
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

    // ---------------------------------------------------------------- Adam / AdamW

    /// <inheritdoc/>
    public void AdamStep(float* param, float* grad, float* m, float* v, float* mask, long n, float lr, float beta1, float beta2,
        float eps, float weightDecay, int t, bool decoupled)
    {
        var body = new AdamBody
        {
            P = param, G = grad, M = m, V = v, Mask = mask, Lr = lr, Beta1 = beta1, Beta2 = beta2, Eps = eps, Wd = weightDecay,
            Decoupled = decoupled, Bc1 = 1 - MathF.Pow(beta1, t), Bc2Sqrt = MathF.Sqrt(1 - MathF.Pow(beta2, t)),
        };
        CpuRange.For(n, ElementGrain, ref body);
    }

    /// <summary>torch.optim.Adam/AdamW arithmetic: p −= lr/bc1 · m / (√v/√bc2 + eps).</summary>
    struct AdamBody : IRangeBody
    {
        public float* P, G, M, V, Mask;
        public float Lr, Beta1, Beta2, Eps, Wd, Bc1, Bc2Sqrt;
        public bool Decoupled;
        public void Run(long start, long end)
        {
            float stepSize = Lr / Bc1;
            for (long i = start; i < end; i++)
            {
                if (Mask != null && Mask[i] == 0f) continue;
                float p = P[i], g = G[i];
                if (Decoupled) p *= 1f - Lr * Wd;
                else g += Wd * p;
                float m = Beta1 * M[i] + (1 - Beta1) * g;
                float v = Beta2 * V[i] + (1 - Beta2) * g * g;
                M[i] = m;
                V[i] = v;
                P[i] = p - stepSize * m / (MathF.Sqrt(v) / Bc2Sqrt + Eps);
            }
        }
    }

    // ---------------------------------------------------------------- reductions

    /// <inheritdoc/>
    public double SumSquares(float* x, long n)
    {
        double s = 0;
        for (long i = 0; i < n; i++) s += (double)x[i] * x[i];
        return s;
    }

    /// <inheritdoc/>
    public long CountNonFinite(float* x, long n)
    {
        long count = 0;
        for (long i = 0; i < n; i++) if (!float.IsFinite(x[i])) count++;
        return count;
    }
}
