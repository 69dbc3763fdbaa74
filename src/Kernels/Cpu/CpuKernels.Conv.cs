using System.Runtime.CompilerServices;
using System.Numerics;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Cpu;

// Depthwise convolution on the CPU (cuda/conv.cu), channels-last: forward, input gradient (the same correlation
// with the flipped kernel) and parameter gradients.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void DepthwiseConvForward(float* y, float* x, float* w, float* bias, int N, int H, int W, int C, int k, int pad)
    {
        int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
        var body = new DepthwiseBody
        {
            Y = y, X = ZeroPadded(x, N, H, W, C, pad), Wt = TapMajor(w, C, k, flip: false), Bias = bias,
            InH = H + 2 * pad, InW = W + 2 * pad, OutH = Ho, OutW = Wo, C = C, K = k,
        };
        CpuParallel.For(N * Ho, ref body);
    }

    /// <summary>Weights [C,k,k] transposed to [k·k, C] so that each tap is a contiguous channel vector; with
    /// <paramref name="flip"/> the taps are in reverse order (the kernel rotated by 180°). Rows are
    /// <see cref="Stride"/>(C) apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float* TapMajor(float* w, int C, int k, bool flip)
    {
        int taps = k * k;
        long stride = Stride(C);
        float* wt = (float*)ThreadScratch.Get(3, taps * stride * sizeof(float));
        for (int c = 0; c < C; c++)
            for (int t = 0; t < taps; t++) wt[(flip ? taps - 1 - t : t) * stride + c] = w[(long)c * taps + t];
        return wt;
    }

    /// <summary>The distance between the channel vectors of neighbouring pixels (or taps) in the copies the depthwise
    /// kernels read: C plus one cache line, so that the k·k·4 vectors one output tile reads do not all fall into the same
    /// L1 set when C·4 bytes is a multiple of 4 KiB (C = 1024 thrashed the cache 8-fold).</summary>
    static int Stride(int C) => C + 16;

    /// <summary>x [N,H,W,C] copied into [N, H+2·pad, W+2·pad, Stride(C)] with a zero border, so that every tap of
    /// every output reads inside the image and the inner loops carry no bounds.</summary>
    static float* ZeroPadded(float* x, int N, int H, int W, int C, int pad)
    {
        int Hp = H + 2 * pad, Wp = W + 2 * pad;
        float* xp = (float*)ThreadScratch.Get(4, (long)N * Hp * Wp * Stride(C) * sizeof(float));
        var body = new ZeroPadBody { Src = x, Dst = xp, H = H, W = W, C = C, Pad = pad };
        CpuParallel.For(N * Hp, ref body);
        return xp;
    }

    struct ZeroPadBody : IParallelBody
    {
        public float* Src, Dst;
        public int H, W, C, Pad;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int row)
        {
            int Hp = H + 2 * Pad, Wp = W + 2 * Pad, n = row / Hp, iy = row % Hp - Pad, P = Stride(C);
            float* dst = Dst + (long)row * Wp * P;
            if (iy < 0 || iy >= H) { new Span<float>(dst, Wp * P).Clear(); return; }
            new Span<float>(dst, Pad * P).Clear();
            float* src = Src + ((long)n * H + iy) * W * C;
            for (int ix = 0; ix < W; ix++)
            {
                float* d = dst + (long)(Pad + ix) * P;
                Buffer.MemoryCopy(src + (long)ix * C, d, C * 4L, C * 4L);
                new Span<float>(d + C, P - C).Clear();
            }
            new Span<float>(dst + (long)(Pad + W) * P, Pad * P).Clear();
        }
    }

    /// <summary>
    /// One output row (n, oy) of a valid depthwise correlation over a zero-padded input, channels-last:
    /// y[n,oy,ox,:] (+)= bias + Σ_{ky,kx} wt[ky·K+kx,:] ⊙ x[n, oy+ky, ox+kx, :], x and wt with rows Stride(C) apart.
    /// Per vector of channels, four neighbouring outputs share each weight load and accumulate over all taps in
    /// registers. The forward and the input gradient (the flipped kernel over the padded dy) both run it.
    /// </summary>
    struct DepthwiseBody : IParallelBody
    {
        public float* Y, X, Wt, Bias;
        public int InH, InW, OutH, OutW, C, K;
        public bool Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int row)
        {
            int n = row / OutH, oy = row % OutH;
            long pixel = Stride(C), line = InW * pixel, outPixel = C;
            float* yRow = Y + ((long)n * OutH + oy) * OutW * C;
            float* xRow = X + ((long)n * InH + oy) * line; // x at (oy, 0): the first tap row of this output row
            int c = Simd.Width switch
            {
                SimdWidth.W512 => Vectors<Vector512<float>, W512>(yRow, xRow),
                SimdWidth.W256 => Vectors<Vector256<float>, W256>(yRow, xRow),
                _ => Vectors<Vector128<float>, W128>(yRow, xRow),
            };
            for (; c < C; c++)
                for (int ox = 0; ox < OutW; ox++)
                {
                    float* y = yRow + ox * outPixel + c;
                    float acc = Bias != null ? Bias[c] : 0f;
                    for (int ky = 0; ky < K; ky++)
                        for (int kx = 0; kx < K; kx++)
                            acc += Wt[(ky * K + kx) * pixel + c] * xRow[ky * line + (ox + kx) * pixel + c];
                    *y = Accumulate ? *y + acc : acc;
                }
        }
        /// <summary>The whole channel vectors of one output row at width W; returns the first channel of the scalar tail.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        readonly int Vectors<TV, W>(float* yRow, float* xRow) where TV : struct where W : ISimd<TV>
        {
            long pixel = Stride(C), line = InW * pixel, outPixel = C;
            int c = 0;
            for (; c + W.Count <= C; c += W.Count)
            {
                var init = Bias != null ? W.Load(Bias + c) : W.Splat(0f);
                int ox = 0;
                for (; ox + 4 <= OutW; ox += 4)
                {
                    float* y = yRow + ox * outPixel + c;
                    var a0 = init; var a1 = init; var a2 = init; var a3 = init;
                    for (int ky = 0; ky < K; ky++)
                    {
                        float* xp = xRow + ky * line + ox * pixel + c, wp = Wt + ky * K * pixel + c;
                        for (int kx = 0; kx < K; kx++, xp += pixel, wp += pixel)
                        {
                            var w = W.Load(wp);
                            a0 = W.Fma(w, W.Load(xp), a0);
                            a1 = W.Fma(w, W.Load(xp + pixel), a1);
                            a2 = W.Fma(w, W.Load(xp + 2 * pixel), a2);
                            a3 = W.Fma(w, W.Load(xp + 3 * pixel), a3);
                        }
                    }
                    if (Accumulate)
                    {
                        a0 = W.Add(a0, W.Load(y));
                        a1 = W.Add(a1, W.Load(y + outPixel));
                        a2 = W.Add(a2, W.Load(y + 2 * outPixel));
                        a3 = W.Add(a3, W.Load(y + 3 * outPixel));
                    }
                    W.Store(y, a0); W.Store(y + outPixel, a1); W.Store(y + 2 * outPixel, a2); W.Store(y + 3 * outPixel, a3);
                }
                for (; ox < OutW; ox++)
                {
                    float* y = yRow + ox * outPixel + c;
                    var acc = init;
                    for (int ky = 0; ky < K; ky++)
                    {
                        float* xp = xRow + ky * line + ox * pixel + c, wp = Wt + ky * K * pixel + c;
                        for (int kx = 0; kx < K; kx++, xp += pixel, wp += pixel) acc = W.Fma(W.Load(wp), W.Load(xp), acc);
                    }
                    W.Store(y, Accumulate ? W.Add(acc, W.Load(y)) : acc);
                }
            }
            return c;
        }
    }

    /// <inheritdoc/>
    public void DepthwiseConvBackward(float* dx, float* dw, float* dbias, float* dy, float* x, float* w,
        int N, int H, int W, int C, int k, int pad, bool accumulate)
    {
        int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
        if (dx != null)
        {
            // dx[n,iy,ix,:] = Σ_taps w[:,ky,kx] ⊙ dy[n, iy−ky+pad, ix−kx+pad, :]: the forward's correlation over dy
            // with the flipped kernel and padding k−1−pad, which maps the Ho×Wo grid back onto H×W.
            int flippedPad = k - 1 - pad;
            var body = new DepthwiseBody
            {
                Y = dx, X = ZeroPadded(dy, N, Ho, Wo, C, flippedPad), Wt = TapMajor(w, C, k, flip: true),
                InH = Ho + 2 * flippedPad, InW = Wo + 2 * flippedPad, OutH = H, OutW = W, C = C, K = k, Accumulate = accumulate,
            };
            CpuParallel.For(N * H, ref body);
        }
        if (dw == null && dbias == null) return;
        int rows = N * Ho, grain = ReductionGrain(rows), chunks = CpuRange.Chunks(rows, grain);
        long width = (long)(k * k + 1) * C; // partial rows: [tap-major dw | dbias]
        var wbody = new DepthwiseWeightGradBody
        {
            Dy = dy, X = x, H = H, W = W, C = C, K = k, Pad = pad, Ho = Ho, Wo = Wo, Rows = rows, Grain = grain,
            Partials = Partials(chunks, width),
        };
        CpuParallel.For(chunks, ref wbody);
        for (int t = 0; t <= k * k; t++)
            for (int c = 0; c < C; c++)
            {
                float s = 0f;
                for (int ch = 0; ch < chunks; ch++) s += wbody.Partials[ch * width + (long)t * C + c];
                if (t < k * k) { if (dw != null) dw[(long)c * k * k + t] += s; }
                else if (dbias != null) dbias[c] += s;
            }
    }

    /// <summary>One chunk of output rows: partial sums of dy ⊙ x per tap (tap-major [k·k, C]) and of dy (the bias).</summary>
    struct DepthwiseWeightGradBody : IParallelBody
    {
        public float* Dy, X, Partials;
        public int H, W, C, K, Pad, Ho, Wo, Rows, Grain;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int chunk)
        {
            long width = (long)(K * K + 1) * C;
            float* acc = Partials + chunk * width, db = acc + (long)K * K * C;
            new Span<float>(acc, (int)width).Clear();
            int end = Math.Min(Rows, (chunk + 1) * Grain);
            for (int row = chunk * Grain; row < end; row++)
            {
                int n = row / Ho, oy = row % Ho;
                int ky0 = Math.Max(0, Pad - oy), ky1 = Math.Min(K, H + Pad - oy);
                for (int ox = 0; ox < Wo; ox++)
                {
                    float* dy = Dy + (((long)n * Ho + oy) * Wo + ox) * C;
                    AddProduct(db, dy, null, C);
                    if (X == null) continue; // only the bias trains (BitFit): x was not kept
                    int kx0 = Math.Max(0, Pad - ox), kx1 = Math.Min(K, W + Pad - ox);
                    float* origin = X + (((long)n * H + oy - Pad) * W + ox - Pad) * C;
                    for (int ky = ky0; ky < ky1; ky++)
                        for (int kx = kx0; kx < kx1; kx++)
                            AddProduct(acc + (long)(ky * K + kx) * C, dy, origin + ((long)ky * W + kx) * C, C);
                }
            }
        }
    }

    /// <summary>a[i] += u[i]·v[i] for i &lt; n (a[i] += u[i] when v is null), vectorised.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void AddProduct(float* a, float* u, float* v, int n)
    {
        int i = 0, V = Vector<float>.Count;
        if (v == null)
        {
            for (; i + V <= n; i += V) Vec.Store(a + i, Vec.Load(a + i) + Vec.Load(u + i));
            for (; i < n; i++) a[i] += u[i];
            return;
        }
        for (; i + V <= n; i += V) Vec.Store(a + i, Vec.Load(a + i) + Vec.Load(u + i) * Vec.Load(v + i));
        for (; i < n; i++) a[i] += u[i] * v[i];
    }
}
