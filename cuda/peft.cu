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

// dvalues[o,j] += dense[o·K + index[o,j]]: one thread per selected entry.
extern "C" __global__ void add_selected_entries(float* dvalues, const float* dense, const int* index, int N, int K, int k)
{
    GRID_STRIDE(e, (long long)N * k) dvalues[e] += dense[e / k * K + index[e]];
}

// dvalues[o, j] += Σ_r dy[r, o] · x[r, index[o, j]]: the selected entries of dW for y = x·Wᵀ. A column reduction
// over tokens for 32 selected entries per (32, 8) block (as the bias gradient): consecutive threads read consecutive
// dy columns (for k = 1), the eight partial sums are added in a fixed order (deterministic). Grid (ceil(N·k/32), 1,
// row slices); with row slices, partials [slices, N·k] for column_partials_sum. x is float32 (format 0) or the Linear's
// input as it was kept, packed in bf16 (2) or fp16 (3); dy likewise (dy_format). Each operand is rounded to the GEMMs'
// precision (0 fp32, 1 tf32, 2 bf16, 3 fp16) as it is read, as the dense product dyᵀ·x would read it (a no-op for
// packed values).
extern "C" __global__ void sparse_weight_grad(float* dvalues, float* partials, const void* dy, int dy_format, const void* x, int format,
                                             int precision, const int* index, int rows, int N, int K, int k)
{
    long long e = (long long)blockIdx.x * 32 + threadIdx.x;
    bool active = e < (long long)N * k;
    long long o = active ? e / k : 0;
    int column = active ? index[e] : 0;
    float s = column_sum(rows, active, [&](int r) {
        return to_precision(load_operand(dy, dy_format, (long long)r * N + o), precision)
             * to_precision(load_operand(x, format, (long long)r * K + column), precision);
    });
    if (threadIdx.y == 0 && active) column_result(dvalues, partials, (long long)N * k, e, s, 1.f, 1);
}
