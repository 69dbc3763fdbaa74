// activations.cu: exact GELU, y = x·Φ(x), its derivative, the Linear+GELU epilogue, and ReLU. Launch: 1-D grid-stride, 256
// threads, four values per thread where the pointers allow (grid_stride_quads).
#include "common.cuh"

// y = GELU(x); x float32 (format 0) or 16-bit (2 bf16, 3 fp16); y float32, or y16 in 16 bits (y_format 2, 3) when y16
// is not null (fc2's input computed again from fc1's kept 16-bit pre-activation).
extern "C" __global__ void gelu_forward(float* y, unsigned short* y16, int y_format, const void* x, int format, long long n)
{
    grid_stride_quads(n, aligned_for(y) && aligned_for(y16, y_format) && aligned_for(x, format), [&](long long i, int count) {
        float v[4];
        load_values(v, x, format, i, count);
        for (int k = 0; k < count; k++) v[k] = gelu(v[k]);
        if (y16) store_halves(y16, i, v, count, y_format);
        else store_values(y, i, v, count, 0);
    });
}

// The Linear+GELU epilogue after the GEMM: v = x[r, c] + bias[c] (no bias: null); the pre-activation the backward needs
// kept as h = v (float32) or h16 = v in 16 bits (as autocast keeps a Linear's output) when either is not null; then
// y = GELU(v), or y16 = GELU(v) in 16 bits when y16 is not null (an output only products read). format: the GEMMs'
// 16-bit format (2 bf16, 3 fp16), in which h16 and y16 are written and to which v is rounded before GELU (autocast's
// GELU reads the Linear's 16-bit output; gelu_forward from h16 gives y again), or 0 under fp32/tf32 GEMMs.
// x [rows, cols] may be y or h. 1-D grid-stride, four values of a row per thread when cols is a multiple of 4.
extern "C" __global__ void bias_gelu_forward(float* y, unsigned short* y16, float* h, unsigned short* h16, int format, const float* x,
                                             const float* bias, int rows, int cols)
{
    bool vector = cols % 4 == 0 && aligned_for(y) && aligned_for(y16, format) && aligned_for(h) && aligned_for(h16, format)
        && aligned_for(x) && aligned_for(bias);
    grid_stride_quads((long long)rows * cols, vector, [&](long long i, int count) {
        float v[4], b[4] = {0.f, 0.f, 0.f, 0.f};
        load_values(v, x, i, count);
        if (bias) load_values(b, bias, i % cols, count);
        for (int k = 0; k < count; k++) v[k] += b[k];
        if (h) store_values(h, i, v, count, 0);
        if (h16) store_halves(h16, i, v, count, format);
        for (int k = 0; k < count; k++) v[k] = gelu(to_precision(v[k], format));
        if (y16) store_halves(y16, i, v, count, format);
        else store_values(y, i, v, count, 0);
    });
}

// dx = dy · (Φ(x) + x·φ(x)); x float32 (format 0) or 16-bit (2 bf16, 3 fp16: LinearGelu's pre-activation as kept).
// dx16, when not null, gets dx in 16 bits too (copy_format 2 bf16, 3 fp16; dx written, not accumulated), or alone when
// dx is null.
extern "C" __global__ void gelu_backward(float* dx, unsigned short* dx16, int copy_format, const float* dy, const void* x, int format,
                                         long long n, int accumulate)
{
    bool vector = aligned_for(dx) && aligned_for(dx16, copy_format) && aligned_for(dy) && aligned_for(x, format);
    grid_stride_quads(n, vector, [&](long long i, int count) {
        float g[4], v[4];
        load_values(g, dy, i, count);
        load_values(v, x, format, i, count);
        for (int k = 0; k < count; k++) g[k] *= gelu_slope(v[k]);
        if (dx) store_values(dx, i, g, count, accumulate);
        if (dx16) store_halves(dx16, i, g, count, copy_format);
    });
}

