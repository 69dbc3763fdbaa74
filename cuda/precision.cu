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

// The tensors of one convert_to_16_many launch: tensor j (j < count) converts n[j] floats at x[j] into y[j]; its
// chunks of PACK_CHUNK values are numbered from first_chunk[j] on (first_chunk[count]: the launch's chunks).
#define PACK_CHUNK 4096
struct PackTargets
{
    const float* x[TENSORS_PER_LAUNCH];
    unsigned short* y[TENSORS_PER_LAUNCH];
    long long n[TENSORS_PER_LAUNCH];
    long long first_chunk[TENSORS_PER_LAUNCH + 1];
};

// y[j] = x[j] in 16-bit storage (format 2 bf16, 3 fp16) for every tensor of the launch: a training step's weights,
// converted once for all of its products in one launch instead of one per product. The blocks take the chunks in
// turn, so tensors of any sizes share the device evenly; a chunk converts four values a thread at a time where its
// tensor's pointers allow (a chunk starts at a multiple of PACK_CHUNK, so its quads stay aligned). 256 threads.
extern "C" __global__ void convert_to_16_many(PackTargets t, int count, int format)
{
    for (long long c = blockIdx.x; c < t.first_chunk[count]; c += gridDim.x)
    {
        int j = 0;
        while (c >= t.first_chunk[j + 1]) j++;
        long long start = (c - t.first_chunk[j]) * PACK_CHUNK;
        long long n = min((long long)PACK_CHUNK, t.n[j] - start);
        const float* x = t.x[j] + start;
        unsigned short* y = t.y[j] + start;
        bool vector = aligned_for(y, format) && aligned_for(x);
        if (vector && n == PACK_CHUNK && blockDim.x == PACK_CHUNK / 16)
        {
            // A whole chunk: each thread's four quads loaded together, then stored (four 16-byte loads in flight).
            float v[4][4];
            for (int r = 0; r < 4; r++) load_values(v[r], x, 4 * (threadIdx.x + r * (PACK_CHUNK / 16)), 4);
            for (int r = 0; r < 4; r++) store_halves(y, 4 * (threadIdx.x + r * (PACK_CHUNK / 16)), v[r], 4, format);
            continue;
        }
        long long quads = vector ? n / 4 : 0;
        for (long long q = threadIdx.x; q < quads; q += blockDim.x)
        {
            float v[4];
            load_values(v, x, 4 * q, 4);
            store_halves(y, 4 * q, v, 4, format);
        }
        for (long long i = 4 * quads + threadIdx.x; i < n; i += blockDim.x)
        {
            float v[4];
            load_values(v, x, i, 1);
            store_halves(y, i, v, 1, format);
        }
    }
}
