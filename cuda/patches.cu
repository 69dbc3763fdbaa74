// patches.cu: the image-shaped permutes. Patchify (ViT patch embedding, strided downsampling), Swin's cyclic
// shift + window partition and its reverse, 2×2 patch merging, and the relative position bias gather. Each kernel is a gather over its output
// (every output element has exactly one source), so the backward of one is the other direction with no atomics.
// Launch: 1-D grid-stride, 256 threads.
#include "common.cuh"

// Offset in x of patch element i of patches [N, (H/p)·(W/p), C·p·p] (inner index c·p·p + ky·p + kx).
__device__ __forceinline__ long long patch_source(long long i, int C, int H, int W, int p, int channelsLast)
{
    int K = C * p * p, Wp = W / p, Hp = H / p;
    int inner = (int)(i % K), kx = inner % p, ky = inner / p % p, c = inner / (p * p);
    long long patch = i / K;
    int px = (int)(patch % Wp), py = (int)(patch / Wp % Hp), n = (int)(patch / ((long long)Wp * Hp));
    int iy = py * p + ky, ix = px * p + kx;
    return channelsLast ? (((long long)n * H + iy) * W + ix) * C + c : (((long long)n * C + c) * H + iy) * W + ix;
}

extern "C" __global__ void patchify(float* patches, const float* x, int N, int C, int H, int W, int p, int channelsLast)
{
    GRID_STRIDE(i, (long long)N * (H / p) * (W / p) * C * p * p) patches[i] = x[patch_source(i, C, H, W, p, channelsLast)];
}

// Each pixel of a patch receives its gradient once; pixels beyond the last whole patch are left untouched.
extern "C" __global__ void patchify_backward(float* dx, const float* dpatches, int N, int C, int H, int W, int p,
                                            int channelsLast, int accumulate)
{
    GRID_STRIDE(i, (long long)N * (H / p) * (W / p) * C * p * p)
        store(dx + patch_source(i, C, H, W, p, channelsLast), dpatches[i], accumulate);
}

// Offset in x [B, H, W, C] of element i of windows [B·nW, ws·ws, C]: token (ty, tx) of window (b, wr, wc) is pixel
// (b, (wr·ws + ty + shift) mod H, (wc·ws + tx + shift) mod W).
__device__ __forceinline__ long long window_source(long long i, int H, int W, int C, int ws, int shift)
{
    int c = (int)(i % C);
    long long token = i / C;
    int tx = (int)(token % ws), ty = (int)(token / ws % ws);
    long long window = token / (ws * ws);
    int nWw = W / ws, nW = (H / ws) * nWw;
    int wc = (int)(window % nWw), wr = (int)(window % nW / nWw);
    long long b = window / nW;
    int y = (wr * ws + ty + shift) % H, x = (wc * ws + tx + shift) % W;
    return ((b * H + y) * W + x) * C + c;
}

extern "C" __global__ void window_partition(float* windows, const float* x, int B, int H, int W, int C, int ws, int shift,
                                           int accumulate)
{
    GRID_STRIDE(i, (long long)B * H * W * C) store(windows + i, x[window_source(i, H, W, C, ws, shift)], accumulate);
}

extern "C" __global__ void window_reverse(float* x, const float* windows, int B, int H, int W, int C, int ws, int shift,
                                         int accumulate)
{
    GRID_STRIDE(i, (long long)B * H * W * C) store(x + window_source(i, H, W, C, ws, shift), windows[i], accumulate);
}

// Offset in x [B, H, W, C] of element i of y [B, H/2, W/2, 4C]; channel block q = 0..3 takes the neighbour
// (0,0), (1,0), (0,1), (1,1) as (row, column) offsets (timm's x0, x1, x2, x3).
__device__ __forceinline__ long long merge_source(long long i, int H, int W, int C)
{
    int Ho = H / 2, Wo = W / 2;
    int c = (int)(i % C), q = (int)(i / C % 4);
    long long cell = i / (4 * C);
    int j = (int)(cell % Wo), r = (int)(cell / Wo % Ho);
    long long b = cell / ((long long)Wo * Ho);
    return ((b * H + 2 * r + (q & 1)) * W + 2 * j + (q >> 1)) * C + c;
}

extern "C" __global__ void patch_merge(float* y, const float* x, int B, int H, int W, int C)
{
    GRID_STRIDE(i, (long long)B * (H / 2) * (W / 2) * 4 * C) y[i] = x[merge_source(i, H, W, C)];
}

extern "C" __global__ void patch_merge_backward(float* dx, const float* dy, int B, int H, int W, int C, int accumulate)
{
    GRID_STRIDE(i, (long long)B * (H / 2) * (W / 2) * 4 * C) store(dx + merge_source(i, H, W, C), dy[i], accumulate);
}

// bias [NH, T, T] (T = ws²) from table [(2ws−1)², NH]: query token i = (yi, xi) and key token j = (yj, xj) read
// entry (yi−yj+ws−1)·(2ws−1) + (xi−xj+ws−1) (timm's relative_position_index, computed rather than stored).
extern "C" __global__ void relative_position_bias(float* bias, const float* table, int NH, int ws)
{
    int T = ws * ws, side = 2 * ws - 1;
    GRID_STRIDE(e, (long long)NH * T * T)
    {
        int j = (int)(e % T), i = (int)(e / T % T), h = (int)(e / ((long long)T * T));
        bias[e] = table[((i / ws - j / ws + ws - 1) * side + i % ws - j % ws + ws - 1) * NH + h];
    }
}

// One thread per table entry (r, h) sums the token pairs at offset (dy, dx) in a fixed order: deterministic, no atomics.
extern "C" __global__ void relative_position_bias_backward(float* dtable, const float* dbias, int NH, int ws, int accumulate)
{
    int T = ws * ws, side = 2 * ws - 1;
    GRID_STRIDE(e, (long long)side * side * NH)
    {
        int h = (int)(e % NH), r = (int)(e / NH), dy = r / side - (ws - 1), dx = r % side - (ws - 1);
        const float* bias = dbias + (long long)h * T * T;
        float sum = 0.f;
        for (int yi = max(0, dy); yi < min(ws, ws + dy); yi++)
            for (int xi = max(0, dx); xi < min(ws, ws + dx); xi++)
                sum += bias[(yi * ws + xi) * T + (yi - dy) * ws + xi - dx];
        store(dtable + e, sum, accumulate);
    }
}
