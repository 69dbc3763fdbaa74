// norm.cu: LayerNorm over the last dimension, row L2 normalisation and the SSF scale-shift. Row kernels give one warp per row
// (256-thread blocks, 8 rows each); parameter gradients are column sums over rows in a fixed order, so results
// are deterministic. Shapes: x, y, dy, dx [rows, C]; weight, bias, scale, shift [C]; mean, rstd [rows] (null in
// inference).
#include "common.cuh"

// Rows up to LAYERNORM_ROW_MAX_C wide (ViT's 768, Swin's and ConvNeXt's up to 1024) are held in registers by their
// warp, lane l keeping columns l, l + 32, ...: every load of a row is issued before its first sum needs one, where a
// loop over memory kept one load in flight per lane. The sums run in the same order either way (the same bits).
// The kernels are built for V values a lane: 32 (rows up to 1024 wide), and the forward and one-pass backward also for
// 24 (the _768 kernels, rows up to 768 wide), which keeps fewer registers alive: at sm_90 the backward takes 127
// instead of 159, two blocks of 256 threads a multiprocessor instead of one, and the forward 76 instead of 104, three
// instead of two. (The input gradient's kernel would stay at two blocks either way.)
#define LAYERNORM_ROW_MAX_C 1024
#define LAYERNORM_NARROW_C 768

template <int V> __device__ __forceinline__ void layernorm_load_row(float v[V], const float* row, int C, int lane)
{
#pragma unroll
    for (int j = 0; j < V; j++) v[j] = lane + 32 * j < C ? row[lane + 32 * j] : 0.f;
}

// How many of a row's values lane `lane` holds (columns lane, lane + 32, ... below C). The loops over the values held
// test j against this one count: testing lane + 32·j < C for each j there as well kept about 90 more registers alive
// in layernorm_backward_input (196 at sm_90, so one block of 256 threads per multiprocessor; about 105 this way, two).
__device__ __forceinline__ int layernorm_row_values(int C, int lane) { return (C - lane + 31) / 32; }

// One normalised value, scaled and shifted, stored in float32 or (y16 not null) 16 bits.
__device__ __forceinline__ void layernorm_store(float* y, unsigned short* y16, int format, long long i, float xc, float m, float r,
                                                const float* weight, const float* bias, int c)
{
    float n = (xc - m) * r, v = n * (weight ? weight[c] : 1.f) + (bias ? bias[c] : 0.f);
    if (y16) y16[i] = format == 3 ? to_fp16(v).bits : to_bf16(v).bits;
    else y[i] = v;
}

// y, or (not null) y16 in 16 bits (format 2 bf16, 3 fp16: a norm whose output only products read, which round it so).
template <int V>
__device__ __forceinline__ void layernorm_forward_rows(float* y, unsigned short* y16, int format, float* mean, float* rstd, const float* x,
                                                       const float* weight, const float* bias, int rows, int C, float eps)
{
    int lane = threadIdx.x % 32;
    WARP_PER_ROW(row, rows)
    {
        const float* xr = x + row * C;
        float s = 0.f, v = 0.f, m, r;
        if (C <= 32 * V)
        {
            float xv[V];
            int valid = layernorm_row_values(C, lane);
            layernorm_load_row<V>(xv, xr, C, lane);
#pragma unroll
            for (int j = 0; j < V; j++)
                if (j < valid) s += xv[j];
            m = warp_sum(s) / C;
#pragma unroll
            for (int j = 0; j < V; j++)
                if (j < valid)
                {
                    float d = xv[j] - m;
                    v += d * d;
                }
            r = rsqrtf(warp_sum(v) / C + eps);
#pragma unroll
            for (int j = 0; j < V; j++)
                if (j < valid) layernorm_store(y, y16, format, row * C + lane + 32 * j, xv[j], m, r, weight, bias, lane + 32 * j);
        }
        else
        {
            for (int c = lane; c < C; c += 32) s += xr[c];
            m = warp_sum(s) / C;
            for (int c = lane; c < C; c += 32)
            {
                float d = xr[c] - m;
                v += d * d;
            }
            r = rsqrtf(warp_sum(v) / C + eps);
            for (int c = lane; c < C; c += 32) layernorm_store(y, y16, format, row * C + c, xr[c], m, r, weight, bias, c);
        }
        if (lane == 0 && mean) mean[row] = m; // null in inference: nothing is saved
        if (lane == 0 && rstd) rstd[row] = r;
    }
}
extern "C" __global__ void __launch_bounds__(256, 2) layernorm_forward(float* y, unsigned short* y16, int format, float* mean, float* rstd,
                                                                      const float* x, const float* weight, const float* bias, int rows,
                                                                      int C, float eps)
{
    layernorm_forward_rows<LAYERNORM_ROW_MAX_C / 32>(y, y16, format, mean, rstd, x, weight, bias, rows, C, eps);
}
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_forward_768(float* y, unsigned short* y16, int format, float* mean, float* rstd,
                                                                          const float* x, const float* weight, const float* bias, int rows,
                                                                          int C, float eps)
{
    layernorm_forward_rows<LAYERNORM_NARROW_C / 32>(y, y16, format, mean, rstd, x, weight, bias, rows, C, eps);
}

