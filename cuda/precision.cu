// precision.cu: mixed-precision conversions (the 16-bit types and their rounding are in common.cuh): rounding in place
// as floats (the emulated device's low-precision GEMMs, the conformance tests), converting GEMM operands to 16-bit
// storage for cuBLAS's tensor-core GEMMs, and widening 16-bit saved activations back to floats. 1-D grid-stride, 256
// threads, four values per thread where the pointers allow (grid_stride_quads; a whole tensor always does).
#include "common.cuh"

// y = x rounded to `precision` (0 fp32, 1 tf32, 2 bf16, 3 fp16), stored as float. y may alias x.
extern "C" __global__ void round_to_precision(float* y, const float* x, long long n, int precision)
{
    grid_stride_quads(n, aligned_for(y) && aligned_for(x), [&](long long i, int count) {
        float v[4];
        load_values(v, x, i, count);
        for (int k = 0; k < count; k++) v[k] = to_precision(v[k], precision);
        store_values(y, i, v, count, 0);
    });
}

// y = x in 16-bit storage (format 2 bf16, 3 fp16).
__device__ __forceinline__ void convert_to_16(unsigned short* y, const float* x, long long n, int format)
{
    grid_stride_quads(n, aligned_for(y, format) && aligned_for(x), [&](long long i, int count) {
        float v[4];
        load_values(v, x, i, count);
        store_halves(y, i, v, count, format);
    });
}

// y = x (16-bit storage, format 2 bf16, 3 fp16) as float.
__device__ __forceinline__ void convert_from_16(float* y, const unsigned short* x, long long n, int format)
{
    grid_stride_quads(n, aligned_for(y) && aligned_for(x, format), [&](long long i, int count) {
        float v[4];
        load_values(v, x, format, i, count);
        store_values(y, i, v, count, 0);
    });
}

// y = x as bfloat16.
extern "C" __global__ void convert_to_bf16(bf16* y, const float* x, long long n)
{
    convert_to_16((unsigned short*)y, x, n, 2);
}

// y = x as IEEE half.
extern "C" __global__ void convert_to_fp16(fp16* y, const float* x, long long n)
{
    convert_to_16((unsigned short*)y, x, n, 3);
}

// y = x (bfloat16) as float.
extern "C" __global__ void convert_from_bf16(float* y, const bf16* x, long long n)
{
    convert_from_16(y, (const unsigned short*)x, n, 2);
}

// y = x (IEEE half) as float.
extern "C" __global__ void convert_from_fp16(float* y, const fp16* x, long long n)
{
    convert_from_16(y, (const unsigned short*)x, n, 3);
}
