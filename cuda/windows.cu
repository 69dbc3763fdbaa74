// windows.cu: Swin's windows. The cyclic shift + window partition and its reverse (each a gather over its output,
// so the backward of one is the other direction with no atomics), and the relative position bias gathered from its
// table, whose backward sums each entry's token pairs in a fixed order.
#include "common.cuh"

// Window partition (Reverse false: windows [B·nW, ws·ws, C] from x [B, H, W, C]) and its reverse, a token per row of
// threads (threadIdx.y) and its C channels across x, so a token's pixel is found once, not once per value: token
// (ty, tx) of window (b, wr, wc) is pixel (b, (wr·ws + ty + shift) mod H, (wc·ws + tx + shift) mod W). Launch: blocks
// (x, y) with x·y = 256, grid-stride over the B·H·W tokens.
template <bool Reverse>
__device__ __forceinline__ void window_rows(float* out, const float* in, int B, int H, int W, int C, int ws, int shift, int accumulate)
{
    int T = ws * ws, nWw = W / ws, nW = (H / ws) * nWw;
    long long tokens = (long long)B * H * W;
    for (long long token = (long long)blockIdx.x * blockDim.y + threadIdx.y; token < tokens; token += (long long)gridDim.x * blockDim.y)
    {
        long long window = token / T, b = window / nW;
        int t = (int)(token - window * T), w = (int)(window - b * nW);
        int wr = w / nWw, wc = w - wr * nWw, ty = t / ws, tx = t - ty * ws;
        int y = (wr * ws + ty + shift) % H, x = (wc * ws + tx + shift) % W;
        const float* from = in + (Reverse ? token : (b * H + y) * W + x) * C;
        float* to = out + (Reverse ? (b * H + y) * W + x : token) * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) store(to + c, from[c], accumulate);
    }
}

extern "C" __global__ void window_partition(float* windows, const float* x, int B, int H, int W, int C, int ws, int shift,
                                           int accumulate)
{
    window_rows<false>(windows, x, B, H, W, C, ws, shift, accumulate);
}

extern "C" __global__ void window_reverse(float* x, const float* windows, int B, int H, int W, int C, int ws, int shift,
                                         int accumulate)
{
    window_rows<true>(x, windows, B, H, W, C, ws, shift, accumulate);
}

// Launch (the relative position bias and its backward): 1-D grid-stride, 256 threads.
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
