using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Cpu;

// Activations on the CPU (cuda/activations.cu): exact (erf) GELU, ReLU.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void GeluForward(float* y, ushort* yPacked, GemmOperand x, long n)
    {
        x.CheckFor(GemmPrecision, "GeluForward");
        GemmPrecision.PackedOutputFormat(y, yPacked, false, "GeluForward");
        if (!x.IsPacked && yPacked == null)
        {
            var body = new GeluBody { Y = y, X = x.Floats };
            CpuRange.For(n, ElementGrain, ref body);
            return;
        }
        var runs = new GeluRunsBody { Y = y, YPacked = yPacked, X = x, Precision = GemmPrecision };
        CpuRange.For(n, ElementGrain, ref runs);
    }

    /// <inheritdoc/>
    /// <remarks>A 16-bit copy of dx is packed in a second pass; without dx, runs of it are packed as they are made.</remarks>
    public void GeluBackward(float* dx, ushort* dxCopy, float* dy, GemmOperand x, long n, bool accumulate)
    {
        x.CheckFor(GemmPrecision, "GeluBackward");
        var copy = (Precision)GemmPrecision.OutputOrCopyFormat(dx, dxCopy, accumulate, "GeluBackward");
        if (dx == null)
        {
            var alone = new GeluRunsBody { YPacked = dxCopy, Dy = dy, X = x, Precision = GemmPrecision, Backward = true };
            CpuRange.For(n, ElementGrain, ref alone);
            return;
        }
        if (x.IsPacked)
        {
            var packed = new GeluRunsBody { Y = dx, Dy = dy, X = x, Precision = GemmPrecision, Backward = true, Accumulate = accumulate };
            CpuRange.For(n, ElementGrain, ref packed);
        }
        else
        {
            var body = new GeluBody { Y = dx, Dy = dy, X = x.Floats, Backward = true, Accumulate = accumulate };
            CpuRange.For(n, ElementGrain, ref body);
        }
        if (dxCopy != null) PackLowPrecision(dxCopy, dx, n, copy);
    }

    /// <inheritdoc/>
    /// <remarks>GELU's backward into a float32 scratch, then its 16-bit copy and BiasGrad over it (the CPU's Linear reads
    /// float32, so no model calls this here).</remarks>
    public void BiasGeluBackward(ushort* dhPacked, float* dbias, float* dy, GemmOperand h, int rows, int cols)
    {
        long n = (long)rows * cols;
        using var dh = new NativeBuffer(n * sizeof(float));
        GeluBackward((float*)dh.Pointer, dhPacked, dy, h, n, false);
        BiasGrad(dbias, (float*)dh.Pointer, rows, cols);
    }

    /// <summary>GELU's forward or backward (<see cref="GeluBody"/>) where x or the forward's y is 16-bit: each run of up
    /// to 512 values widened on the stack, the float32 body on it, and packed again for a 16-bit y (the same values, so
    /// the same bits as through widened copies).</summary>
    struct GeluRunsBody : IRangeBody
    {
        public float* Y, Dy;
        public ushort* YPacked;
        public GemmOperand X;
        public Precision Precision;
        public bool Backward, Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            const int Run = 512;
            float* wide = stackalloc float[Run];
            for (long i = start; i < end; i += Run)
            {
                int n = (int)Math.Min(Run, end - i);
                float* x = wide, y = YPacked != null ? wide : Y + i;
                if (X.IsPacked) UnpackRow(wide, X.Halves + i, n, Precision);
                else x = X.Floats + i;
                new GeluBody { Y = y, Dy = Backward ? Dy + i : null, X = x, Backward = Backward, Accumulate = Accumulate }.Run(0, n);
                if (YPacked != null) PackRow(YPacked + i, y, n, Precision);
            }
        }
    }

    /// <summary>y[i] = GELU(x[i]) for i in [0, n) on the calling thread (a GEMM epilogue's tile row).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void GeluRow(float* y, float* x, int n)
    {
        var body = new GeluBody { Y = y, X = x };
        body.Run(0, n);
    }

    struct GeluBody : IRangeBody, IVectorRange
    {
        public float* Y, X, Dy;
        public bool Backward, Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            for (long i = Simd.Run(ref this, start, end); i < end; i++)
            {
                float x = X[i];
                if (!Backward) Y[i] = x * Simd.NormalCdf(x);
                else
                {
                    float v = Dy[i] * GeluSlope(x);
                    Y[i] = Accumulate ? Y[i] + v : v;
                }
            }
        }

        /// <summary>The whole vectors of [start, end) at width W; returns where the scalar tail begins.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly long Run<TV, W>(long start, long end) where TV : struct where W : ISimd<TV>
        {
            long i = start;
            for (; i + W.Count <= end; i += W.Count)
            {
                var x = W.Load(X + i);
                if (!Backward)
                {
                    W.Store(Y + i, W.Mul(x, Simd.NormalCdf<TV, W>(x))); // x·Φ(x), Φ(x) = (1 + erf(x/√2)) / 2
                    continue;
                }
                var v = W.Mul(W.Load(Dy + i), GeluSlope<TV, W>(x));
                W.Store(Y + i, Accumulate ? W.Add(v, W.Load(Y + i)) : v);
            }
            return i;
        }
    }

    /// <summary>GELU's slope Φ(x) + x·φ(x) (GeluBackward's, and SSF+GELU's in ScaleShiftGeluBackward) for a scalar tail:
    /// one lane of the vector code, so an element gets the same bits wherever a row or a chunk cuts the vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float GeluSlope(float x) => GeluSlope<Vector128<float>, W128>(Vector128.Create(x)).ToScalar();

    /// <summary><see cref="GeluSlope(float)"/> at width W.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TV GeluSlope<TV, W>(TV x) where TV : struct where W : ISimd<TV>
    {
        var pdf = W.Mul(W.Splat(0.39894228040143268f), Simd.Exp<TV, W>(W.Mul(W.Splat(-0.5f), W.Mul(x, x)))); // φ(x)
        return W.Fma(x, pdf, Simd.NormalCdf<TV, W>(x));
    }

    /// <inheritdoc/>
    public void ReluForward(float* y, float* x, long n)
    {
        var body = new ReluBody { Y = y, X = x };
        CpuRange.For(n, ElementGrain, ref body);
    }

    /// <inheritdoc/>
    public void ReluBackward(float* dx, float* dy, float* x, long n, bool accumulate)
    {
        var body = new ReluBody { Y = dx, Dy = dy, X = x, Backward = true, Accumulate = accumulate };
        CpuRange.For(n, ElementGrain, ref body);
    }

    /// <summary>Forward y = max(x, 0); backward y (+)= dy where x &gt; 0.</summary>
    struct ReluBody : IRangeBody
    {
        public float* Y, X, Dy;
        public bool Backward, Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            long i = start;
            for (; i + Vector<float>.Count <= end; i += Vector<float>.Count)
            {
                var x = Vec.Load(X + i);
                if (!Backward)
                {
                    Vec.Store(Y + i, Vector.Max(x, Vector<float>.Zero));
                    continue;
                }
                var v = Vector.ConditionalSelect(Vector.GreaterThan(x, Vector<float>.Zero), Vec.Load(Dy + i), Vector<float>.Zero);
                Vec.Store(Y + i, Accumulate ? Vec.Load(Y + i) + v : v);
            }
            for (; i < end; i++)
            {
                if (!Backward) Y[i] = X[i] > 0f ? X[i] : 0f;
                else
                {
                    float v = X[i] > 0f ? Dy[i] : 0f;
                    Y[i] = Accumulate ? Y[i] + v : v;
                }
            }
        }
    }
}
