// peft.cu: SCT's salient-channel gather and scatter-add, and GPS's sparse weight gradient (Adam on the selected
// entries is in optimizer.cu). Shapes: x, y [rows, C]; gathered z [rows, K]; index [K] distinct channels.
// Launch: 1-D grid-stride, 256 threads.
#include "common.cuh"

// y[r, j] (+)= x[r, index[j]].
extern "C" __global__ void gather_channels(float* y, const float* x, const int* index, int rows, int C, int K, int accumulate)
{
    GRID_STRIDE(i, (long long)rows * K)
    {
        long long r = i / K;
        store(y + i, x[r * C + index[i % K]], accumulate);
    }
}

// y[r, index[j]] = x[r, index[j]] + z[r, j] + bias[j]: only the K selected channels are visited. When y is not x, the
// host copies x into y first (CudaKernels.ScatterAddChannels), so the other channels pass through unchanged.
extern "C" __global__ void scatter_add_channels(float* y, const float* x, const float* z, const float* bias, const int* index,
                                               int rows, int C, int K)
{
    GRID_STRIDE(i, (long long)rows * K)
    {
        int j = (int)(i % K);
        long long at = i / K * C + index[j];
        y[at] = x[at] + z[i] + (bias ? bias[j] : 0.f);
    }
}

// dvalues[o, j] += Σ_r dy[r, o] · x[r, index[o, j]]: the selected entries of dW for y = x·Wᵀ. One thread per
// selected entry, summing over tokens in order (deterministic); consecutive threads read consecutive dy columns.
extern "C" __global__ void sparse_weight_grad(float* dvalues, const float* dy, const float* x, const int* index,
                                             int rows, int N, int K, int k)
{
    GRID_STRIDE(e, (long long)N * k)
    {
        long long o = e / k;
        int column = index[e];
        float s = 0.f;
        for (long long r = 0; r < rows; r++) s += dy[r * N + o] * x[r * K + column];
        dvalues[e] += s;
    }
}
