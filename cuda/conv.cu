// conv.cu: depthwise 2-D convolution, stride 1, zero padding, channels-last (ConvNeXt's 7×7).
// x [N, H, W, C]; w [C, k, k]; bias [C] or null; y [N, Ho, Wo, C] with Ho = H + 2·pad − k + 1.
// Every kernel runs (32, 8) blocks: threadIdx.x is a channel of the block's 32 (blockIdx.x), so every load and store of
// x, y, dy and dx is coalesced, and threadIdx.y walks positions.
#include "common.cuh"

#define DEPTHWISE_SHARED_TAPS 121 // a block's 32 channels' weights stay in shared memory for k ≤ 11
#define DEPTHWISE_REGISTER_K 7    // the weight gradient keeps a 7×7 window of taps per thread in registers

// This thread's channel's k·k weights: in shared memory when the block's 32 channels' fit (they are contiguous in w,
// so the block loads them coalesced; lanes then read taps 32 channels apart, k·k words, which for odd k hit 32
// different banks), else where they are in w. Every thread of the block must call it (it has a barrier).
__device__ const float* channel_weights(float* shared, const float* w, int C, int k, int c)
{
    int kk = k * k, c0 = blockIdx.x * 32, count = min(32, C - c0) * kk;
    if (kk > DEPTHWISE_SHARED_TAPS) return w + (long long)c * kk;
    int thread = threadIdx.y * 32 + threadIdx.x;
    for (int i = thread; i < count; i += 32 * COLUMN_THREADS_Y) shared[i] = w[(long long)c0 * kk + i];
    __syncthreads();
    return shared + threadIdx.x * kk;
}

// The taps [begin, end) of a kernel of k taps whose input index o + dir·tap + shift lies in [0, size).
__device__ __forceinline__ void tap_range(int o, int size, int k, int dir, int shift, int& begin, int& end)
{
    begin = dir > 0 ? max(0, -o - shift) : max(0, o + shift - size + 1);
    end = dir > 0 ? min(k, size - o - shift) : min(k, o + shift + 1);
}

// out[n, oy, ox, c] = Σ_{ky, kx} wc[ky·k + kx] · in[n, oy + dir·ky + shift, ox + dir·kx + shift, c], taps in order (ky, then
// kx, ascending), out of range taps skipped (their range is found once, so the loops carry no bounds checks); in
// [N, inH, inW, C], out [N, outH, outW, C]. The forward is dir = 1, shift = −pad; the input gradient is the same sum over
// dy with dir = −1, shift = pad.
__device__ float tap_sum(const float* in, const float* wc, float start, int n, int oy, int ox, int inH, int inW, int C, int c,
                         int k, int dir, int shift)
{
    int ky0, ky1, kx0, kx1;
    tap_range(oy, inH, k, dir, shift, ky0, ky1);
    tap_range(ox, inW, k, dir, shift, kx0, kx1);
    long long step = (long long)dir * C;
    float s = start;
    for (int ky = ky0; ky < ky1; ky++)
    {
        const float* x = in + (((long long)n * inH + oy + dir * ky + shift) * inW + ox + dir * kx0 + shift) * C + c;
        const float* w = wc + ky * k;
        for (int kx = kx0; kx < kx1; kx++, x += step) s += w[kx] * *x;
    }
    return s;
}

// y[n, oy, ox, c] = bias[c] + Σ_{ky,kx} w[c, ky, kx] · x[n, oy+ky−pad, ox+kx−pad, c]. Grid (ceil(C/32), position blocks).
extern "C" __global__ void depthwise_conv_forward(float* y, const float* x, const float* w, const float* bias, int N, int H,
                                                 int W, int C, int k, int pad)
{
    __shared__ float shared[32 * DEPTHWISE_SHARED_TAPS];
    int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1, c = blockIdx.x * 32 + threadIdx.x;
    const float* wc = channel_weights(shared, w, C, k, c);
    if (c >= C) return;
    float b = bias ? bias[c] : 0.f;
    long long positions = (long long)N * Ho * Wo;
    for (long long p = blockIdx.y * COLUMN_THREADS_Y + threadIdx.y; p < positions; p += (long long)gridDim.y * COLUMN_THREADS_Y)
    {
        int ox = (int)(p % Wo), oy = (int)(p / Wo % Ho), n = (int)(p / ((long long)Wo * Ho));
        y[p * C + c] = tap_sum(x, wc, b, n, oy, ox, H, W, C, c, k, 1, -pad);
    }
}

