// softmax.cu: row softmax, optionally with an additive attention bias and mask (Swin), and its backward.
// One warp per row (256-thread blocks). y may alias x.
#include "common.cuh"

// Rows up to 32·SOFTMAX_LANE_VALUES wide (attention's 197 and 49 tokens) stay in registers: x read once, y written once.
#define SOFTMAX_LANE_VALUES 8

// Where row r's bias and mask rows start (null: none), r = (b·heads + h)·headRows + i, w = b mod windows.
__device__ __forceinline__ void softmax_extras(long long row, const float* bias, const float* mask, int cols, int headRows, int heads,
                                               int windows, const float*& br, const float*& mr)
{
    br = mr = nullptr;
    if (!bias && !mask) return; // the divisions cost as much as a row's arithmetic: only where a bias or mask needs them
    long long i = row % headRows, bh = row / headRows, h = bh % heads, w = bh / heads % windows;
    if (bias) br = bias + (h * headRows + i) * cols;
    if (mask) mr = mask + (w * headRows + i) * cols;
}

// A register row's values: lane's columns lane, lane + 32, ... (−∞ past the row's end).
__device__ __forceinline__ void softmax_load(float v[SOFTMAX_LANE_VALUES], const float* x, const float* bias, const float* mask,
                                             long long row, int cols, int headRows, int heads, int windows, int lane)
{
    const float *br, *mr;
    softmax_extras(row, bias, mask, cols, headRows, heads, windows, br, mr);
    const float* xr = x + row * cols;
#pragma unroll
    for (int k = 0; k < SOFTMAX_LANE_VALUES; k++)
    {
        int j = lane + 32 * k;
        v[k] = j < cols ? xr[j] + (br ? br[j] : 0.f) + (mr ? mr[j] : 0.f) : __int_as_float(0xff800000);
    }
}

// y[r] = softmax(x[r] + bias[h, i] + mask[w, i]) with r = (b·heads + h)·headRows + i and w = b mod windows; y16, when not
// null, gets y in 16 bits too (copy_format 2 bf16, 3 fp16: the P·v product's operand), or alone when y is null (x is then
// scratch for wide rows). Plain softmax: headRows = rows, heads = windows = 1, no bias or mask. Both paths do the same
// operations in the same order (the same bits); wide rows go through y (or x) three times. A warp loads its next
// register row before it finishes the current one (its max, exponentials and sums), so the loads of two rows overlap.
extern "C" __global__ void softmax_forward(float* y, unsigned short* y16, int copy_format, const float* x, const float* bias,
                                          const float* mask, long long rows, int cols, int headRows, int heads, int windows)
{
    int lane = threadIdx.x % 32;
    const float minus_infinity = __int_as_float(0xff800000);
    long long first = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32, stride = (long long)gridDim.x * blockDim.x / 32;
    if (cols <= 32 * SOFTMAX_LANE_VALUES)
    {
        float v[SOFTMAX_LANE_VALUES], next[SOFTMAX_LANE_VALUES];
        if (first < rows) softmax_load(v, x, bias, mask, first, cols, headRows, heads, windows, lane);
        for (long long row = first; row < rows; row += stride)
        {
            bool more = row + stride < rows;
            if (more) softmax_load(next, x, bias, mask, row + stride, cols, headRows, heads, windows, lane);
            float m = minus_infinity;
#pragma unroll
            for (int k = 0; k < SOFTMAX_LANE_VALUES; k++) m = fmaxf(m, v[k]);
            m = warp_max(m);
            float s = 0.f;
#pragma unroll
            for (int k = 0; k < SOFTMAX_LANE_VALUES; k++)
                if (lane + 32 * k < cols)
                {
                    v[k] = expf(v[k] - m);
                    s += v[k];
                }
            float inv = 1.f / warp_sum(s);
#pragma unroll
            for (int k = 0; k < SOFTMAX_LANE_VALUES; k++)
            {
                if (lane + 32 * k < cols)
                {
                    float q = v[k] * inv;
                    if (y) y[row * cols + lane + 32 * k] = q;
                    if (y16) y16[row * cols + lane + 32 * k] = copy_format == 3 ? to_fp16(q).bits : to_bf16(q).bits;
                }
                if (more) v[k] = next[k];
            }
        }
        return;
    }
    WARP_PER_ROW(row, rows)
    {
        const float *br, *mr;
        softmax_extras(row, bias, mask, cols, headRows, heads, windows, br, mr);
        const float* xr = x + row * cols;
        float* yr = (y ? y : (float*)x) + row * cols;
        float m = minus_infinity;
        for (int j = lane; j < cols; j += 32)
        {
            float z = xr[j] + (br ? br[j] : 0.f) + (mr ? mr[j] : 0.f);
            yr[j] = z;
            m = fmaxf(m, z);
        }
        m = warp_max(m);
        float s = 0.f;
        for (int j = lane; j < cols; j += 32)
        {
            float e = expf(yr[j] - m);
            yr[j] = e;
            s += e;
        }
        float inv = 1.f / warp_sum(s);
        for (int j = lane; j < cols; j += 32)
        {
            float q = yr[j] * inv;
            if (y) yr[j] = q;
            if (y16) y16[row * cols + j] = copy_format == 3 ? to_fp16(q).bits : to_bf16(q).bits;
        }
    }
}

