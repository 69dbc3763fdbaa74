// patches.cu: patch layouts. Patchify (ViT patch embedding, strided downsampling) and Swin's 2×2 patch merging.
// Each kernel is a gather over its output (every output element has exactly one source), so the backward of one is
// the other direction with no atomics.
#include "common.cuh"

// Offset of a patch's element inner = c·p·p + ky·p + kx from the patch's top-left value in x (NCHW, or NHWC when
// channelsLast). P > 0: the patch size known when compiled (the divisions become shifts); 0: p at run time.
template <int P>
__device__ __forceinline__ long long patch_inner_offset(int inner, int p, int C, int H, int W, int channelsLast)
{
    const int q = P > 0 ? P : p, pp = q * q;
    int c = inner / pp, rest = inner - c * pp, ky = rest / q, kx = rest - ky * q;
    return channelsLast ? ((long long)ky * W + kx) * C + c : ((long long)c * H + ky) * W + kx;
}

// Patchify and its backward over patches [N, (H/p)·(W/p), C·p·p]: a patch per row of threads (threadIdx.y), its
// C·p·p values across x, so a patch's position in the image is found once per patch and each value costs no 64-bit
// division. Backward: each pixel of a patch receives its gradient once (store: written or added); pixels beyond the
// last whole patch are left untouched. Launch: blocks (x, y) with x·y = 256, grid-stride over patches.
template <int P, bool Backward>
__device__ __forceinline__ void patchify_rows(float* out, const float* in, int N, int C, int H, int W, int p, int channelsLast, int accumulate)
{
    int Hp = H / p, Wp = W / p, K = C * p * p;
    long long patches = (long long)N * Hp * Wp;
    for (long long patch = (long long)blockIdx.x * blockDim.y + threadIdx.y; patch < patches; patch += (long long)gridDim.x * blockDim.y)
    {
        long long row = patch / Wp, n = row / Hp;
        int px = (int)(patch - row * Wp), py = (int)(row - n * Hp);
        long long corner = channelsLast ? ((n * H + (long long)py * p) * W + (long long)px * p) * C
                                        : (n * C * H + (long long)py * p) * W + (long long)px * p;
        for (int inner = threadIdx.x; inner < K; inner += blockDim.x)
        {
            long long at = corner + patch_inner_offset<P>(inner, p, C, H, W, channelsLast), i = patch * K + inner;
            if (Backward) store(out + at, in[i], accumulate);
            else out[i] = in[at];
        }
    }
}

template <bool Backward>
__device__ __forceinline__ void patchify_any(float* out, const float* in, int N, int C, int H, int W, int p, int channelsLast, int accumulate)
{
    switch (p)
    {
    case 2: patchify_rows<2, Backward>(out, in, N, C, H, W, p, channelsLast, accumulate); break;   // ConvNeXt's downsampling
    case 4: patchify_rows<4, Backward>(out, in, N, C, H, W, p, channelsLast, accumulate); break;   // ConvNeXt's and Swin's stems
    case 16: patchify_rows<16, Backward>(out, in, N, C, H, W, p, channelsLast, accumulate); break; // ViT-B/16
    default: patchify_rows<0, Backward>(out, in, N, C, H, W, p, channelsLast, accumulate); break;
    }
}

extern "C" __global__ void patchify(float* patches, const float* x, int N, int C, int H, int W, int p, int channelsLast)
{
    patchify_any<false>(patches, x, N, C, H, W, p, channelsLast, 0);
}

extern "C" __global__ void patchify_backward(float* dx, const float* dpatches, int N, int C, int H, int W, int p,
                                            int channelsLast, int accumulate)
{
    patchify_any<true>(dx, dpatches, N, C, H, W, p, channelsLast, accumulate);
}

// Patch merging. Launch: 1-D grid-stride, 256 threads.
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
