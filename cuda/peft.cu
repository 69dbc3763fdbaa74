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

// dvalues[o, j] += Σ_r dy[r, o] · x[r, index[o, j]]: the selected entries of dW for y = x·Wᵀ. A block of 256 threads
// owns SPARSE_ENTRIES consecutive entries (up to four a thread: e, e + 256, ...) and one slice of the rows (grid
// (ceil(N·k / SPARSE_ENTRIES), 1, slices)). It stages whole rows of x in shared memory, read once per block with
// coalesced loads, and each thread takes its entries' x values from there: reading x[r, index[e]] from global memory
// instead moves a 32-byte sector for each 2- or 4-byte value (an entry's column is anywhere in the row), which made
// the reduction L2-bound. dy[r, o] is read directly (consecutive entries, consecutive o for k = 1: coalesced). Each
// entry sums its rows in order; with row slices, partials [slices, N·k] go to column_partials_sum (deterministic).
// x is float32 (format 0) or the Linear's input as it was kept, packed in bf16 (2) or fp16 (3); dy likewise
// (dy_format). Each operand is rounded to the GEMMs' precision (0 fp32, 1 tf32, 2 bf16, 3 fp16) as it is read, as the
// dense product dyᵀ·x would read it (a no-op for packed values). Rows wider than the tile (K > SPARSE_TILE) read x
// from global memory.
#define SPARSE_ENTRIES 1024
#define SPARSE_TILE 8192
extern "C" __global__ void sparse_weight_grad(float* dvalues, float* partials, const void* dy, int dy_format, const void* x, int format,
                                             int precision, const int* index, int rows, int N, int K, int k)
{
    __shared__ float tile[SPARSE_TILE];
    long long count = (long long)N * k;
    long long o[4];
    int column[4];
    bool active[4];
    float s[4] = {0.f, 0.f, 0.f, 0.f};
    for (int i = 0; i < 4; i++)
    {
        long long e = (long long)blockIdx.x * SPARSE_ENTRIES + threadIdx.x + 256 * i;
        active[i] = e < count;
        o[i] = active[i] ? e / k : 0;
        column[i] = active[i] ? index[e] : 0;
    }
    int begin, end;
    column_slice(rows, begin, end);
    int tile_rows = K <= SPARSE_TILE ? SPARSE_TILE / K : 0;
    for (int r0 = begin; r0 < end; r0 += tile_rows > 0 ? tile_rows : 1)
    {
        int n = tile_rows > 0 ? min(tile_rows, end - r0) : 1;
        if (tile_rows > 0)
        {
            for (int j = threadIdx.x; j < n * K; j += blockDim.x)
                tile[j] = to_precision(load_operand(x, format, (long long)r0 * K + j), precision);
            __syncthreads();
        }
        for (int r = 0; r < n; r++)
            for (int i = 0; i < 4; i++)
                if (active[i])
                {
                    float xv = tile_rows > 0 ? tile[r * K + column[i]]
                                             : to_precision(load_operand(x, format, (long long)(r0 + r) * K + column[i]), precision);
                    s[i] += to_precision(load_operand(dy, dy_format, (long long)(r0 + r) * N + o[i]), precision) * xv;
                }
        if (tile_rows > 0) __syncthreads();
    }
    for (int i = 0; i < 4; i++)
        if (active[i]) column_result(dvalues, partials, count, (long long)blockIdx.x * SPARSE_ENTRIES + threadIdx.x + 256 * i, s[i], 1.f, 1);
}