// softmax_backward's rows, y float32 or, Packed, 16-bit in y_format. Rows up to 32·SOFTMAX_LANE_VALUES wide stay in
// registers: dy and y loaded once, every value of the row issued before the first is used (y's stored bits widened
// after; widened next to its load, each 16-bit value waited for the one before it). Wider rows read both twice.
template <bool Packed>
__device__ __forceinline__ void softmax_backward_rows(float* dx, unsigned short* dx16, int format, const float* dy, const void* y,
                                                      int y_format, long long rows, int cols, int accumulate)
{
    int lane = threadIdx.x % 32;
    if (cols <= 32 * SOFTMAX_LANE_VALUES)
    {
        WARP_PER_ROW(row, rows)
        {
            float g[SOFTMAX_LANE_VALUES];
            unsigned int yb[SOFTMAX_LANE_VALUES];
#pragma unroll
            for (int k = 0; k < SOFTMAX_LANE_VALUES; k++)
            {
                long long at = row * cols + lane + 32 * k;
                bool inside = lane + 32 * k < cols;
                g[k] = inside ? dy[at] : 0.f;
                yb[k] = inside ? load_stored<Packed>(y, at) : 0u;
            }
            float s = 0.f;
#pragma unroll
            for (int k = 0; k < SOFTMAX_LANE_VALUES; k++)
                if (lane + 32 * k < cols) s += g[k] * widen_stored<Packed>(yb[k], y_format);
            s = warp_sum(s);
#pragma unroll
            for (int k = 0; k < SOFTMAX_LANE_VALUES; k++)
            {
                if (lane + 32 * k >= cols) continue;
                long long at = row * cols + lane + 32 * k;
                float v = widen_stored<Packed>(yb[k], y_format) * (g[k] - s);
                if (dx16) dx16[at] = format == 3 ? to_fp16(v).bits : to_bf16(v).bits;
                else store(dx + at, v, accumulate);
            }
        }
        return;
    }
    WARP_PER_ROW(row, rows)
    {
        const float* dyr = dy + row * cols;
        float s = 0.f;
        for (int j = lane; j < cols; j += 32) s += dyr[j] * widen_stored<Packed>(load_stored<Packed>(y, row * cols + j), y_format);
        s = warp_sum(s);
        for (int j = lane; j < cols; j += 32)
        {
            float v = widen_stored<Packed>(load_stored<Packed>(y, row * cols + j), y_format) * (dyr[j] - s);
            if (dx16) dx16[row * cols + j] = format == 3 ? to_fp16(v).bits : to_bf16(v).bits;
            else store(dx + row * cols + j, v, accumulate);
        }
    }
}

// dx = y ⊙ (dy − Σ_j dy·y) per row; or dx16 instead, in 16 bits (format 2 bf16, 3 fp16). y float32 or 16-bit
// (y_format 0, 2, 3: attention's probabilities as the P·v product read them).
extern "C" __global__ void softmax_backward(float* dx, unsigned short* dx16, int format, const float* dy, const void* y, int y_format,
                                           long long rows, int cols, int accumulate)
{
    if (y_format != 0) softmax_backward_rows<true>(dx, dx16, format, dy, y, y_format, rows, cols, accumulate);
    else softmax_backward_rows<false>(dx, dx16, format, dy, y, 0, rows, cols, accumulate);
}
