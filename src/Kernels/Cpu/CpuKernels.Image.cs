using System.Numerics;

namespace Engine.Kernels.Cpu;

// Image-shaped ops on the CPU: depthwise convolution, patchify (patch embedding and strided downsampling),
// Swin window partition/reverse with cyclic shift, and 2×2 patch merging. All channels-last except the NCHW input
// of the ViT patch embedding.
public sealed unsafe partial class CpuKernels
{
    // ---------------------------------------------------------------- depthwise convolution

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

    // ---------------------------------------------------------------- patchify

    /// <inheritdoc/>
    public void Patchify(float* patches, float* x, int N, int C, int H, int W, int p, bool channelsLast)
    {
        var body = new PatchBody { Patches = patches, X = x, C = C, H = H, W = W, P = p, ChannelsLast = channelsLast };
        CpuParallel.For(N * (H / p), ref body);
    }

    /// <inheritdoc/>
    public void PatchifyBackward(float* dx, float* dpatches, int N, int C, int H, int W, int p, bool channelsLast, bool accumulate)
    {
        var body = new PatchBody
        {
            Patches = dpatches, X = dx, C = C, H = H, W = W, P = p, ChannelsLast = channelsLast, Scatter = true, Accumulate = accumulate,
        };
        CpuParallel.For(N * (H / p), ref body);
    }

    /// <summary>One row of patches (n, py). Gather: patches ← x; scatter: x ← patches (each pixel in one patch).</summary>
    struct PatchBody : IParallelBody
    {
        public float* Patches, X;
        public int C, H, W, P;
        public bool ChannelsLast, Scatter, Accumulate;
        public void Run(int row)
        {
            int Hp = H / P, Wp = W / P, n = row / Hp, py = row % Hp, K = C * P * P;
            for (int px = 0; px < Wp; px++)
            {
                float* patch = Patches + ((long)n * Hp * Wp + (long)py * Wp + px) * K;
                for (int c = 0; c < C; c++)
                    for (int ky = 0; ky < P; ky++)
                        for (int kx = 0; kx < P; kx++)
                        {
                            int iy = py * P + ky, ix = px * P + kx;
                            long xi = ChannelsLast ? (((long)n * H + iy) * W + ix) * C + c : (((long)n * C + c) * H + iy) * W + ix;
                            float* pv = patch + (c * P + ky) * P + kx;
                            if (!Scatter) *pv = X[xi];
                            else X[xi] = Accumulate ? X[xi] + *pv : *pv;
                        }
            }
        }
    }

    // ---------------------------------------------------------------- Swin windows and patch merging

    /// <inheritdoc/>
    public void WindowPartition(float* windows, float* x, int B, int H, int W, int C, int ws, int shift, bool accumulate)
    {
        var body = new WindowBody { Windows = windows, X = x, H = H, W = W, C = C, Ws = ws, Shift = shift, ToWindows = true, Accumulate = accumulate };
        CpuParallel.For(B * (H / ws) * (W / ws), ref body);
    }

    /// <inheritdoc/>
    public void WindowReverse(float* x, float* windows, int B, int H, int W, int C, int ws, int shift, bool accumulate)
    {
        var body = new WindowBody { Windows = windows, X = x, H = H, W = W, C = C, Ws = ws, Shift = shift, Accumulate = accumulate };
        CpuParallel.For(B * (H / ws) * (W / ws), ref body);
    }

    /// <summary>One window: token (ty,tx) of window (b,wr,wc) ↔ pixel (b, (wr·ws+ty+shift) mod H, (wc·ws+tx+shift) mod W).</summary>
    struct WindowBody : IParallelBody
    {
        public float* Windows, X;
        public int H, W, C, Ws, Shift;
        public bool ToWindows, Accumulate;
        public void Run(int window)
        {
            int nWw = W / Ws, nW = H / Ws * nWw, b = window / nW, wr = window % nW / nWw, wc = window % nWw;
            for (int ty = 0; ty < Ws; ty++)
                for (int tx = 0; tx < Ws; tx++)
                {
                    int y = (wr * Ws + ty + Shift) % H, xx = (wc * Ws + tx + Shift) % W;
                    float* pix = X + (((long)b * H + y) * W + xx) * C;
                    float* tok = Windows + ((long)window * Ws * Ws + ty * Ws + tx) * C;
                    MoveRow(ToWindows ? tok : pix, ToWindows ? pix : tok, C, Accumulate);
                }
        }
    }