// dx = rstd · (g − mean(g) − x̂·mean(g·x̂)) with g = dy·weight, x̂ = (x − mean)·rstd; rows up to 32·V wide held in
// registers as in layernorm_forward (dy and x each read once).
template <int V>
__device__ __forceinline__ void layernorm_backward_input_rows(float* dx, unsigned short* dx16, int format, const float* dy, const float* x,
                                                              const float* weight, const float* mean, const float* rstd, int rows, int C,
                                                              int accumulate)
{
    int lane = threadIdx.x % 32;
    WARP_PER_ROW(row, rows)
    {
        const float *xr = x + row * C, *dyr = dy + row * C;
        float m = mean[row], r = rstd[row], sg = 0.f, sgx = 0.f;
        if (C <= 32 * V)
        {
            float xv[V], g[V]; // g = dy·weight
            int valid = layernorm_row_values(C, lane);
            layernorm_load_row<V>(g, dyr, C, lane);
            layernorm_load_row<V>(xv, xr, C, lane);
#pragma unroll
            for (int j = 0; j < V; j++)
                if (j < valid)
                {
                    if (weight) g[j] *= weight[lane + 32 * j];
                    sg += g[j];
                    sgx += g[j] * (xv[j] - m) * r;
                }
            sg = warp_sum(sg) / C;
            sgx = warp_sum(sgx) / C;
            float* dxr = dx + row * C + lane;
            unsigned short* dx16r = dx16 ? dx16 + row * C + lane : nullptr;
#pragma unroll
            for (int j = 0; j < V; j++)
                if (j < valid)
                    store_gradient(dxr, dx16r, format, 32 * j, r * (g[j] - sg - (xv[j] - m) * r * sgx), accumulate);
            continue;
        }
        for (int c = lane; c < C; c += 32)
        {
            float g = dyr[c] * (weight ? weight[c] : 1.f);
            sg += g;
            sgx += g * (xr[c] - m) * r;
        }
        sg = warp_sum(sg) / C;
        sgx = warp_sum(sgx) / C;
        for (int c = lane; c < C; c += 32)
        {
            float g = dyr[c] * (weight ? weight[c] : 1.f);
            store_gradient(dx, dx16, format, row * C + c, r * (g - sg - (xr[c] - m) * r * sgx), accumulate);
        }
    }
}
extern "C" __global__ void layernorm_backward_input(float* dx, unsigned short* dx16, int format, const float* dy, const float* x,
                                                   const float* weight, const float* mean, const float* rstd, int rows, int C,
                                                   int accumulate)
{
    layernorm_backward_input_rows<LAYERNORM_ROW_MAX_C / 32>(dx, dx16, format, dy, x, weight, mean, rstd, rows, C, accumulate);
}

