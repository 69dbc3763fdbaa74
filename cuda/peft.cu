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
// x is float32 or the Linear's input as it was kept, packed in 16 bits in the GEMMs' precision; dy likewise (the
// kernel's suffix says which are packed: x16, dy16). A float32 operand is rounded to the GEMMs' precision (0 fp32,
// 1 tf32, 2 bf16, 3 fp16) as it is read, as the dense product dyᵀ·x would read it. Rows wider than the tile
// (K > SPARSE_TILE) read x from global memory, a row at a time.
// A thread's loads go out in batches (SPARSE_STAGE values of a tile, SPARSE_ROWS rows of dy) before any is used, with
// indices clamped in bounds so that no load waits behind a branch, and the formats are template parameters
// (sparse_weight_grad_rows) so the loops hold no format switch: with one load in flight per thread, as before, the
// kernel waits on memory's latency rather than moving bytes.
#define SPARSE_ENTRIES 1024
#define SPARSE_TILE 8192
#define SPARSE_STAGE 8
#define SPARSE_ROWS 4

// Rows of x staged for the entries (one array for the four kernels below, as each block runs one of them).
__shared__ float sparse_tile[SPARSE_TILE];

template <bool XPacked, bool DyPacked>
__device__ __forceinline__ void sparse_weight_grad_rows(float* dvalues, float* partials, const void* dy, const void* x,
                                                        int precision, const int* index, int rows, int N, int K, int k)
{
    long long count = (long long)N * k;
    int o[4];
    int column[4];
    bool active[4];
    float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 4; i++)
    {
        long long e = (long long)blockIdx.x * SPARSE_ENTRIES + threadIdx.x + 256 * i;
        active[i] = e < count;
        o[i] = active[i] ? (int)(e / k) : 0; // an inactive entry reads row 0's dy and x (in bounds) and adds nothing
        column[i] = active[i] ? index[e] : 0;
    }
    int begin, end;
    column_slice(rows, begin, end);
    if (K > SPARSE_TILE) // rows wider than the tile (no ViT layer): x from global memory, a row at a time
        for (int r = begin; r < end; r++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (active[i])
                    s[i] += widen_stored<DyPacked>(load_stored<DyPacked>(dy, (long long)r * N + o[i]), precision) *
                            widen_stored<XPacked>(load_stored<XPacked>(x, (long long)r * K + column[i]), precision);
    // Rows a tile holds: whole groups of SPARSE_ROWS when that many fit (ViT-B/16's 768-wide rows: 8), else what fits.
    int tile_rows = K <= SPARSE_TILE ? SPARSE_TILE / K : 0;
    if (tile_rows >= SPARSE_ROWS) tile_rows -= tile_rows % SPARSE_ROWS;
    for (int r0 = begin; tile_rows > 0 && r0 < end; r0 += tile_rows)
    {
        // sparse_tile[j] = x[r0·K + j] for j < n·K: each thread loads its SPARSE_STAGE values (the last index repeated
        // past the end) before it stores any.
        int n = min(tile_rows, end - r0), size = n * K;
        const long long at = (long long)r0 * K;
        for (int j0 = threadIdx.x; j0 < size; j0 += SPARSE_STAGE * 256)
        {
            unsigned int v[SPARSE_STAGE];
#pragma unroll
            for (int u = 0; u < SPARSE_STAGE; u++) v[u] = load_stored<XPacked>(x, at + min(j0 + 256 * u, size - 1));
#pragma unroll
            for (int u = 0; u < SPARSE_STAGE; u++)
                if (j0 + 256 * u < size) sparse_tile[j0 + 256 * u] = widen_stored<XPacked>(v[u], precision);
        }
        __syncthreads();
        // SPARSE_ROWS rows at a time: their dy loads first (rows past n repeat the last), then the sums in row order.
        for (int r = 0; r < n; r += SPARSE_ROWS)
        {
            unsigned int d[SPARSE_ROWS][4];
#pragma unroll
            for (int u = 0; u < SPARSE_ROWS; u++)
#pragma unroll
                for (int i = 0; i < 4; i++) d[u][i] = load_stored<DyPacked>(dy, (r0 + min(r + u, n - 1)) * (long long)N + o[i]);
#pragma unroll
            for (int u = 0; u < SPARSE_ROWS; u++)
                if (r + u < n)
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        if (active[i]) s[i] += widen_stored<DyPacked>(d[u][i], precision) * sparse_tile[(r + u) * K + column[i]];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (active[i]) column_result(dvalues, partials, count, (long long)blockIdx.x * SPARSE_ENTRIES + threadIdx.x + 256 * i, s[i], 1.f, 1);
}

// The entry points, one per pair of operand formats, so each has the registers of its own loops (the four in one kernel
// took 90 at sm_90, each alone 72 to 80: three blocks of 256 threads per multiprocessor instead of two): float32 dy and
// x (no suffix), x in 16 bits (x16), dy in 16 bits (dy16), both (x16_dy16: GPS under bf16 or fp16 GEMMs). Written out,
// as attention.cu's are.
extern "C" __global__ void sparse_weight_grad(float* dvalues, float* partials, const void* dy, const void* x, int precision, const int* index, int rows, int N, int K, int k)
{
    sparse_weight_grad_rows<false, false>(dvalues, partials, dy, x, precision, index, rows, N, K, k);
}
extern "C" __global__ void sparse_weight_grad_x16(float* dvalues, float* partials, const void* dy, const void* x, int precision, const int* index, int rows, int N, int K, int k)
{
    sparse_weight_grad_rows<true, false>(dvalues, partials, dy, x, precision, index, rows, N, K, k);
}
extern "C" __global__ void sparse_weight_grad_dy16(float* dvalues, float* partials, const void* dy, const void* x, int precision, const int* index, int rows, int N, int K, int k)
{
    sparse_weight_grad_rows<false, true>(dvalues, partials, dy, x, precision, index, rows, N, K, k);
}
extern "C" __global__ void sparse_weight_grad_x16_dy16(float* dvalues, float* partials, const void* dy, const void* x, int precision, const int* index, int rows, int N, int K, int k)
{
    sparse_weight_grad_rows<true, true>(dvalues, partials, dy, x, precision, index, rows, N, K, k);
}