// The backward of bias_gelu_forward's bias and GELU for a Linear whose products read their dy in 16 bits: dx = dy · (Φ(h)
// + h·φ(h)) [rows, cols], written in 16 bits only (dx16, format 2 bf16, 3 fp16), and dbias += Σ_r dx in float32: the
// values gelu_backward writes and the sums column_sum_strided takes of them (the same slices, the same order: bias_grad's
// bits), without the float32 dx written and read again. h float32 (hFormat 0) or 16-bit (LinearGelu's pre-activation
// as kept). Grid (ceil(cols/32), 1, slices), block (32, COLUMN_THREADS_Y), as column_sum_strided.
// Thread (x, y) takes rows y, y + 8, ... of its slice four at a time: their dy and h loads first (a row past the slice
// is its last row, loaded and not used), then the stores and sums in row order. A store before the next row's loads
// would hold those loads back (dx16 may alias dy or h as far as the compiler knows): one row in flight, not four.
// Capped at 32 registers from sm_80 (40 uncapped at sm_90, no spills capped): the 8 blocks a multiprocessor that the
// slices are cut for then fit at once, where 6 fitted and the rest ran as a third-full second wave.
template <bool HPacked>
__device__ __forceinline__ float bias_gelu_backward_rows(unsigned short* dx16, int format, const float* dy, const void* h, int hFormat,
                                                         int c, int cols, int begin, int end)
{
    float sum = 0.f;
    for (int r0 = begin + threadIdx.y; r0 < end; r0 += 4 * COLUMN_THREADS_Y)
    {
        float g[4];
        unsigned int hv[4];
#pragma unroll
        for (int u = 0; u < 4; u++)
        {
            long long i = (long long)min(r0 + u * COLUMN_THREADS_Y, end - 1) * cols + c;
            g[u] = dy[i];
            hv[u] = load_stored<HPacked>(h, i);
        }
#pragma unroll
        for (int u = 0; u < 4; u++)
            if (r0 + u * COLUMN_THREADS_Y < end)
            {
                float v[4] = {g[u] * gelu_slope(widen_stored<HPacked>(hv[u], hFormat)), 0.f, 0.f, 0.f};
                store_halves(dx16, (long long)(r0 + u * COLUMN_THREADS_Y) * cols + c, v, 1, format);
                sum += v[0];
            }
    }
    return sum;
}

extern "C" __global__ void LAUNCH_BOUNDS_FROM_SM80(256, 8) bias_gelu_backward(unsigned short* dx16, int format, float* dbias, float* partials, const float* dy, const void* h,
                                             int hFormat, int rows, int cols)
{
    int c = blockIdx.x * 32 + threadIdx.x;
    int begin, end;
    column_slice(rows, begin, end);
    float sum = c >= cols ? 0.f
              : hFormat != 0 ? bias_gelu_backward_rows<true>(dx16, format, dy, h, hFormat, c, cols, begin, end)
                             : bias_gelu_backward_rows<false>(dx16, format, dy, h, 0, c, cols, begin, end);
    float total = column_total(sum);
    if (threadIdx.y == 0 && c < cols) column_result(dbias, partials, cols, c, total, 1.f, 1);
}

// y = max(x, 0).
extern "C" __global__ void relu_forward(float* y, const float* x, long long n)
{
    grid_stride_quads(n, aligned_for(y) && aligned_for(x), [&](long long i, int count) {
        float v[4];
        load_values(v, x, i, count);
        for (int k = 0; k < count; k++) v[k] = v[k] > 0.f ? v[k] : 0.f;
        store_values(y, i, v, count, 0);
    });
}

// dx = dy where x > 0, else 0.
extern "C" __global__ void relu_backward(float* dx, const float* dy, const float* x, long long n, int accumulate)
{
    grid_stride_quads(n, aligned_for(dx) && aligned_for(dy) && aligned_for(x), [&](long long i, int count) {
        float g[4], v[4];
        load_values(g, dy, i, count);
        load_values(v, x, i, count);
        for (int k = 0; k < count; k++) g[k] = v[k] > 0.f ? g[k] : 0.f;
        store_values(dx, i, g, count, accumulate);
    });
}
