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
        float* wt = TapMajor(w, C, k);
        var body = new DepthwiseBody { Y = y, X = x, Wt = wt, Bias = bias, H = H, W = W, C = C, K = k, Pad = pad, Ho = Ho, Wo = Wo };
        CpuParallel.For(N * Ho, ref body);
    }

    /// <summary>Weights [C,k,k] transposed to [k·k, C] so that each tap is a contiguous channel vector.</summary>
    static float* TapMajor(float* w, int C, int k)
    {
        float* wt = (float*)ThreadScratch.Get(3, (long)k * k * C * sizeof(float));
        for (int c = 0; c < C; c++)
            for (int t = 0; t < k * k; t++) wt[(long)t * C + c] = w[(long)c * k * k + t];
        return wt;
    }

    /// <summary>One output row (n, oy): y[n,oy,ox,:] = bias + Σ_taps wt[tap,:] ⊙ x[n, oy+ky−pad, ox+kx−pad, :].</summary>
    struct DepthwiseBody : IParallelBody
    {
        public float* Y, X, Wt, Bias;
        public int H, W, C, K, Pad, Ho, Wo;
        public void Run(int row)
        {
            int n = row / Ho, oy = row % Ho;
            for (int ox = 0; ox < Wo; ox++)
            {
                float* y = Y + (((long)n * Ho + oy) * Wo + ox) * C;
                if (Bias != null) Buffer.MemoryCopy(Bias, y, C * sizeof(float), C * sizeof(float));
                else new Span<float>(y, C).Clear();
                for (int ky = 0; ky < K; ky++)
                {
                    int iy = oy + ky - Pad;
                    if ((uint)iy >= (uint)H) continue;
                    for (int kx = 0; kx < K; kx++)
                    {
                        int ix = ox + kx - Pad;
                        if ((uint)ix >= (uint)W) continue;
                        float* x = X + (((long)n * H + iy) * W + ix) * C, wt = Wt + (long)(ky * K + kx) * C;
                        for (int c = 0; c < C; c++) y[c] += wt[c] * x[c];
                    }
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
            // dx[n,iy,ix,:] = Σ_taps w[:,ky,kx] ⊙ dy[n, iy−ky+pad, ix−kx+pad, :]: a correlation with the flipped
            // kernel, computed per input row.
            float* wt = TapMajor(w, C, k);
            var body = new DepthwiseInputGradBody
            {
                Dx = dx, Dy = dy, Wt = wt, H = H, W = W, C = C, K = k, Pad = pad, Ho = Ho, Wo = Wo, Accumulate = accumulate,
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

    struct DepthwiseInputGradBody : IParallelBody
    {
        public float* Dx, Dy, Wt;
        public int H, W, C, K, Pad, Ho, Wo;
        public bool Accumulate;
        public void Run(int row)
        {
            int n = row / H, iy = row % H;
            for (int ix = 0; ix < W; ix++)
            {
                float* dx = Dx + (((long)n * H + iy) * W + ix) * C;
                if (!Accumulate) new Span<float>(dx, C).Clear();
                for (int ky = 0; ky < K; ky++)
                {
                    int oy = iy - ky + Pad;
                    if ((uint)oy >= (uint)Ho) continue;
                    for (int kx = 0; kx < K; kx++)
                    {
                        int ox = ix - kx + Pad;
                        if ((uint)ox >= (uint)Wo) continue;
                        float* dy = Dy + (((long)n * Ho + oy) * Wo + ox) * C, wt = Wt + (long)(ky * K + kx) * C;
                        for (int c = 0; c < C; c++) dx[c] += wt[c] * dy[c];
                    }
                }
            }
        }
    }

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
                for (int ox = 0; ox < Wo; ox++)
                {
                    float* dy = Dy + (((long)n * Ho + oy) * Wo + ox) * C;
                    for (int c = 0; c < C; c++) db[c] += dy[c];
                    if (X == null) continue; // only the bias trains (BitFit): x was not kept
                    for (int ky = 0; ky < K; ky++)
                    {
                        int iy = oy + ky - Pad;
                        if ((uint)iy >= (uint)H) continue;
                        for (int kx = 0; kx < K; kx++)
                        {
                            int ix = ox + kx - Pad;
                            if ((uint)ix >= (uint)W) continue;
                            float* x = X + (((long)n * H + iy) * W + ix) * C, a = acc + (long)(ky * K + kx) * C;
                            for (int c = 0; c < C; c++) a[c] += dy[c] * x[c];
                        }
                    }
                }
            }
        }
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
