using System.Runtime.CompilerServices;
using System.Numerics;

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
            Y = y, X = x, Wt = TapMajor(w, C, k, flip: false), Bias = bias, InH = H, InW = W, OutH = Ho, OutW = Wo, C = C, K = k, Pad = pad,
        };
        CpuParallel.For(N * Ho, ref body);
    }

    /// <summary>Weights [C,k,k] transposed to [k·k, C] so that each tap is a contiguous channel vector; with
    /// <paramref name="flip"/> the taps are in reverse order (the kernel rotated by 180°).</summary>
    static float* TapMajor(float* w, int C, int k, bool flip)
    {
        int taps = k * k;
        float* wt = (float*)ThreadScratch.Get(3, (long)taps * C * sizeof(float));
        for (int c = 0; c < C; c++)
            for (int t = 0; t < taps; t++) wt[(long)(flip ? taps - 1 - t : t) * C + c] = w[(long)c * taps + t];
        return wt;
    }

    /// <summary>
    /// One output row (n, oy) of a depthwise correlation, channels-last: y[n,oy,ox,:] (+)= bias + Σ_taps wt[tap,:] ⊙
    /// x[n, oy+ky−pad, ox+kx−pad, :] over the taps inside the input. Each vector of channels is accumulated over every
    /// tap in a register and stored once. The forward and the input gradient (the flipped kernel over dy) both run it.
    /// </summary>
    struct DepthwiseBody : IParallelBody
    {
        public float* Y, X, Wt, Bias;
        public int InH, InW, OutH, OutW, C, K, Pad;
        public bool Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int row)
        {
            int n = row / OutH, oy = row % OutH, V = Vector<float>.Count;
            int ky0 = Math.Max(0, Pad - oy), ky1 = Math.Min(K, InH + Pad - oy);
            for (int ox = 0; ox < OutW; ox++)
            {
                int kx0 = Math.Max(0, Pad - ox), kx1 = Math.Min(K, InW + Pad - ox);
                float* y = Y + (((long)n * OutH + oy) * OutW + ox) * C;
                float* origin = X + (((long)n * InH + oy - Pad) * InW + ox - Pad) * C; // x at tap (0, 0), maybe outside
                int c = 0;
                for (; c + V <= C; c += V)
                {
                    var acc = Accumulate ? Vec.Load(y + c) : Vector<float>.Zero;
                    if (Bias != null) acc += Vec.Load(Bias + c);
                    for (int ky = ky0; ky < ky1; ky++)
                        for (int kx = kx0; kx < kx1; kx++)
                            acc += Vec.Load(Wt + (long)(ky * K + kx) * C + c) * Vec.Load(origin + ((long)ky * InW + kx) * C + c);
                    Vec.Store(y + c, acc);
                }
                for (; c < C; c++)
                {
                    float acc = (Accumulate ? y[c] : 0f) + (Bias != null ? Bias[c] : 0f);
                    for (int ky = ky0; ky < ky1; ky++)
                        for (int kx = kx0; kx < kx1; kx++)
                            acc += Wt[(long)(ky * K + kx) * C + c] * origin[((long)ky * InW + kx) * C + c];
                    y[c] = acc;
                }
            }
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
            var body = new DepthwiseBody
            {
                Y = dx, X = dy, Wt = TapMajor(w, C, k, flip: true), InH = Ho, InW = Wo, OutH = H, OutW = W, C = C, K = k,
                Pad = k - 1 - pad, Accumulate = accumulate,
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
