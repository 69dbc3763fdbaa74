// common.cuh: helpers shared by every kernel family. Compiles under NVRTC (the GPU) and under g++ with
// emu/cuemu.h (the emulated device in CI), so nothing here may need a CUDA header or the C++ library.
#pragma once
#ifdef __CUEMU__
#include "emu/cuemu.h"
#endif

#define FULL_MASK 0xffffffffu

// Grid-stride loop over [0, n): the grid is sized to the device (a few blocks per multiprocessor), not to n.
#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// Rows spread over the warps of the grid: one warp owns a row (LayerNorm, softmax, cross-entropy).
#define WARP_PER_ROW(row, rows)                                                                          \
    for (long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32; row < (rows);          \
         row += (long long)gridDim.x * blockDim.x / 32)

template <class T> __device__ __forceinline__ T warp_sum(T v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

// Sum over all threads of a 1-D block (blockDim.x a multiple of 32, at most 1024); the result is valid in
// thread 0. Fixed order, so deterministic. Ends with a barrier so it can be called again.
template <class T> __device__ T block_sum(T v)
{
    __shared__ T partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    T total = 0;
    if (threadIdx.x == 0)
        for (int w = 0; w < warps; w++) total += partial[w];
    __syncthreads();
    return total;
}

// Column reduction for a (32, ROWS_PER_BLOCK) block: thread (x, y) sums term(r) over rows r = y, y + 8, ...
// for its column; the eight partial sums are then added in a fixed order. Valid in threadIdx.y == 0.
#define COLUMN_THREADS_Y 8
template <class F> __device__ float column_sum(int rows, bool active, F term)
{
    __shared__ float partial[COLUMN_THREADS_Y][33];
    float s = 0.f;
    if (active)
        for (int r = threadIdx.y; r < rows; r += COLUMN_THREADS_Y) s += term(r);
    partial[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    float total = 0.f;
    if (threadIdx.y == 0)
        for (int k = 0; k < COLUMN_THREADS_Y; k++) total += partial[k][threadIdx.x];
    __syncthreads();
    return total;
}

// Writes or accumulates one output element (the kernel contract's `accumulate` flag).
__device__ __forceinline__ void store(float* p, float v, int accumulate) { *p = accumulate ? *p + v : v; }

// Counter-based uniform in [0, 1): SplitMix64's finaliser of (seed, counter), the top 24 bits. Bit-identical
// to Engine.Kernels.CounterRng, so every backend draws the same dropout masks.
__device__ __forceinline__ float counter_uniform(unsigned long long seed, unsigned long long counter)
{
    unsigned long long z = seed + (counter + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}