// dx[n, iy, ix, c] = Σ_{ky,kx} w[c, ky, kx] · dy[n, iy−ky+pad, ix−kx+pad, c] (a gather: no atomics). Grid as the forward's.
extern "C" __global__ void depthwise_conv_backward_input(float* dx, const float* dy, const float* w, int N, int H, int W, int C,
                                                        int k, int pad, int accumulate)
{
    __shared__ float shared[32 * DEPTHWISE_SHARED_TAPS];
    int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1, c = blockIdx.x * 32 + threadIdx.x;
    const float* wc = channel_weights(shared, w, C, k, c);
    if (c >= C) return;
    long long positions = (long long)N * H * W;
    for (long long p = blockIdx.y * COLUMN_THREADS_Y + threadIdx.y; p < positions; p += (long long)gridDim.y * COLUMN_THREADS_Y)
    {
        int ix = (int)(p % W), iy = (int)(p / W % H), n = (int)(p / ((long long)W * H));
        store(dx + p * C + c, tap_sum(dy, wc, 0.f, n, iy, ix, Ho, Wo, C, c, k, -1, pad), accumulate);
    }
}

// dw[c, ky, kx] += Σ_positions dy · x(shifted by the tap), dbias[c] += Σ dy (either may be null). Grid (ceil(C/32), chunks²,
// position slices), chunks = ceil(k / 7): block y owns taps ky0 ≤ ky < ky0 + 7, kx0 ≤ kx < kx0 + 7 (chunk 0 also the
// bias), each thread keeps that 7×7 window's sums for its channel in registers while it walks positions y, y + 8, ...
// of its slice, reading each dy once; the block's eight sums per tap are then added in a fixed order (deterministic).
// With position slices, partials [slices, C·k·k] (dw's, index c·k·k + tap) then [slices, C] (dbias's) for
// column_partials_sum.
extern "C" __global__ void depthwise_conv_backward_params(float* dw, float* dbias, float* partials, const float* dy, const float* x,
                                                         int N, int H, int W, int C, int k, int pad)
{
    __shared__ float partial[COLUMN_THREADS_Y][33];
    const int R = DEPTHWISE_REGISTER_K;
    int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1, c = blockIdx.x * 32 + threadIdx.x, kk = k * k;
    int chunks = (k + R - 1) / R, ky0 = blockIdx.y / chunks * R, kx0 = blockIdx.y % chunks * R;
    bool active = c < C, bias = dbias && blockIdx.y == 0;
    float sum[R][R], sumBias = 0.f;
#pragma unroll
    for (int a = 0; a < R; a++)
#pragma unroll
        for (int b = 0; b < R; b++) sum[a][b] = 0.f;
    int begin, end;
    column_slice(N * Ho * Wo, begin, end);
    if (active)
        for (int p = begin + threadIdx.y; p < end; p += COLUMN_THREADS_Y)
        {
            int ox = p % Wo, oy = p / Wo % Ho, n = p / (Wo * Ho);
            float g = dy[(long long)p * C + c];
            sumBias += g;
            if (!dw) continue;
#pragma unroll
            for (int a = 0; a < R; a++)
            {
                int iy = oy + ky0 + a - pad;
                if (ky0 + a >= k || iy < 0 || iy >= H) continue;
                const float* row = x + (((long long)n * H + iy) * W) * C + c;
#pragma unroll
                for (int b = 0; b < R; b++)
                {
                    int ix = ox + kx0 + b - pad;
                    if (kx0 + b < k && ix >= 0 && ix < W) sum[a][b] += g * row[(long long)ix * C];
                }
            }
        }
    // One tap at a time (the indices stay constants, so the sums stay in registers): the eight threads of a column add
    // their sums in order. The conditions are the same for the whole block, so every thread meets every barrier.
#pragma unroll
    for (int t = 0; t <= R * R; t++)
    {
        int a = t / R, b = t % R;
        bool isBias = t == R * R;
        if (isBias ? !bias : !dw || ky0 + a >= k || kx0 + b >= k) continue;
        partial[threadIdx.y][threadIdx.x] = isBias ? sumBias : sum[a][b];
        __syncthreads();
        if (threadIdx.y == 0 && active)
        {
            float total = 0.f;
            for (int y = 0; y < COLUMN_THREADS_Y; y++) total += partial[y][threadIdx.x];
            if (isBias) column_result(dbias, partials + (long long)gridDim.z * C * kk, C, c, total, 1.f, 1);
            else column_result(dw, partials, (long long)C * kk, (long long)c * kk + (ky0 + a) * k + kx0 + b, total, 1.f, 1);
        }
        __syncthreads();
    }
}
