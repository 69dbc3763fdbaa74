// patches.cu: patch layouts. Patchify (ViT patch embedding, strided downsampling) and Swin's 2×2 patch merging.
// Each kernel is a gather over its output (every output element has exactly one source), so the backward of one is
// the other direction with no atomics.
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
