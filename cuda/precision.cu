// precision.cu: mixed-precision conversions (the 16-bit types and their rounding are in common.cuh): rounding in place
// as floats (the emulated device's low-precision GEMMs, the conformance tests), converting GEMM operands to 16-bit
// storage for cuBLAS's tensor-core GEMMs, and widening 16-bit saved activations back to floats. 1-D grid-stride, 256
// threads.
#include "common.cuh"

// y = x rounded to `precision` (0 fp32, 1 tf32, 2 bf16, 3 fp16), stored as float. y may alias x.
extern "C" __global__ void round_to_precision(float* y, const float* x, long long n, int precision)
{
    GRID_STRIDE(i, n) y[i] = to_precision(x[i], precision);
}

// y = x as bfloat16.
extern "C" __global__ void convert_to_bf16(bf16* y, const float* x, long long n)
{
    GRID_STRIDE(i, n) y[i] = to_bf16(x[i]);
}

// y = x as IEEE half.
extern "C" __global__ void convert_to_fp16(fp16* y, const float* x, long long n)
{
    GRID_STRIDE(i, n) y[i] = to_fp16(x[i]);
}

// y = x (bfloat16) as float.
extern "C" __global__ void convert_from_bf16(float* y, const bf16* x, long long n)
{
    GRID_STRIDE(i, n) y[i] = from_bf16(x[i]);
}

// y = x (IEEE half) as float.
extern "C" __global__ void convert_from_fp16(float* y, const fp16* x, long long n)
{
    GRID_STRIDE(i, n) y[i] = from_fp16(x[i]);
}