    /// <inheritdoc/>
    public void PatchMerge(float* y, float* x, int B, int H, int W, int C)
    {
        var body = new PatchMergeBody { Y = y, X = x, H = H, W = W, C = C };
        CpuParallel.For(B * (H / 2), ref body);
    }

    /// <inheritdoc/>
    public void PatchMergeBackward(float* dx, float* dy, int B, int H, int W, int C, bool accumulate)
    {
        var body = new PatchMergeBody { Y = dy, X = dx, H = H, W = W, C = C, Scatter = true, Accumulate = accumulate };
        CpuParallel.For(B * (H / 2), ref body);
    }

    /// <summary>One output row (b, i): y[b,i,j, q·C..] ↔ x[b, 2i+dy_q, 2j+dx_q] with q = 0..3 ↦ (0,0),(1,0),(0,1),(1,1).</summary>
    struct PatchMergeBody : IParallelBody
    {
        public float* Y, X;
        public int H, W, C;
        public bool Scatter, Accumulate;
        public void Run(int row)
        {
            int Ho = H / 2, Wo = W / 2, b = row / Ho, i = row % Ho;
            for (int j = 0; j < Wo; j++)
                for (int q = 0; q < 4; q++)
                {
                    int yy = 2 * i + (q & 1), xx = 2 * j + (q >> 1);
                    float* pix = X + (((long)b * H + yy) * W + xx) * C;
                    float* slot = Y + (((long)b * Ho + i) * Wo + j) * 4 * C + q * C;
                    MoveRow(Scatter ? pix : slot, Scatter ? slot : pix, C, Scatter && Accumulate);
                }
        }
    }

    /// <inheritdoc/>
    public void RelativePositionBias(float* bias, float* table, int NH, int ws)
    {
        var body = new RelativeBiasBody { Bias = bias, Table = table, NH = NH, Ws = ws };
        CpuParallel.For(NH, ref body);
    }

    /// <inheritdoc/>
    public void RelativePositionBiasBackward(float* dtable, float* dbias, int NH, int ws, bool accumulate)
    {
        var body = new RelativeBiasBody { Bias = dbias, Table = dtable, NH = NH, Ws = ws, Scatter = true, Accumulate = accumulate };
        CpuParallel.For(NH, ref body);
    }

    /// <summary>One head h: gathers bias[h] [T,T] from column h of the table, or sums dbias[h] into it per entry
    /// (each entry (dy,dx) receives the token pairs with yi−yj = dy, xi−xj = dx).</summary>
    struct RelativeBiasBody : IParallelBody
    {
        public float* Bias, Table;
        public int NH, Ws;
        public bool Scatter, Accumulate;
        public void Run(int h)
        {
            int T = Ws * Ws, side = 2 * Ws - 1;
            float* bias = Bias + (long)h * T * T;
            if (!Scatter)
            {
                for (int i = 0; i < T; i++)
                    for (int j = 0; j < T; j++)
                        bias[i * T + j] = Table[((i / Ws - j / Ws + Ws - 1) * side + i % Ws - j % Ws + Ws - 1) * NH + h];
                return;
            }
            for (int dy = 1 - Ws; dy < Ws; dy++)
                for (int dx = 1 - Ws; dx < Ws; dx++)
                {
                    float sum = 0f;
                    for (int yi = Math.Max(0, dy); yi < Math.Min(Ws, Ws + dy); yi++)
                        for (int xi = Math.Max(0, dx); xi < Math.Min(Ws, Ws + dx); xi++)
                            sum += bias[(yi * Ws + xi) * T + (yi - dy) * Ws + xi - dx];
                    float* entry = Table + ((dy + Ws - 1) * side + dx + Ws - 1) * NH + h;
                    *entry = Accumulate ? *entry + sum : sum;
                }
        }
    }

    /// <summary>dst[0..n) = src (or += when accumulating).</summary>
    static void MoveRow(float* dst, float* src, int n, bool accumulate)
    {
        if (accumulate) for (int c = 0; c < n; c++) dst[c] += src[c];
        else Buffer.MemoryCopy(src, dst, n * sizeof(float), n * sizeof(float));
    }
}
