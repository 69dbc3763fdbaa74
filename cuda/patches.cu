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

// Patch merging (Backward false: y [B, H/2, W/2, 4C] from x [B, H, W, C]) and its backward. Channel block q = 0..3 of
// output cell (i, j) is pixel (2i + (q & 1), 2j + (q >> 1)) (timm's x0, x1, x2, x3): a (cell, q) per row of threads
// (threadIdx.y), its C channels across x. Launch: blocks (x, y) with x·y = 256, grid-stride over the B·(H/2)·(W/2)·4 rows.
template <bool Backward>
__device__ __forceinline__ void merge_rows(float* out, const float* in, int B, int H, int W, int C, int accumulate)
{
    int Ho = H / 2, Wo = W / 2;
    long long rows = (long long)B * Ho * Wo * 4;
    for (long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y; row < rows; row += (long long)gridDim.x * blockDim.y)
    {
        long long cell = row / 4, r = cell / Wo, b = r / Ho;
        int q = (int)(row - cell * 4), j = (int)(cell - r * Wo), i = (int)(r - b * Ho);
        long long pixel = (b * H + 2 * i + (q & 1)) * W + 2 * j + (q >> 1);
        const float* from = in + (Backward ? row : pixel) * C;
        float* to = out + (Backward ? pixel : row) * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) store(to + c, from[c], Backward ? accumulate : 0);
    }
}

extern "C" __global__ void patch_merge(float* y, const float* x, int B, int H, int W, int C)
{
    merge_rows<false>(y, x, B, H, W, C, 0);
}

extern "C" __global__ void patch_merge_backward(float* dx, const float* dy, int B, int H, int W, int C, int accumulate)
{
    merge_rows<true>(dx, dy, B, H, W, C, accumulate);
}
