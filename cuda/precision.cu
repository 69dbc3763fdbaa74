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

template <bool Bf16> __device__ __forceinline__ unsigned long long bits16(float x)
{
    return Bf16 ? to_bf16(x).bits : to_fp16(x).bits;
}

// y = x in 16-bit storage: four values per thread (one 16-byte load, one 8-byte store) when x and y are aligned for
// it, as whole tensors are; one per thread for an operand that starts inside a tensor, and for the last n mod 4.
template <bool Bf16> __device__ __forceinline__ void convert_to_16(unsigned short* y, const float* x, long long n)
{
    long long quads = (((unsigned long long)x & 15) | ((unsigned long long)y & 7)) == 0 ? n / 4 : 0;
    GRID_STRIDE(q, quads)
    {
        float4 v = ((const float4*)x)[q];
        ((unsigned long long*)y)[q] = bits16<Bf16>(v.x) | bits16<Bf16>(v.y) << 16 | bits16<Bf16>(v.z) << 32 | bits16<Bf16>(v.w) << 48;
    }
    GRID_STRIDE(i, n - 4 * quads) y[4 * quads + i] = (unsigned short)bits16<Bf16>(x[4 * quads + i]);
}

// y = x as bfloat16.
extern "C" __global__ void convert_to_bf16(bf16* y, const float* x, long long n)
{
    convert_to_16<true>((unsigned short*)y, x, n);
}

// y = x as IEEE half.
extern "C" __global__ void convert_to_fp16(fp16* y, const float* x, long long n)
{
    convert_to_16<false>((unsigned short*)y, x, n);
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