// The whole LayerNorm backward in one pass over dy and x, for C ≤ 32·V (V 32, or 24 for layernorm_backward_768): dx as
// layernorm_backward_input gives it (when dx is not null) and this block's parameter sums, partials [2, gridDim.x, C]
// (Σ dy·x̂, then Σ dy, over the block's rows) for column_partials_sum. Block 256 threads (8 warps); block b owns the
// rows of slice b, its warps take every 8th row, and lane l keeps the sums of columns l, l + 32, ... in registers, as it
// keeps the row's dy and x, so they are read from memory once. The warps' sums are then added in a fixed order
// (deterministic).
template <int V>
__device__ __forceinline__ void layernorm_backward_rows(float* dx, unsigned short* dx16, int format, float* partials, const float* dy,
                                                        const float* x, const float* weight, const float* mean, const float* rstd, int rows,
                                                        int C, int accumulate)
{
    __shared__ float warpSums[8][32 * V];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int per_block = (rows + (int)gridDim.x - 1) / (int)gridDim.x;
    int begin = min(rows, (int)blockIdx.x * per_block), end = min(rows, begin + per_block);
    float dw[V], db[V];
#pragma unroll
    for (int j = 0; j < V; j++) dw[j] = db[j] = 0.f;
    int valid = layernorm_row_values(C, lane);
    for (int row = begin + warp; row < end; row += 8)
    {
        // The row's dy and x in registers, every load issued before the first sum needs one (a loop that left at the
        // row's end kept one column's loads in flight per lane).
        float dv[V], xv[V];
        layernorm_load_row<V>(dv, dy + (long long)row * C, C, lane);
        layernorm_load_row<V>(xv, x + (long long)row * C, C, lane);
        float m = mean[row], r = rstd[row], sg = 0.f, sgx = 0.f;
#pragma unroll
        for (int j = 0; j < V; j++)
            if (j < valid)
            {
                float d = dv[j], xh = (xv[j] - m) * r, g = d * (weight ? weight[lane + 32 * j] : 1.f);
                sg += g;
                sgx += g * xh;
                dw[j] += d * xh;
                db[j] += d;
            }
        if (!dx) continue;
        sg = warp_sum(sg) / C;
        sgx = warp_sum(sgx) / C;
#pragma unroll
        for (int j = 0; j < V; j++)
            if (j < valid)
            {
                float g = dv[j] * (weight ? weight[lane + 32 * j] : 1.f);
                store_gradient(dx, dx16, format, (long long)row * C + lane + 32 * j, r * (g - sg - (xv[j] - m) * r * sgx), accumulate);
            }
    }
    for (int part = 0; part < 2; part++)
    {
#pragma unroll
        for (int j = 0; j < V; j++)
            if (lane + 32 * j < C) warpSums[warp][lane + 32 * j] = part == 0 ? dw[j] : db[j];
        __syncthreads();
        for (int c = threadIdx.x; c < C; c += blockDim.x)
        {
            float total = 0.f;
            for (int w = 0; w < 8; w++) total += warpSums[w][c];
            partials[((long long)part * gridDim.x + blockIdx.x) * C + c] = total;
        }
        __syncthreads();
    }
}
extern "C" __global__ void layernorm_backward(float* dx, unsigned short* dx16, int format, float* partials, const float* dy,
                                             const float* x, const float* weight, const float* mean, const float* rstd, int rows,
                                             int C, int accumulate)
{
    layernorm_backward_rows<LAYERNORM_ROW_MAX_C / 32>(dx, dx16, format, partials, dy, x, weight, mean, rstd, rows, C, accumulate);
}
extern "C" __global__ void __launch_bounds__(256, 2) layernorm_backward_768(float* dx, unsigned short* dx16, int format, float* partials,
                                                                           const float* dy, const float* x, const float* weight,
                                                                           const float* mean, const float* rstd, int rows, int C,
                                                                           int accumulate)
{
    layernorm_backward_rows<LAYERNORM_NARROW_C / 32>(dx, dx16, format, partials, dy, x, weight, mean, rstd, rows, C, accumulate);
}

// dweight[c] += Σ_r dy·x̂, dbias[c] += Σ_r dy (either may be null). Grid (ceil(C/32), 1, row slices), block (32, 8);
// with row slices, partials [2, slices, C] (dweight's, then dbias's) for column_partials_sum.
extern "C" __global__ void layernorm_backward_params(float* dweight, float* dbias, float* partials, const float* dy,
                                                    const float* x, const float* mean, const float* rstd, int rows, int C)
{
    int c = blockIdx.x * 32 + threadIdx.x;
    bool active = c < C;
    float dw = dweight ? column_sum(rows, active, [&](int r) {
        long long i = (long long)r * C + c;
        return dy[i] * (x[i] - mean[r]) * rstd[r];
    }) : 0.f;
    float db = dbias ? column_sum(rows, active, [&](int r) { return dy[(long long)r * C + c]; }) : 0.f;
    if (threadIdx.y == 0 && active)
    {
        if (dweight) column_result(dweight, partials, C, c, dw, 1.f, 1);
        if (dbias) column_result(dbias, partials + (long long)gridDim.z * C, C, c, db, 1.f, 1);
    }
}

