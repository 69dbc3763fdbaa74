// elementwise.cu: fill, copy (plain, accumulating, strided view), scale, add, bias add and the column sums
// (bias gradient, class-token gradient, mean over tokens). Launch: 1-D grid-stride, 256 threads, four values per thread
// where the pointers allow (grid_stride_quads); column kernels use (32, 8) blocks with one block column per 32 output
// columns.
#include "common.cuh"

extern "C" __global__ void fill(float* x, long long n, float value)
{
    float v[4] = {value, value, value, value};
    grid_stride_quads(n, aligned_for(x), [&](long long i, int count) { store_values(x, i, v, count, 0); });
}

// The tensors of one fill_many launch: x[j] holds n[j] floats (j < gridDim.y).
struct FillTargets
{
    float* x[TENSORS_PER_LAUNCH];
    long long n[TENSORS_PER_LAUNCH];
};

// x[j][i] = value for every tensor j of the launch (zeroing many small gradients in one launch). Grid (blocks per
// tensor, tensors).
extern "C" __global__ void fill_many(FillTargets t, float value)
{
    float* x = t.x[blockIdx.y];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < t.n[blockIdx.y]; i += (long long)gridDim.x * blockDim.x)
        x[i] = value;
}

// dst = src, or dst += src.
extern "C" __global__ void copy(float* dst, const float* src, long long n, int accumulate)
{
    grid_stride_quads(n, aligned_for(dst) && aligned_for(src), [&](long long i, int count) {
        float v[4];
        load_values(v, src, i, count);
        store_values(dst, i, v, count, accumulate);
    });
}

// A strided view of at most 8 dimensions, passed by value (shape and strides in elements).
struct StridedLayout
{
    int rank;
    int shape[8];
    long long strides[8];
};

// dst[flat(idx)] = src[Σ idx_d · strides_d] for every index of the view; dst is contiguous. The loop over dims is
// unrolled to all 8 with the unused ones skipped: indexed by a run-time dim, the layout was copied to local memory.
extern "C" __global__ void copy_strided(float* dst, const float* src, long long n, StridedLayout layout)
{
    GRID_STRIDE(i, n)
    {
        long long rest = i, offset = 0;
#pragma unroll
        for (int d = 7; d >= 0; d--)
        {
            if (d >= layout.rank) continue;
            offset += rest % layout.shape[d] * layout.strides[d];
            rest /= layout.shape[d];
        }
        dst[i] = src[offset];
    }
}

extern "C" __global__ void scale(float* x, long long n, float s)
{
    grid_stride_quads(n, aligned_for(x), [&](long long i, int count) {
        float v[4];
        load_values(v, x, i, count);
        for (int k = 0; k < count; k++) v[k] *= s;
        store_values(x, i, v, count, 0);
    });
}

// y = a + b (y may alias a or b).
extern "C" __global__ void add(float* y, const float* a, const float* b, long long n)
{
    grid_stride_quads(n, aligned_for(y) && aligned_for(a) && aligned_for(b), [&](long long i, int count) {
        float u[4], v[4];
        load_values(u, a, i, count);
        load_values(v, b, i, count);
        for (int k = 0; k < count; k++) u[k] += v[k];
        store_values(y, i, u, count, 0);
    });
}

// y[r, c] = x[r, c] + bias[c], then residual[r, c] + that when residual is not null (a Linear layer whose output joins a
// residual stream: the add after it, in the same pass); x, y, residual [rows, cols]; four values of a row per thread
// when cols is a multiple of 4. y16, when not null, gets y instead, in 16 bits (format 2 bf16, 3 fp16): an output only
// products read.
extern "C" __global__ void add_bias(float* y, unsigned short* y16, int format, const float* x, const float* bias, const float* residual,
                                    int rows, int cols)
{
    bool vector = cols % 4 == 0 && aligned_for(y) && aligned_for(y16, format) && aligned_for(x) && aligned_for(bias) && aligned_for(residual);
    grid_stride_quads((long long)rows * cols, vector, [&](long long i, int count) {
        float v[4], b[4];
        load_values(v, x, i, count);
        load_values(b, bias, i % cols, count);
        for (int k = 0; k < count; k++) v[k] += b[k];
        if (residual)
        {
            load_values(b, residual, i, count);
            for (int k = 0; k < count; k++) v[k] = b[k] + v[k];
        }
        if (y16) store_halves(y16, i, v, count, format);
        else store_values(y, i, v, count, 0);
    });
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

// out[i] = scale · Σ_s partials[s·count + i] (or +=), and, when out2 is not null, out2[i] likewise from partials2
// [slices, count2]: the second stage of one or two column reductions whose rows were cut into slices (a LayerNorm's
// dweight and dbias in one launch), the slices added in order (deterministic). Launch: 1-D grid-stride over count
// (+ count2).
extern "C" __global__ void column_partials_sum(float* out, const float* partials, long long count, float* out2, const float* partials2,
                                               long long count2, int slices, float scale, int accumulate)
{
    GRID_STRIDE(i, count + (out2 ? count2 : 0))
    {
        bool second = i >= count;
        long long at = second ? i - count : i, stride = second ? count2 : count;
        const float* p = (second ? partials2 : partials) + at;
        float total = 0.f;
        for (int s = 0; s < slices; s++) total += p[s * stride];
        store((second ? out2 : out) + at, scale * total, accumulate);
    }
}
