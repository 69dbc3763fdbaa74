// conv.cu: depthwise 2-D convolution, stride 1, zero padding, channels-last (ConvNeXt's 7×7).
// x [N, H, W, C]; w [C, k, k]; bias [C] or null; y [N, Ho, Wo, C] with Ho = H + 2·pad − k + 1.
// Consecutive threads take consecutive channels, so every load and store is coalesced.
#include "common.cuh"

// y[n, oy, ox, c] = bias[c] + Σ_{ky,kx} w[c, ky, kx] · x[n, oy+ky−pad, ox+kx−pad, c]. 1-D grid-stride.
extern "C" __global__ void depthwise_conv_forward(float* y, const float* x, const float* w, const float* bias, int N, int H,
                                                 int W, int C, int k, int pad)
{
    int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
    GRID_STRIDE(i, (long long)N * Ho * Wo * C)
    {
        int c = (int)(i % C);
        long long p = i / C;
        int ox = (int)(p % Wo), oy = (int)(p / Wo % Ho), n = (int)(p / ((long long)Wo * Ho));
        float s = bias ? bias[c] : 0.f;
        for (int ky = 0; ky < k; ky++)
        {
            int iy = oy + ky - pad;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < k; kx++)
            {
                int ix = ox + kx - pad;
                if (ix < 0 || ix >= W) continue;
                s += w[(c * k + ky) * k + kx] * x[(((long long)n * H + iy) * W + ix) * C + c];
            }
        }
        y[i] = s;
    }
}

// dx[n, iy, ix, c] = Σ_{ky,kx} w[c, ky, kx] · dy[n, iy−ky+pad, ix−kx+pad, c] (a gather: no atomics). 1-D grid-stride.
extern "C" __global__ void depthwise_conv_backward_input(float* dx, const float* dy, const float* w, int N, int H, int W, int C,
                                                        int k, int pad, int accumulate)
{
    int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
    GRID_STRIDE(i, (long long)N * H * W * C)
    {
        int c = (int)(i % C);
        long long p = i / C;
        int ix = (int)(p % W), iy = (int)(p / W % H), n = (int)(p / ((long long)W * H));
        float s = 0.f;
        for (int ky = 0; ky < k; ky++)
        {
            int oy = iy - ky + pad;
            if (oy < 0 || oy >= Ho) continue;
            for (int kx = 0; kx < k; kx++)
            {
                int ox = ix - kx + pad;
                if (ox < 0 || ox >= Wo) continue;
                s += w[(c * k + ky) * k + kx] * dy[(((long long)n * Ho + oy) * Wo + ox) * C + c];
            }
        }
        store(dx + i, s, accumulate);
    }
}

// dw[c, tap] += Σ_positions dy · x(shifted by the tap); dbias[c] += Σ dy. Grid (ceil(C/32), k·k + 1): blockIdx.y is
// the tap, the last one the bias. Block (32, 8): a column sum over the N·Ho·Wo output positions.
extern "C" __global__ void depthwise_conv_backward_params(float* dw, float* dbias, const float* dy, const float* x, int N, int H,
                                                         int W, int C, int k, int pad)
{
    int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1, tap = blockIdx.y;
    int c = blockIdx.x * 32 + threadIdx.x;
    bool isBias = tap == k * k;
    float* out = isBias ? dbias : dw;
    if (!out) return; // uniform over the block
    int ky = tap / k, kx = tap % k;
    float total = column_sum(N * Ho * Wo, c < C, [&](int r) {
        float g = dy[(long long)r * C + c];
        if (isBias) return g;
        int ox = r % Wo, oy = r / Wo % Ho, n = r / (Wo * Ho), iy = oy + ky - pad, ix = ox + kx - pad;
        return (iy < 0 || iy >= H || ix < 0 || ix >= W) ? 0.f : g * x[(((long long)n * H + iy) * W + ix) * C + c];
    });
    if (threadIdx.y == 0 && c < C) out[isBias ? c : c * k * k + tap] += total;
}