// y[r, c] = x[r, c]·scale[c] + shift[c], then GELU of it when gelu is set (SSF at an MLP's first layer), then
// residual[r, c] + that when residual is not null (SSF at a layer whose output joins a residual stream). x float32
// (x_format 0) or 16-bit (2 bf16, 3 fp16: a Linear's product written so by cuBLASLt); round_input: a float32 x is
// rounded to `format` first (under bf16/fp16 GEMMs SSF's scale-shift reads the Linear's 16-bit output, as autocast's
// x·scale + shift does). x16, when not null, gets x in 16 bits (format 2 bf16, 3 fp16): SSF's product kept for
// dscale, as autocast keeps a Linear's output. y16, when not null, gets y in 16 bits instead of y (an output only
// products read). y may be x. Launch: 1-D grid-stride, four values of a row per thread when C is a multiple of 4.
extern "C" __global__ void scale_shift_forward(float* y, unsigned short* y16, unsigned short* x16, int format, const void* x, int x_format,
                                              int round_input, const float* scale, const float* shift, const float* residual, int rows,
                                              int C, int gelu_after)
{
    bool vector = C % 4 == 0 && aligned_for(y) && aligned_for(y16, format) && aligned_for(x16, format) && aligned_for(x, x_format)
        && aligned_for(scale) && aligned_for(shift) && aligned_for(residual);
    grid_stride_quads((long long)rows * C, vector, [&](long long i, int count) {
        float v[4], s[4], t[4], r[4];
        long long c = i % C;
        // Every load before x's, which is widened inside a switch on its format (a load after that switch waits for
        // x), and the residual's before x16's store (after it, it would wait for a second round trip: the compiler may
        // not move a load above a store it cannot tell apart from it).
        if (residual) load_values(r, residual, i, count);
        load_values(s, scale, c, count);
        load_values(t, shift, c, count);
        load_values(v, x, x_format, i, count);
        if (x16) store_halves(x16, i, v, count, format);
        for (int k = 0; k < count; k++)
        {
            float z = (round_input ? to_precision(v[k], format) : v[k]) * s[k] + t[k];
            v[k] = gelu_after ? gelu(z) : z;
        }
        if (residual)
            for (int k = 0; k < count; k++) v[k] = r[k] + v[k];
        if (y16) store_halves(y16, i, v, count, format);
        else store_values(y, i, v, count, 0);
    });
}

// dx = dy·scale, or dx16 (not null: dx in 16 bits, dx_format 2 bf16, 3 fp16, for the products that read it). Launch:
// 1-D grid-stride, four values of a row per thread when C is a multiple of 4.
extern "C" __global__ void scale_shift_backward_input(float* dx, unsigned short* dx16, int dx_format, const float* dy, const float* scale,
                                                     int rows, int C, int accumulate)
{
    bool vector = C % 4 == 0 && aligned_for(dx) && aligned_for(dx16, dx_format) && aligned_for(dy) && aligned_for(scale);
    grid_stride_quads((long long)rows * C, vector, [&](long long i, int count) {
        float g[4], s[4];
        load_values(g, dy, i, count);
        load_values(s, scale, i % C, count);
        for (int k = 0; k < count; k++) g[k] *= s[k];
        if (dx16) store_halves(dx16, i, g, count, dx_format);
        else store_values(dx, i, g, count, accumulate);
    });
}

