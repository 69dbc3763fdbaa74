using System.Runtime.CompilerServices;
using System.Numerics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Engine.Kernels.Cpu;

// Depthwise convolution on the CPU (cuda/conv.cu), channels-last: forward, input gradient (the same correlation
// with the flipped kernel) and parameter gradients.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void DepthwiseConvForward(float* y, float* x, float* w, float* bias, int N, int H, int W, int C, int k, int pad)
    {
        var body = new DepthwiseBody { Y = y, X = x, Wt = TapMajor(w, C, k, flip: false), Bias = bias, C = C, K = k };
        body.Run(N, H, W, pad);
    }

    /// <summary>Weights [C,k,k] transposed to [k·k, C] so that each tap is a contiguous channel vector; with
    /// <paramref name="flip"/> the taps are in reverse order (the kernel rotated by 180°). Rows are
    /// <see cref="Stride"/>(C) apart. Blocks of 8 channels × 8 taps are transposed in registers (a flipped block is
    /// written upwards, rows −stride apart); the last taps and channels go one by one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float* TapMajor(float* w, int C, int k, bool flip)
    {
        int taps = k * k;
        long stride = Stride(C), step = flip ? -stride : stride;
        float* wt = (float*)ThreadScratch.Get(3, taps * stride * sizeof(float));
        float* tap0 = flip ? wt + (taps - 1) * stride : wt; // where tap 0 goes
        int c = 0;
        if (Avx.IsSupported)
            for (; c + 8 <= C; c += 8)
            {
                float* src = w + (long)c * taps;
                int t = 0;
                for (; t + 8 <= taps; t += 8) CpuGemm.Transpose8x8(src + t, taps, tap0 + t * step + c, step);
                for (; t < taps; t++)
                    for (int j = 0; j < 8; j++) tap0[t * step + c + j] = src[(long)j * taps + t];
            }
        for (; c < C; c++)
            for (int t = 0; t < taps; t++) tap0[t * step + c] = w[(long)c * taps + t];
        return wt;
    }

    /// <summary>The distance between the channel vectors of neighbouring pixels (or taps) in the copies the depthwise
    /// kernels read: C plus one cache line, so that the k·k·4 vectors one output tile reads do not all fall into the same
    /// L1 set when C·4 bytes is a multiple of 4 KiB (C = 1024 thrashed the cache 8-fold).</summary>
    static int Stride(int C) => C + 16;

    /// <summary>
    /// A depthwise correlation over x zero-padded by Pad, channels-last, one image and one slice of its channels per
    /// task: y[n,oy,ox,c] (+)= bias[c] + Σ_{ky,kx} wt[ky·K+kx, c] · x[n, oy+ky−Pad, ox+kx−Pad, c], wt with rows
    /// Stride(C) apart. A task first copies its slice of the image into its own scratch with Pad zero columns either
    /// side (pixels Stride(slice) apart), so the inner loops carry no column bounds (taps above and below the image are
    /// left out by row) and every pixel it reads is in its own core's cache: a shared padded copy written by
    /// interleaved tasks made two threads slower than one (each core read the rows the other had just written), and
    /// row blocks with their own padded halo copied small images almost twice. Per vector of channels, four
    /// neighbouring outputs share each weight load and accumulate over all taps in registers. The forward and the input
    /// gradient (the flipped kernel over dy) both run it.
    /// </summary>
    struct DepthwiseBody : IParallelBody
    {
        public float* Y, X, Wt, Bias;
        public int InH, InW, Pad, OutH, OutW, C, K, Slices, SliceWidth;
        public bool Accumulate;

        /// <summary>Runs the correlation over x [n, h, w, C] zero-padded by <paramref name="pad"/>: whole images when
        /// they share the threads evenly, else each image cut into one channel slice per thread (whole 16-channel
        /// vectors; the last slice takes any tail).</summary>
        public void Run(int n, int h, int w, int pad)
        {
            InH = h;
            InW = w;
            Pad = pad;
            OutH = h + 2 * pad - K + 1;
            OutW = w + 2 * pad - K + 1;
            int threads = CpuParallel.ThreadsHere, slices = n % threads == 0 ? 1 : threads;
            SliceWidth = (C + slices - 1) / slices;
            SliceWidth = (SliceWidth + 15) / 16 * 16;
            Slices = (C + SliceWidth - 1) / SliceWidth;
            CpuParallel.For(n * Slices, ref this);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int task)
        {
            int n = task / Slices, c0 = task % Slices * SliceWidth, width = Math.Min(SliceWidth, C - c0);
            long pixel = Stride(width), line = (InW + 2L * Pad) * pixel;
            float* xp = PaddedSlice(n, c0, width, pixel);
            var s = new Slice(Wt + c0, Bias == null ? null : Bias + c0, width, pixel, line, Stride(C), K, OutW, C, Accumulate);
            for (int oy = 0; oy < OutH; oy++)
            {
                int ky0 = Math.Max(0, Pad - oy), ky1 = Math.Min(K, InH + Pad - oy); // the taps inside the image
                float* yRow = Y + ((long)n * OutH + oy) * OutW * C + c0;
                float* xRow = xp + (oy + ky0 - Pad) * line; // the image row under tap row ky0
                int c = Simd.Width switch
                {
                    SimdWidth.W512 => s.Vectors<Vector512<float>, W512>(yRow, xRow, ky0, ky1),
                    SimdWidth.W256 => s.Vectors<Vector256<float>, W256>(yRow, xRow, ky0, ky1),
                    _ => s.Vectors<Vector128<float>, W128>(yRow, xRow, ky0, ky1),
                };
                for (; c < width; c++)
                    for (int ox = 0; ox < OutW; ox++)
                    {
                        float acc = s.Bias != null ? s.Bias[c] : 0f;
                        for (int ky = ky0; ky < ky1; ky++)
                            for (int kx = 0; kx < K; kx++)
                                acc += s.Wt[(ky * K + kx) * s.WtRow + c] * xRow[(ky - ky0) * line + (ox + kx) * pixel + c];
                        float* y = yRow + ox * C + c;
                        *y = Accumulate ? *y + acc : acc;
                    }
            }
        }

        /// <summary>Channels [c0, c0+width) of image n with Pad zero pixels either side of each row, pixels
        /// <paramref name="pixel"/> floats apart, in this thread's scratch.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        readonly float* PaddedSlice(int n, int c0, int width, long pixel)
        {
            long line = (InW + 2L * Pad) * pixel;
            float* dst = (float*)ThreadScratch.Get(4, InH * line * sizeof(float));
            for (int iy = 0; iy < InH; iy++)
            {
                float* d = dst + iy * line, src = X + ((long)n * InH + iy) * InW * C + c0;
                new Span<float>(d, (int)(Pad * pixel)).Clear();
                for (int ix = 0; ix < InW; ix++)
                {
                    float* dp = d + (Pad + ix) * pixel;
                    Buffer.MemoryCopy(src + (long)ix * C, dp, width * 4L, width * 4L);
                    new Span<float>(dp + width, (int)(pixel - width)).Clear();
                }
                new Span<float>(d + (Pad + InW) * pixel, (int)(Pad * pixel)).Clear();
            }
            return dst;
        }
    }

    /// <summary>One task's channel slice: its weights (rows WtRow apart) and bias from the slice's first channel, its
    /// padded input (pixels Pixel apart, rows Line apart), OutW outputs per row OutPixel apart.</summary>
    readonly struct Slice(float* wt, float* bias, int width, long pixel, long line, long wtRow, int k, int outW, long outPixel, bool accumulate)
    {
        public readonly float* Wt = wt, Bias = bias;
        public readonly long Pixel = pixel, Line = line, WtRow = wtRow, OutPixel = outPixel;
        public readonly int Width = width, K = k, OutW = outW;
        public readonly bool Accumulate = accumulate;

        /// <summary>The whole channel vectors of one output row at width W over tap rows [ky0, ky1) (xRow: the input
        /// row under ky0), two vectors at a time while they last; returns the first channel of the scalar tail.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public int Vectors<TV, W>(float* yRow, float* xRow, int ky0, int ky1) where TV : struct where W : ISimd<TV>
        {
            int c = 0;
            for (; c + 2 * W.Count <= Width; c += 2 * W.Count) Row<TV, W, N2>(yRow + c, xRow + c, c, ky0, ky1);
            for (; c + W.Count <= Width; c += W.Count) Row<TV, W, N1>(yRow + c, xRow + c, c, ky0, ky1);
            return c;
        }

        /// <summary>V.N channel vectors from channel c of one output row: groups of four outputs, the last group moved
        /// back to end at the row's end (the outputs it shares with the group before are computed again but not stored
        /// again, which would add them twice into an accumulated dx); rows narrower than four one output at a time.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        void Row<TV, W, V>(float* yRow, float* xRow, int c, int ky0, int ky1) where TV : struct where W : ISimd<TV> where V : struct, ICount
        {
            TV init0 = Bias != null ? W.Load(Bias + c) : W.Splat(0f), init1 = V.N > 1 && Bias != null ? W.Load(Bias + c + W.Count) : W.Splat(0f);
            if (OutW < 4)
            {
                for (int ox = 0; ox < OutW; ox++) Tile<TV, W, V, N1>(yRow + ox * OutPixel, xRow + ox * Pixel, c, ky0, ky1, init0, init1, 0);
                return;
            }
            for (int next = 0; next < OutW; next += 4)
            {
                int ox = Math.Min(next, OutW - 4);
                Tile<TV, W, V, N4>(yRow + ox * OutPixel, xRow + ox * Pixel, c, ky0, ky1, init0, init1, next - ox);
            }
        }

        /// <summary>O.N neighbouring outputs × V.N channel vectors in registers (up to 8 independent accumulators, enough
        /// to keep both FMA pipes busy), over all taps: each weight vector load serves the O.N outputs. Outputs before
        /// <paramref name="first"/> are not stored.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        void Tile<TV, W, V, O>(float* y, float* x, int c, int ky0, int ky1, TV init0, TV init1, int first)
            where TV : struct where W : ISimd<TV> where V : struct, ICount where O : struct, ICount
        {
            long pixel = Pixel, wtRow = WtRow;
            TV a0 = init0, a1 = init0, a2 = init0, a3 = init0, b0 = init1, b1 = init1, b2 = init1, b3 = init1;
            for (int ky = ky0; ky < ky1; ky++)
            {
                float* xp = x + (ky - ky0) * Line, wp = Wt + ky * K * wtRow + c;
                for (int kx = 0; kx < K; kx++, xp += pixel, wp += wtRow)
                {
                    var w = W.Load(wp);
                    a0 = W.Fma(w, W.Load(xp), a0);
                    if (O.N > 1)
                    {
                        a1 = W.Fma(w, W.Load(xp + pixel), a1);
                        a2 = W.Fma(w, W.Load(xp + 2 * pixel), a2);
                        a3 = W.Fma(w, W.Load(xp + 3 * pixel), a3);
                    }
                    if (V.N > 1)
                    {
                        var v = W.Load(wp + W.Count);
                        b0 = W.Fma(v, W.Load(xp + W.Count), b0);
                        if (O.N > 1)
                        {
                            b1 = W.Fma(v, W.Load(xp + pixel + W.Count), b1);
                            b2 = W.Fma(v, W.Load(xp + 2 * pixel + W.Count), b2);
                            b3 = W.Fma(v, W.Load(xp + 3 * pixel + W.Count), b3);
                        }
                    }
                }
            }
            if (first == 0) Store<TV, W, V>(y, a0, b0);
            if (O.N > 1)
            {
                if (first <= 1) Store<TV, W, V>(y + OutPixel, a1, b1);
                if (first <= 2) Store<TV, W, V>(y + 2 * OutPixel, a2, b2);
                Store<TV, W, V>(y + 3 * OutPixel, a3, b3);
            }
        }

        /// <summary>One output's V.N channel vectors, written or added.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        void Store<TV, W, V>(float* y, TV a, TV b) where TV : struct where W : ISimd<TV> where V : struct, ICount
        {
            W.Store(y, Accumulate ? W.Add(a, W.Load(y)) : a);
            if (V.N > 1) W.Store(y + W.Count, Accumulate ? W.Add(b, W.Load(y + W.Count)) : b);
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
            var body = new DepthwiseBody { Y = dx, X = dy, Wt = TapMajor(w, C, k, flip: true), C = C, K = k, Accumulate = accumulate };
            body.Run(N, Ho, Wo, k - 1 - pad);
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

    /// <summary>One chunk of output rows: partial sums of dy ⊙ x per tap (tap-major [k·k, C]) and of dy (the bias).
    /// Per output row, tap row ky and vector of channels, up to eight taps of the row accumulate in registers over the
    /// whole output row: each dy load serves them all, and the partials are read and written once per row.</summary>
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
                float* dyRow = Dy + ((long)n * Ho + oy) * Wo * C;
                for (int ox = 0; ox < Wo; ox++) AddProduct(db, dyRow + (long)ox * C, null, C);
                if (X == null) continue; // only the bias trains (BitFit): x was not kept
                int ky0 = Math.Max(0, Pad - oy), ky1 = Math.Min(K, H + Pad - oy);
                for (int ky = ky0; ky < ky1; ky++)
                {
                    float* xRow = X + ((long)n * H + oy + ky - Pad) * W * C;
                    for (int kx0 = 0; kx0 < K; kx0 += 8)
                    {
                        var taps = new TapRow(acc + (long)(ky * K + kx0) * C, dyRow, xRow, C, W, Wo, kx0 - Pad);
                        int c = Simd.Width switch
                        {
                            SimdWidth.W512 => taps.Vectors<Vector512<float>, W512>(Math.Min(8, K - kx0)),
                            SimdWidth.W256 => taps.Vectors<Vector256<float>, W256>(Math.Min(8, K - kx0)),
                            _ => taps.Vectors<Vector128<float>, W128>(Math.Min(8, K - kx0)),
                        };
                        for (; c < C; c++)
                            for (int ox = 0; ox < Wo; ox++)
                                for (int j = 0; j < Math.Min(8, K - kx0); j++)
                                {
                                    int ix = ox + taps.First + j;
                                    if ((uint)ix < (uint)W) taps.Acc[(long)j * C + c] += dyRow[(long)ox * C + c] * xRow[(long)ix * C + c];
                                }
                    }
                }
            }
        }
    }

    /// <summary>Taps First.. of one tap row against one output row: acc[j, c] += Σ_ox dy[ox, c] · x[ox + First + j, c]
    /// (x columns outside [0, W) are the zero padding), rows of acc, dy and x C apart.</summary>
    readonly struct TapRow(float* acc, float* dy, float* x, int c, int w, int wo, int first)
    {
        public readonly float* Acc = acc, Dy = dy, X = x;
        public readonly int C = c, W = w, Wo = wo, First = first;

        /// <summary>The whole channel vectors at width W for <paramref name="taps"/> (1..8) taps; returns the first
        /// channel of the scalar tail.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public int Vectors<TV, W>(int taps) where TV : struct where W : ISimd<TV> => taps switch
        {
            8 => Vectors<TV, W, N8>(),
            7 => Vectors<TV, W, N7>(),
            6 => Vectors<TV, W, N6>(),
            5 => Vectors<TV, W, N5>(),
            4 => Vectors<TV, W, N4>(),
            3 => Vectors<TV, W, N3>(),
            2 => Vectors<TV, W, N2>(),
            _ => Vectors<TV, W, N1>(),
        };

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        int Vectors<TV, W, T>() where TV : struct where W : ISimd<TV> where T : struct, ICount
        {
            int c = 0;
            long C = this.C;
            for (; c + W.Count <= this.C; c += W.Count)
            {
                float* acc = Acc + c, x = X + c, dy = Dy + c;
                TV a0 = W.Load(acc), a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
                if (T.N > 1) a1 = W.Load(acc + C);
                if (T.N > 2) a2 = W.Load(acc + 2 * C);
                if (T.N > 3) a3 = W.Load(acc + 3 * C);
                if (T.N > 4) a4 = W.Load(acc + 4 * C);
                if (T.N > 5) a5 = W.Load(acc + 5 * C);
                if (T.N > 6) a6 = W.Load(acc + 6 * C);
                if (T.N > 7) a7 = W.Load(acc + 7 * C);
                for (int ox = 0; ox < Wo; ox++)
                {
                    var g = W.Load(dy + ox * C);
                    int ix = ox + First;
                    float* xp = x + ix * C;
                    if (ix >= 0 && ix + T.N <= this.W)
                    {
                        a0 = W.Fma(g, W.Load(xp), a0);
                        if (T.N > 1) a1 = W.Fma(g, W.Load(xp + C), a1);
                        if (T.N > 2) a2 = W.Fma(g, W.Load(xp + 2 * C), a2);
                        if (T.N > 3) a3 = W.Fma(g, W.Load(xp + 3 * C), a3);
                        if (T.N > 4) a4 = W.Fma(g, W.Load(xp + 4 * C), a4);
                        if (T.N > 5) a5 = W.Fma(g, W.Load(xp + 5 * C), a5);
                        if (T.N > 6) a6 = W.Fma(g, W.Load(xp + 6 * C), a6);
                        if (T.N > 7) a7 = W.Fma(g, W.Load(xp + 7 * C), a7);
                        continue;
                    }
                    // A border output: only the taps over the image.
                    if ((uint)ix < (uint)this.W) a0 = W.Fma(g, W.Load(xp), a0);
                    if (T.N > 1 && (uint)(ix + 1) < (uint)this.W) a1 = W.Fma(g, W.Load(xp + C), a1);
                    if (T.N > 2 && (uint)(ix + 2) < (uint)this.W) a2 = W.Fma(g, W.Load(xp + 2 * C), a2);
                    if (T.N > 3 && (uint)(ix + 3) < (uint)this.W) a3 = W.Fma(g, W.Load(xp + 3 * C), a3);
                    if (T.N > 4 && (uint)(ix + 4) < (uint)this.W) a4 = W.Fma(g, W.Load(xp + 4 * C), a4);
                    if (T.N > 5 && (uint)(ix + 5) < (uint)this.W) a5 = W.Fma(g, W.Load(xp + 5 * C), a5);
                    if (T.N > 6 && (uint)(ix + 6) < (uint)this.W) a6 = W.Fma(g, W.Load(xp + 6 * C), a6);
                    if (T.N > 7 && (uint)(ix + 7) < (uint)this.W) a7 = W.Fma(g, W.Load(xp + 7 * C), a7);
                }
                W.Store(acc, a0);
                if (T.N > 1) W.Store(acc + C, a1);
                if (T.N > 2) W.Store(acc + 2 * C, a2);
                if (T.N > 3) W.Store(acc + 3 * C, a3);
                if (T.N > 4) W.Store(acc + 4 * C, a4);
                if (T.N > 5) W.Store(acc + 5 * C, a5);
                if (T.N > 6) W.Store(acc + 6 * C, a6);
                if (T.N > 7) W.Store(acc + 7 * C, a7);
            }
            return c;
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
