using System.Runtime.CompilerServices;
namespace Engine.Kernels.Cpu;

// Adam/AdamW on the CPU (cuda/optimizer.cu), dense (with an optional element mask) and on selected entries.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void AdamStep(float* param, float* grad, float* m, float* v, float* mask, long n, float lr, float beta1, float beta2,
        float eps, float weightDecay, int t, bool decoupled, float* stepValues)
    {
        if (stepValues != null && !float.IsFinite(stepValues[3])) return;
        var body = new AdamBody
        {
            P = param, G = grad, M = m, V = v, Mask = mask, Adam = new AdamConstants(lr, beta1, beta2, eps, weightDecay, t, decoupled, stepValues),
        };
        CpuRange.For(n, ElementGrain, ref body);
    }

    /// <summary>The per-step constants of torch.optim.Adam/AdamW (bias corrections in float, as every backend).</summary>
    struct AdamConstants
    {
        public float Lr, Beta1, Beta2, Eps, Wd, StepSize, Bc2Sqrt;
        public bool Decoupled;

        /// <summary>From lr and t, or from [lr, 1 − β₁ᵗ, √(1 − β₂ᵗ)] at <paramref name="stepValues"/> when not null.</summary>
        public AdamConstants(float lr, float beta1, float beta2, float eps, float weightDecay, int t, bool decoupled, float* stepValues)
        {
            Lr = stepValues != null ? stepValues[0] : lr;
            Beta1 = beta1;
            Beta2 = beta2;
            Eps = eps;
            Wd = weightDecay;
            Decoupled = decoupled;
            StepSize = Lr / (stepValues != null ? stepValues[1] : 1 - MathF.Pow(beta1, t));
            Bc2Sqrt = stepValues != null ? stepValues[2] : MathF.Sqrt(1 - MathF.Pow(beta2, t));
        }

        /// <summary>One element: p −= lr/bc1 · m / (√v/√bc2 + eps), with decoupled or L2 weight decay.</summary>
        public readonly void Update(ref float param, float g, ref float m, ref float v)
        {
            float p = param;
            if (Decoupled) p *= 1f - Lr * Wd;
            else g += Wd * p;
            m = Beta1 * m + (1 - Beta1) * g;
            v = Beta2 * v + (1 - Beta2) * g * g;
            param = p - StepSize * m / (MathF.Sqrt(v) / Bc2Sqrt + Eps);
        }
    }

    struct AdamBody : IRangeBody
    {
        public float* P, G, M, V, Mask;
        public AdamConstants Adam;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            for (long i = start; i < end; i++)
                if (Mask == null || Mask[i] != 0f) Adam.Update(ref P[i], G[i], ref M[i], ref V[i]);
        }
    }

    /// <inheritdoc/>
    public void SparseAdamStep(float* param, float* grad, float* m, float* v, int* index, int N, int K, int k, float lr,
        float beta1, float beta2, float eps, float weightDecay, int t, bool decoupled, float* stepValues)
    {
        if (stepValues != null && !float.IsFinite(stepValues[3])) return;
        AssertIndices(index, (long)N * k, K);
        var body = new SparseAdamBody
        {
            P = param, G = grad, M = m, V = v, Index = index, K = K, PerRow = k,
            Adam = new AdamConstants(lr, beta1, beta2, eps, weightDecay, t, decoupled, stepValues),
        };
        CpuRange.For((long)N * k, ElementGrain, ref body);
    }

    /// <summary>Entry i = (o, j) updates param[o·K + index[i]] with grad[i], m[i], v[i].</summary>
    struct SparseAdamBody : IRangeBody
    {
        public float* P, G, M, V;
        public int* Index;
        public int K, PerRow;
        public AdamConstants Adam;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            for (long i = start; i < end; i++)
                Adam.Update(ref P[i / PerRow * K + Index[i]], G[i], ref M[i], ref V[i]);
        }
    }
}
