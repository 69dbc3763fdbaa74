// elementwise.cu: fill, copy (plain, accumulating, strided view), scale, add, bias add and the column sums
// (bias gradient, class-token gradient, mean over tokens). Launch: 1-D grid-stride, 256 threads; column
// kernels use (32, 8) blocks with one block column per 32 output columns.
#include "common.cuh"

extern "C" __global__ void fill(float* x, long long n, float value)
{
    GRID_STRIDE(i, n) x[i] = value;
}

// dst = src, or dst += src. Vectorised by four when both pointers are 16-byte aligned and n divisible by 4.
extern "C" __global__ void copy(float* dst, const float* src, long long n, int accumulate)
{
    bool vector = ((unsigned long long)dst % 16 == 0) && ((unsigned long long)src % 16 == 0) && n % 4 == 0;
    if (vector)
    {
        float4* d = (float4*)dst;
        const float4* s = (const float4*)src;
        GRID_STRIDE(i, n / 4)
        {
            float4 v = s[i];
            if (accumulate)
            {
                float4 o = d[i];
                v.x += o.x; v.y += o.y; v.z += o.z; v.w += o.w;
            }
            d[i] = v;
        }
        return;
    }
    GRID_STRIDE(i, n) store(dst + i, src[i], accumulate);
}

// A strided view of at most 8 dimensions, passed by value (shape and strides in elements).
struct StridedLayout
{
    int rank;
    int shape[8];
    long long strides[8];
};

// dst[flat(idx)] = src[Σ idx_d · strides_d] for every index of the view; dst is contiguous.
extern "C" __global__ void copy_strided(float* dst, const float* src, long long n, StridedLayout layout)
{
    GRID_STRIDE(i, n)
    {
        long long rest = i, offset = 0;
        for (int d = layout.rank - 1; d >= 0; d--)
        {
            offset += rest % layout.shape[d] * layout.strides[d];
            rest /= layout.shape[d];
        }
        dst[i] = src[offset];
    }
}

extern "C" __global__ void scale(float* x, long long n, float s)
{
    GRID_STRIDE(i, n) x[i] *= s;
}

// y = a + b (y may alias a or b).
extern "C" __global__ void add(float* y, const float* a, const float* b, long long n)
{
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

// y[r, c] = x[r, c] + bias[c]; x, y [rows, cols].
extern "C" __global__ void add_bias(float* y, const float* x, const float* bias, int rows, int cols)
{
    GRID_STRIDE(i, (long long)rows * cols) y[i] = x[i] + bias[i % cols];
}

// out[b, c] = scale · Σ_r in[b·batchStride + r·rowStride + c] (or +=); grid (ceil(cols/32), batches, row slices),
// block (32, 8); with row slices, partials [slices, batches·cols] and column_partials_sum finish it.
// Bias gradient: one batch, rowStride = cols, accumulate. Mean over tokens: B batches of T rows, scale 1/T.
extern "C" __global__ void column_sum_strided(float* out, float* partials, const float* in, int rows, int cols,
                                              long long rowStride, long long batchStride, float scale, int accumulate)
{
    int c = blockIdx.x * 32 + threadIdx.x;
    const float* base = in + blockIdx.y * batchStride + c;
    float total = column_sum(rows, c < cols, [&](int r) { return base[(long long)r * rowStride]; });
    if (threadIdx.y == 0 && c < cols)
        column_result(out, partials, (long long)gridDim.y * cols, (long long)blockIdx.y * cols + c, total, scale, accumulate);
}

// out[i] = scale · Σ_s partials[s·count + i] (or +=), the slices added in order: the second stage of a column
// reduction whose rows were cut into slices (deterministic). Launch: 1-D grid-stride.
extern "C" __global__ void column_partials_sum(float* out, const float* partials, long long count, int slices, float scale,
                                               int accumulate)
{
    GRID_STRIDE(i, count)
    {
        float total = 0.f;
        for (int s = 0; s < slices; s++) total += partials[s * count + i];
        store(out + i, scale * total, accumulate);
    }
}
