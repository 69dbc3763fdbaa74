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

    /// <inheritdoc/>
    /// <remarks>One after another: a CPU call costs no launch.</remarks>
    public void AdamStepMany(ReadOnlySpan<AdamTensor> tensors, float lr, float beta1, float beta2, float eps, int t, bool decoupled,
        float* stepValues)
    {
        foreach (var p in tensors)
            if (p.Index != null)
                SparseAdamStep(p.Param, p.Grad, p.M, p.V, p.Index, checked((int)(p.Count / p.PerRow)), p.Columns, p.PerRow, lr, beta1, beta2, eps, p.WeightDecay, t,
                    decoupled, stepValues);
            else AdamStep(p.Param, p.Grad, p.M, p.V, p.Mask, p.Count, lr, beta1, beta2, eps, p.WeightDecay, t, decoupled, stepValues);
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

    /// <summary>Dense Adam: the same operations as <see cref="AdamConstants.Update"/> in the same order, lane by lane
    /// (each one rounds as the scalar one does, so both give the same bits); a zero in the mask keeps the old values.
    /// (Scalar, the √ and the two divisions per element made the step compute-bound at a third of copy bandwidth.)</summary>
    struct AdamBody : IRangeBody, IVectorRange
    {
        public float* P, G, M, V, Mask;
        public AdamConstants Adam;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            for (long i = Simd.Run(ref this, start, end); i < end; i++)
                if (Mask == null || Mask[i] != 0f) Adam.Update(ref P[i], G[i], ref M[i], ref V[i]);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly long Run<TV, W>(long start, long end) where TV : struct where W : ISimd<TV>
        {
            TV beta1 = W.Splat(Adam.Beta1), beta2 = W.Splat(Adam.Beta2), oneMinusBeta1 = W.Splat(1 - Adam.Beta1),
                oneMinusBeta2 = W.Splat(1 - Adam.Beta2), stepSize = W.Splat(Adam.StepSize), bc2Sqrt = W.Splat(Adam.Bc2Sqrt),
                eps = W.Splat(Adam.Eps), wd = W.Splat(Adam.Wd), decay = W.Splat(1f - Adam.Lr * Adam.Wd), zero = W.Splat(0f);
            long i = start;
            for (; i + W.Count <= end; i += W.Count)
            {
                TV p0 = W.Load(P + i), g = W.Load(G + i), m0 = W.Load(M + i), v0 = W.Load(V + i), p = p0;
                if (Adam.Decoupled) p = W.Mul(p, decay);
                else g = W.Add(g, W.Mul(wd, p));
                var m = W.Add(W.Mul(beta1, m0), W.Mul(oneMinusBeta1, g));
                var v = W.Add(W.Mul(beta2, v0), W.Mul(W.Mul(oneMinusBeta2, g), g));
                p = W.Sub(p, W.Div(W.Mul(stepSize, m), W.Add(W.Div(W.Sqrt(v), bc2Sqrt), eps)));
                if (Mask != null)
                {
                    var keep = W.Equals(W.Load(Mask + i), zero);
                    p = W.Select(keep, p0, p);
                    m = W.Select(keep, m0, m);
                    v = W.Select(keep, v0, v);
                }
                W.Store(P + i, p);
                W.Store(M + i, m);
                W.Store(V + i, v);
            }
            return i;
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
