using System.Runtime.CompilerServices;
using System.Numerics;

namespace Engine.Kernels.Cpu;

// Activations on the CPU (cuda/activations.cu): exact (erf) GELU.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void GeluForward(float* y, float* x, long n)
    {
        var body = new GeluBody { Y = y, X = x };
        CpuRange.For(n, ElementGrain, ref body);
    }

    /// <inheritdoc/>
    public void GeluBackward(float* dx, float* dy, float* x, long n, bool accumulate)
    {
        var body = new GeluBody { Y = dx, Dy = dy, X = x, Backward = true, Accumulate = accumulate };
        CpuRange.For(n, ElementGrain, ref body);
    }

    struct GeluBody : IRangeBody
    {
        public float* Y, X, Dy;
        public bool Backward, Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            long i = start;
            var half = new Vector<float>(0.5f);
            var invSqrt2 = new Vector<float>(0.70710678118654752f);
            var invSqrt2Pi = new Vector<float>(0.39894228040143268f);
            for (; i + Vector<float>.Count <= end; i += Vector<float>.Count)
            {
                var x = Vec.Load(X + i);
                var cdf = Vec.Fma(half, Erf(x * invSqrt2), half);
                Vector<float> v;
                if (!Backward) v = x * cdf;
                else
                {
                    var pdf = invSqrt2Pi * Vec.Exp(-half * x * x);
                    v = Vec.Load(Dy + i) * (cdf + x * pdf);
                    if (Accumulate) v += Vec.Load(Y + i);
                }
                Vec.Store(Y + i, v);
            }
            for (; i < end; i++)
            {
                float x = X[i], cdf = 0.5f * (1f + Erf(x * 0.70710678118654752f));
                if (!Backward) Y[i] = x * cdf;
                else
                {
                    float v = Dy[i] * (cdf + x * 0.39894228040143268f * MathF.Exp(-0.5f * x * x));
                    Y[i] = Accumulate ? Y[i] + v : v;
                }
            }
        }
    }

    /// <summary>erf with |error| ≤ 1.5e-7 (Abramowitz and Stegun 7.1.26), odd-symmetric.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector<float> Erf(Vector<float> x)
    {
        var ax = Vector.Abs(x);
        var t = Vector<float>.One / Vec.Fma(new Vector<float>(0.3275911f), ax, Vector<float>.One);
        var poly = new Vector<float>(1.061405429f);
        poly = Vec.Fma(poly, t, new Vector<float>(-1.453152027f));
        poly = Vec.Fma(poly, t, new Vector<float>(1.421413741f));
        poly = Vec.Fma(poly, t, new Vector<float>(-0.284496736f));
        poly = Vec.Fma(poly, t, new Vector<float>(0.254829592f));
        var r = Vec.Fma(-poly * t, Vec.Exp(-ax * ax), Vector<float>.One);
        return Vector.ConditionalSelect(Vector.LessThan(x, Vector<float>.Zero), -r, r);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Erf(float x)
    {
        float ax = MathF.Abs(x), t = 1f / (1f + 0.3275911f * ax);
        float poly = (((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f;
        float r = 1f - poly * t * MathF.Exp(-ax * ax);
        return x < 0 ? -r : r;
    }
}
