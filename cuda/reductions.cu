// reductions.cu: whole-tensor reductions returned to the host: Σ x² in double (global gradient norm) and the
// count of NaN/±Inf elements (divergence check). Two stages, both deterministic: a fixed grid of 256-thread
// blocks writes one partial each, then one block adds the partials in order.
#include "common.cuh"

extern "C" __global__ void sum_squares_partial(double* partials, const float* x, long long n)
{
    double s = 0.0;
    GRID_STRIDE(i, n) s += (double)x[i] * x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

extern "C" __global__ void count_nonfinite_partial(double* partials, const float* x, long long n)
{
    double count = 0.0;
    GRID_STRIDE(i, n) count += isfinite(x[i]) ? 0.0 : 1.0;
    count = block_sum(count);
    if (threadIdx.x == 0) partials[blockIdx.x] = count;
}

// out[0] = Σ partials[0..count) (one block).
extern "C" __global__ void sum_partials(double* out, const double* partials, int count)
{
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) s += partials[i];
    s = block_sum(s);
    if (threadIdx.x == 0) out[0] = s;
}