// scale_shift_backward's walk down column c: rows begin + threadIdx.y, + 8, ... below end, four at a time, dx (or dx16)
// written and Σ g·x (when wantScale) and Σ g added to ds and dh. x is float32 or, Packed, 16-bit in x_format; the four
// rows' values are loaded as stored, and widened only after all are issued (widened next to its load, each 16-bit
// value waited for the one before it).
template <bool Packed>
__device__ __forceinline__ void scale_shift_backward_column(float& ds, float& dh, float* dx, unsigned short* dx16, int dx_format, bool wantScale,
                                                            const float* dy, const void* x, int x_format, float sc, float sh, int c, int C,
                                                            int begin, int end, int gelu_after, int accumulate)
{
    bool needX = gelu_after || wantScale;
    for (int r0 = begin + threadIdx.y; r0 < end; r0 += 4 * COLUMN_THREADS_Y)
    {
        float g[4];
        unsigned int xs[4];
#pragma unroll
        for (int u = 0; u < 4; u++)
        {
            long long i = (long long)(r0 + u * COLUMN_THREADS_Y) * C + c;
            bool inside = r0 + u * COLUMN_THREADS_Y < end;
            g[u] = inside ? dy[i] : 0.f;
            xs[u] = inside && needX ? load_stored<Packed>(x, i) : 0u;
        }
#pragma unroll
        for (int u = 0; u < 4; u++)
        {
            if (r0 + u * COLUMN_THREADS_Y >= end) break;
            long long i = (long long)(r0 + u * COLUMN_THREADS_Y) * C + c;
            float xi = widen_stored<Packed>(xs[u], x_format);
            if (gelu_after) g[u] *= gelu_slope(xi * sc + sh);
            if (dx16) dx16[i] = dx_format == 3 ? to_fp16(g[u] * sc).bits : to_bf16(g[u] * sc).bits;
            else if (dx) store(dx + i, g[u] * sc, accumulate);
            if (wantScale) ds += g[u] * xi;
            dh += g[u];
        }
    }
}

// SSF backward in one pass over dy: g = dy (or, with gelu_after, dy·GELU'(x·scale + shift): the backward of GELU after
// the scale-shift), dx = g·scale (when dx is given; dx16 instead, in 16 bits, when that is given), dscale[c] += Σ_r g·x,
// dshift[c] += Σ_r g (either may be null).
// Grid (ceil(C/32), 1, row slices), block (32, 8): thread (x, y) walks rows y, y + 8, ... of its column (of its slice),
// four rows' loads issued before their stores (dx may alias nothing the compiler can see, so it would not move them),
// and the eight partial sums per column are added in a fixed order (deterministic); with row slices, partials
// [2, slices, C] (dscale's, then dshift's) for column_partials_sum.
extern "C" __global__ void scale_shift_backward(float* dx, unsigned short* dx16, int dx_format, float* dscale, float* dshift,
                                               float* partials, const float* dy, const void* x, int x_format, const float* scale,
                                               const float* shift, int rows, int C, int gelu_after, int accumulate)
{
    __shared__ float partialScale[COLUMN_THREADS_Y][33], partialShift[COLUMN_THREADS_Y][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int begin, end;
    column_slice(rows, begin, end);
    float ds = 0.f, dh = 0.f;
    float sc = c < C ? scale[c] : 0.f, sh = c < C && gelu_after ? shift[c] : 0.f;
    if (c < C)
    {
        if (x_format != 0)
            scale_shift_backward_column<true>(ds, dh, dx, dx16, dx_format, dscale != nullptr, dy, x, x_format, sc, sh, c, C, begin, end,
                                              gelu_after, accumulate);
        else
            scale_shift_backward_column<false>(ds, dh, dx, dx16, dx_format, dscale != nullptr, dy, x, 0, sc, sh, c, C, begin, end, gelu_after,
                                               accumulate);
    }
    partialScale[threadIdx.y][threadIdx.x] = ds;
    partialShift[threadIdx.y][threadIdx.x] = dh;
    __syncthreads();
    if (threadIdx.y == 0 && c < C)
    {
        float totalScale = 0.f, totalShift = 0.f;
        for (int k = 0; k < COLUMN_THREADS_Y; k++)
        {
            totalScale += partialScale[k][threadIdx.x];
            totalShift += partialShift[k][threadIdx.x];
        }
        if (dscale) column_result(dscale, partials, C, c, totalScale, 1.f, 1);
        if (dshift) column_result(dshift, partials + (long long)gridDim.z * C, C, c, totalShift, 1.f, 1);
    }
}

// The vectors of one scale_shift_many launch: y[j] = x[j]·scale[j] + shift[j] over n[j] values (j < gridDim.y); a
// null shift adds zeros.
struct ScaleShiftVectors
{
    float* y[TENSORS_PER_LAUNCH];
    const float* x[TENSORS_PER_LAUNCH];
    const float* scale[TENSORS_PER_LAUNCH];
    const float* shift[TENSORS_PER_LAUNCH];
    int n[TENSORS_PER_LAUNCH];
};

// Many one-row scale-shifts in one launch (SSF's scale and shift folded into each layer's [C] bias and norm weight):
// each value as scale_shift_forward computes it. Grid (blocks per vector, vectors).
extern "C" __global__ void scale_shift_many(ScaleShiftVectors v)
{
    int j = blockIdx.y;
    const float* shift = v.shift[j];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < v.n[j]; i += gridDim.x * blockDim.x)
        v.y[j][i] = v.x[j][i] * v.scale[j][i] + (shift ? shift[i] : 0.f);
}

// The vectors of one scale_shift_many_backward launch: dx[j] = dy[j]·scale[j] (added when accumulate[j]),
// dscale[j] += dy[j]·x[j], dshift[j] += dy[j], each target skipped where null. No two vectors of a launch share a
// target (the host orders vectors that do into successive launches).
struct ScaleShiftVectorGrads
{
    float* dx[TENSORS_PER_LAUNCH];
    float* dscale[TENSORS_PER_LAUNCH];
    float* dshift[TENSORS_PER_LAUNCH];
    const float* dy[TENSORS_PER_LAUNCH];
    const float* x[TENSORS_PER_LAUNCH];
    const float* scale[TENSORS_PER_LAUNCH];
    int n[TENSORS_PER_LAUNCH];
    int accumulate[TENSORS_PER_LAUNCH];
};

// scale_shift_many's backward, each value as scale_shift_backward computes it for one row: the product dy·x rounded
// before it is added to dscale (there it is a column sum's only term), not fused into the add. Grid (blocks per
// vector, vectors).
extern "C" __global__ void scale_shift_many_backward(ScaleShiftVectorGrads v)
{
    int j = blockIdx.y;
    float *dx = v.dx[j], *dscale = v.dscale[j], *dshift = v.dshift[j];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < v.n[j]; i += gridDim.x * blockDim.x)
    {
        float g = v.dy[j][i];
        if (dscale) dscale[i] += __fmul_rn(g, v.x[j][i]);
        if (dshift) dshift[i] += g;
        if (dx) store(dx + i, g * v.scale[j][i], v.accumulate[j]);
    }
}

// max(‖x‖₂, eps) of one row, computed by a whole warp (valid in every lane).
__device__ float clamped_norm(const float* x, int C, float eps, int lane)
{
    float ss = 0.f;
    for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    return fmaxf(sqrtf(warp_sum(ss)), eps);
}

// y = x / max(‖x‖₂, eps) per row (F.normalize).
extern "C" __global__ void l2_normalize_forward(float* y, const float* x, int rows, int C, float eps)
{
    int lane = threadIdx.x % 32;
    WARP_PER_ROW(row, rows)
    {
        const float* xr = x + row * C;
        float n = clamped_norm(xr, C, eps, lane);
        for (int c = lane; c < C; c += 32) y[row * C + c] = xr[c] / n;
    }
}

// dx = (dy − y·(y·dy)) / ‖x‖; a clamped norm is a constant, so then dx = dy / eps.
extern "C" __global__ void l2_normalize_backward(float* dx, const float* dy, const float* x, const float* y, int rows, int C,
                                                float eps, int accumulate)
{
    int lane = threadIdx.x % 32;
    WARP_PER_ROW(row, rows)
    {
        const float *yr = y + row * C, *dyr = dy + row * C;
        float n = clamped_norm(x + row * C, C, eps, lane);
        float dot = 0.f;
        for (int c = lane; c < C; c += 32) dot += yr[c] * dyr[c];
        dot = n > eps ? warp_sum(dot) : 0.f;
        for (int c = lane; c < C; c += 32) store(dx + row * C + c, (dyr[c] - yr[c] * dot) / n, accumulate);
    }
}
