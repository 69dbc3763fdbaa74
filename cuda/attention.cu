// attention.cu: the permutes around the attention GEMMs, and fused attention.
// Permutes: packed rows [B, T, S, NH, HD] (S = 3 for timm's q|k|v columns, S = 1 for merged heads) ↔ per-head
// [B, NH, T, HD]. One thread per per-head element, consecutive threads along HD, so both sides are read and written
// in runs. Launch: 1-D grid-stride, 256 threads.
// Fused attention (flash-attention style, plain FMA arithmetic): q, k, v read in place from qkv [B, T, 3·NH·HD], keys
// and values streamed through shared memory 32 at a time, an online softmax per query row, no [T, T] matrix in
// memory. A warp owns ATTN_ROWS query (or key) rows; lane j takes key (or query) j of the tile for the scores, and
// dimensions lane, lane + 32, ... for the outputs (a tile's 32 scores reach every lane through a per-warp shared row).
// Head dim at most ATTN_MAX_HD.
#include "common.cuh"

#define ATTN_MAX_HD 128
#define ATTN_CHUNKS (ATTN_MAX_HD / 32)
#define ATTN_WARPS 4
#define ATTN_ROWS 4     // query rows per warp in the forward
#define ATTN_BWD_ROWS 2 // query (dq) or key (dk, dv) rows per warp in the backward

// Offset in the packed [B, T, S, NH, HD] tensor of element (slot s, per-head index i of [B, NH, T, HD]).
__device__ __forceinline__ long long packed_offset(long long i, int s, int S, int T, int NH, int HD)
{
    int d = (int)(i % HD);
    long long t = i / HD % T, h = i / ((long long)HD * T) % NH, b = i / ((long long)HD * T * NH);
    return (((b * T + t) * S + s) * NH + h) * HD + d;
}

// q, k, v [B, NH, T, HD] from qkv [B, T, 3, NH, HD].
extern "C" __global__ void split_heads(float* q, float* k, float* v, const float* qkv, int B, int T, int NH, int HD)
{
    GRID_STRIDE(i, (long long)B * NH * T * HD)
    {
        q[i] = qkv[packed_offset(i, 0, 3, T, NH, HD)];
        k[i] = qkv[packed_offset(i, 1, 3, T, NH, HD)];
        v[i] = qkv[packed_offset(i, 2, 3, T, NH, HD)];
    }
}

// dqkv [B, T, 3, NH, HD] from dq, dk, dv [B, NH, T, HD].
extern "C" __global__ void split_heads_backward(float* dqkv, const float* dq, const float* dk, const float* dv, int B, int T,
                                               int NH, int HD, int accumulate)
{
    GRID_STRIDE(i, (long long)B * NH * T * HD)
    {
        store(dqkv + packed_offset(i, 0, 3, T, NH, HD), dq[i], accumulate);
        store(dqkv + packed_offset(i, 1, 3, T, NH, HD), dk[i], accumulate);
        store(dqkv + packed_offset(i, 2, 3, T, NH, HD), dv[i], accumulate);
    }
}

// y [B, T, NH·HD] from o [B, NH, T, HD].
extern "C" __global__ void merge_heads(float* y, const float* o, int B, int T, int NH, int HD)
{
    GRID_STRIDE(i, (long long)B * NH * T * HD) y[packed_offset(i, 0, 1, T, NH, HD)] = o[i];
}

// do [B, NH, T, HD] from dy [B, T, NH·HD].
extern "C" __global__ void merge_heads_backward(float* dout, const float* dy, int B, int T, int NH, int HD, int accumulate)
{
    GRID_STRIDE(i, (long long)B * NH * T * HD) store(dout + i, dy[packed_offset(i, 0, 1, T, NH, HD)], accumulate);
}

// Score of query row i against key row j of one (image, head): scale·q·k + bias[h, i, j] + mask[w, i, j].
__device__ __forceinline__ float attention_score(float dot, float scale, const float* biasH, const float* maskW, int T, int i, int j)
{
    return dot * scale + (biasH ? biasH[(long long)i * T + j] : 0.f) + (maskW ? maskW[(long long)i * T + j] : 0.f);
}

// Where one (image, head) of a fused-attention block starts: blockIdx.y = b·NH + h.
struct AttentionHead
{
    int bh, b, h, C, warp, lane;
    long long ld;        // floats between token rows of qkv (3·C)
    const float* q;      // q of token 0 (k at +C, v at +2C)
    const float* biasH;  // bias[h] [T, T], or null
    const float* maskW;  // mask[b mod nW] [T, T], or null
};

__device__ __forceinline__ AttentionHead attention_head(const float* qkv, const float* bias, const float* mask, int T, int NH, int HD, int nW)
{
    AttentionHead a;
    a.bh = blockIdx.y;
    a.b = a.bh / NH;
    a.h = a.bh % NH;
    a.C = NH * HD;
    a.warp = threadIdx.x / 32;
    a.lane = threadIdx.x % 32;
    a.ld = 3LL * a.C;
    a.q = qkv + (long long)a.b * T * a.ld + (long long)a.h * HD;
    a.biasH = bias ? bias + (long long)a.h * T * T : nullptr;
    a.maskW = mask ? mask + (long long)(a.b % nW) * T * T : nullptr;
    return a;
}

// Rows row0..row0+31 of two [T, HD] operands (leading dimensions ldA, ldB; zeros past T) into shared tiles, rounded to
// the GEMM precision (0 fp32, 1 tf32, 2 bf16, 3 fp16: the products' operands, as tensor cores take them), between
// barriers: the previous tile is consumed before it is overwritten, and the new one is complete before it is read.
__device__ __forceinline__ void load_row_tiles(float (*a)[ATTN_MAX_HD + 1], const float* srcA, long long ldA,
                                               float (*b)[ATTN_MAX_HD + 1], const float* srcB, long long ldB, int T, int HD, int row0,
                                               int precision)
{
    __syncthreads();
    for (int e = threadIdx.x; e < 32 * HD; e += blockDim.x)
    {
        int rr = e / HD, d = e % HD, row = row0 + rr;
        a[rr][d] = row < T ? to_precision(srcA[row * ldA + d], precision) : 0.f;
        b[rr][d] = row < T ? to_precision(srcB[row * ldB + d], precision) : 0.f;
    }
    __syncthreads();
}

// y [B, T, NH·HD] and lse [B, NH, T] from qkv. Grid (ceil(T / (ATTN_WARPS·ATTN_ROWS)), B·NH), ATTN_WARPS·32 threads.
extern "C" __global__ void fused_attention_forward(float* y, float* lse, const float* qkv, const float* bias, const float* mask,
                                                  int B, int T, int NH, int HD, int nW, float scale, int precision)
{
    __shared__ float ks[32][ATTN_MAX_HD + 1]; // lane j reads row j: padded so the lanes hit different banks
    __shared__ float vs[32][ATTN_MAX_HD + 1];
    __shared__ float qs[ATTN_WARPS][ATTN_ROWS][ATTN_MAX_HD];
    __shared__ float ps[ATTN_WARPS][32];
    AttentionHead a = attention_head(qkv, bias, mask, T, NH, HD, nW);
    int warp = a.warp, lane = a.lane;
    int row0 = (blockIdx.x * ATTN_WARPS + warp) * ATTN_ROWS;
    float m[ATTN_ROWS], l[ATTN_ROWS], o[ATTN_ROWS][ATTN_CHUNKS];
    for (int r = 0; r < ATTN_ROWS; r++)
    {
        int i = row0 + r;
        for (int d = lane; d < HD; d += 32) qs[warp][r][d] = i < T ? to_precision(a.q[i * a.ld + d], precision) : 0.f;
        m[r] = __int_as_float(0xff800000); // -inf
        l[r] = 0.f;
        for (int c = 0; c < ATTN_CHUNKS; c++) o[r][c] = 0.f;
    }
    for (int j0 = 0; j0 < T; j0 += 32)
    {
        load_row_tiles(ks, a.q + a.C, a.ld, vs, a.q + 2 * a.C, a.ld, T, HD, j0, precision);
        int j = j0 + lane;
        for (int r = 0; r < ATTN_ROWS; r++)
        {
            int i = row0 + r;
            if (i >= T) break; // the whole warp: i does not depend on the lane
            float dot = 0.f;
            for (int d = 0; d < HD; d++) dot += qs[warp][r][d] * ks[lane][d];
            float sj = j < T ? attention_score(dot, scale, a.biasH, a.maskW, T, i, j) : __int_as_float(0xff800000);
            float mNew = fmaxf(m[r], warp_max(sj)); // finite: key j0 of every tile is valid
            float pj = j < T ? expf(sj - mNew) : 0.f, correction = expf(m[r] - mNew);
            l[r] = l[r] * correction + warp_sum(pj);
            for (int c = 0; c < ATTN_CHUNKS; c++) o[r][c] *= correction;
            ps[warp][lane] = to_precision(pj, precision); // P·v's operand, to every lane: one warp barrier, not 32 shuffles
            __syncwarp();
            for (int jj = 0; jj < 32; jj++)
                for (int c = 0; c < ATTN_CHUNKS; c++)
                    if (lane + 32 * c < HD) o[r][c] += ps[warp][jj] * vs[jj][lane + 32 * c];
            __syncwarp();
            m[r] = mNew;
        }
    }
    for (int r = 0; r < ATTN_ROWS; r++)
    {
        int i = row0 + r;
        if (i >= T) break;
        float* yr = y + ((long long)a.b * T + i) * a.C + (long long)a.h * HD;
        for (int c = 0; c < ATTN_CHUNKS; c++)
            if (lane + 32 * c < HD) yr[lane + 32 * c] = o[r][c] / l[r];
        if (lane == 0) lse[(long long)a.bh * T + i] = m[r] + logf(l[r]);
    }
}

// The same forward on tensor cores, for head dim 64 with bf16 or fp16 operands (precision 2 or 3). A warp owns 16 query
// rows (a block of 4 warps 64); keys and values stream through shared memory 64 at a time, rounded to 16 bits as they
// are loaded, v transposed so that both products read their B fragments as 32-bit pairs (rows padded by 8 values: the
// 8 groups of a warp hit different banks). S = q·kᵀ and O += P·v are mma_16x8x16 products; the online softmax works on
// S's accumulator fragments (a thread holds rows g and g+8, two keys of each 8-key tile), and P's fragments are the A
// operand of P·v as they are. Rounding points as in fused_attention_forward: q, k, v and P in 16 bits, the rest fp32.
// Grid (ceil(T / 64), B·NH), 128 threads; qkv's rows and head columns 16-byte aligned (k and v are read as float4).
#define TC_HD 64
#define TC_KEYS 64
extern "C" __global__ void fused_attention_forward_tc(float* y, float* lse, const float* qkv, const float* bias, const float* mask,
                                                     int B, int T, int NH, int HD, int nW, float scale, int precision)
{
    __shared__ unsigned short ks[TC_KEYS][TC_HD + 8]; // [key][dim]
    __shared__ unsigned short vt[TC_HD][TC_KEYS + 8]; // [dim][key]
    AttentionHead a = attention_head(qkv, bias, mask, T, NH, HD, nW);
    int g = a.lane / 4, t = a.lane % 4;
    int row0 = (blockIdx.x * 4 + a.warp) * 16, rowA = row0 + g, rowB = row0 + g + 8; // this thread's two rows
    unsigned int qa[TC_HD / 16][4]; // q's A fragments, one set per 16 dims
    #pragma unroll
    for (int kk = 0; kk < TC_HD / 16; kk++)
    {
        int d = kk * 16 + 2 * t;
        const float *qA = a.q + (long long)rowA * a.ld + d, *qB = a.q + (long long)rowB * a.ld + d;
        qa[kk][0] = rowA < T ? pack_pair(qA[0], qA[1], precision) : 0u;
        qa[kk][1] = rowB < T ? pack_pair(qB[0], qB[1], precision) : 0u;
        qa[kk][2] = rowA < T ? pack_pair(qA[8], qA[9], precision) : 0u;
        qa[kk][3] = rowB < T ? pack_pair(qB[8], qB[9], precision) : 0u;
    }
    const float minusInf = __int_as_float(0xff800000);
    float mA = minusInf, mB = minusInf, lA = 0.f, lB = 0.f; // running max and (this thread's part of the) sum per row
    float o[TC_HD / 8][4];
    #pragma unroll
    for (int n = 0; n < TC_HD / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    for (int j0 = 0; j0 < T; j0 += TC_KEYS)
    {
        // Each thread moves 8 float4 of k and 8 of v (the tile's 64 rows × 16 float4): every load is issued before the
        // first store, so the tile costs about one memory latency, not sixteen.
        float4 kq[TC_KEYS * TC_HD / 4 / 128], vq[TC_KEYS * TC_HD / 4 / 128];
        #pragma unroll
        for (int r = 0; r < TC_KEYS * TC_HD / 4 / 128; r++)
        {
            int e = threadIdx.x + 128 * r, j = j0 + e / (TC_HD / 4);
            const float4* src = (const float4*)(a.q + (long long)j * a.ld + a.C) + e % (TC_HD / 4);
            float4 zero = {0.f, 0.f, 0.f, 0.f};
            kq[r] = j < T ? src[0] : zero;
            vq[r] = j < T ? src[a.C / 4] : zero;
        }
        __syncthreads(); // the previous tile is consumed
        #pragma unroll
        for (int r = 0; r < TC_KEYS * TC_HD / 4 / 128; r++)
        {
            int e = threadIdx.x + 128 * r, jj = e / (TC_HD / 4), d = 4 * (e % (TC_HD / 4));
            *(unsigned int*)&ks[jj][d] = pack_pair(kq[r].x, kq[r].y, precision);
            *(unsigned int*)&ks[jj][d + 2] = pack_pair(kq[r].z, kq[r].w, precision);
            unsigned int v01 = pack_pair(vq[r].x, vq[r].y, precision), v23 = pack_pair(vq[r].z, vq[r].w, precision);
            vt[d][jj] = (unsigned short)(v01 & 0xffffu);
            vt[d + 1][jj] = (unsigned short)(v01 >> 16);
            vt[d + 2][jj] = (unsigned short)(v23 & 0xffffu);
            vt[d + 3][jj] = (unsigned short)(v23 >> 16);
        }
        __syncthreads();
        if (row0 >= T) continue; // the whole warp (it still meets the barriers)
        float sc[TC_KEYS / 8][4]; // scores: sc[n][0..1] row A, keys j0 + 8n + 2t, +1; sc[n][2..3] row B
        float tileA = minusInf, tileB = minusInf;
        #pragma unroll
        for (int n = 0; n < TC_KEYS / 8; n++)
        {
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
            #pragma unroll
            for (int kk = 0; kk < TC_HD / 16; kk++)
            {
                unsigned int kb[2] = {*(const unsigned int*)&ks[8 * n + g][16 * kk + 2 * t], *(const unsigned int*)&ks[8 * n + g][16 * kk + 8 + 2 * t]};
                mma_16x8x16(sc[n], qa[kk], kb, precision);
            }
            #pragma unroll
            for (int c = 0; c < 4; c++)
            {
                int i = c < 2 ? rowA : rowB, j = j0 + 8 * n + 2 * t + c % 2;
                sc[n][c] = j >= T ? minusInf : i >= T ? sc[n][c] * scale : attention_score(sc[n][c], scale, a.biasH, a.maskW, T, i, j);
            }
            tileA = fmaxf(tileA, fmaxf(sc[n][0], sc[n][1]));
            tileB = fmaxf(tileB, fmaxf(sc[n][2], sc[n][3]));
        }
        // Row maxima over the 4 threads of a group, then rescale what came before (finite: key j0 is valid).
        tileA = fmaxf(tileA, __shfl_xor_sync(FULL_MASK, tileA, 1));
        tileA = fmaxf(tileA, __shfl_xor_sync(FULL_MASK, tileA, 2));
        tileB = fmaxf(tileB, __shfl_xor_sync(FULL_MASK, tileB, 1));
        tileB = fmaxf(tileB, __shfl_xor_sync(FULL_MASK, tileB, 2));
        float mNewA = fmaxf(mA, tileA), mNewB = fmaxf(mB, tileB), corrA = expf(mA - mNewA), corrB = expf(mB - mNewB);
        lA *= corrA;
        lB *= corrB;
        #pragma unroll
        for (int n = 0; n < TC_HD / 8; n++)
        {
            o[n][0] *= corrA;
            o[n][1] *= corrA;
            o[n][2] *= corrB;
            o[n][3] *= corrB;
        }
        #pragma unroll
        for (int n = 0; n < TC_KEYS / 8; n++)
        {
            sc[n][0] = expf(sc[n][0] - mNewA);
            sc[n][1] = expf(sc[n][1] - mNewA);
            sc[n][2] = expf(sc[n][2] - mNewB);
            sc[n][3] = expf(sc[n][3] - mNewB);
            lA += sc[n][0] + sc[n][1];
            lB += sc[n][2] + sc[n][3];
        }
        // O += P·v: 16 keys per step; P's A fragment is two 8-key tiles of the scores.
        #pragma unroll
        for (int kk = 0; kk < TC_KEYS / 16; kk++)
        {
            unsigned int pa[4] = {pack_pair(sc[2 * kk][0], sc[2 * kk][1], precision), pack_pair(sc[2 * kk][2], sc[2 * kk][3], precision),
                                  pack_pair(sc[2 * kk + 1][0], sc[2 * kk + 1][1], precision), pack_pair(sc[2 * kk + 1][2], sc[2 * kk + 1][3], precision)};
            #pragma unroll
            for (int n = 0; n < TC_HD / 8; n++)
            {
                unsigned int vb[2] = {*(const unsigned int*)&vt[8 * n + g][16 * kk + 2 * t], *(const unsigned int*)&vt[8 * n + g][16 * kk + 8 + 2 * t]};
                mma_16x8x16(o[n], pa, vb, precision);
            }
        }
        mA = mNewA;
        mB = mNewB;
    }
    if (row0 >= T) return;
    lA += __shfl_xor_sync(FULL_MASK, lA, 1);
    lA += __shfl_xor_sync(FULL_MASK, lA, 2);
    lB += __shfl_xor_sync(FULL_MASK, lB, 1);
    lB += __shfl_xor_sync(FULL_MASK, lB, 2);
    #pragma unroll
    for (int n = 0; n < TC_HD / 8; n++)
    {
        int d = (int)((long long)a.h * HD) + 8 * n + 2 * t;
        if (rowA < T)
        {
            float* yr = y + ((long long)a.b * T + rowA) * a.C + d;
            yr[0] = o[n][0] / lA;
            yr[1] = o[n][1] / lA;
        }
        if (rowB < T)
        {
            float* yr = y + ((long long)a.b * T + rowB) * a.C + d;
            yr[0] = o[n][2] / lB;
            yr[1] = o[n][3] / lB;
        }
    }
    if (t == 0 && rowA < T) lse[(long long)a.bh * T + rowA] = mA + logf(lA);
    if (t == 0 && rowB < T) lse[(long long)a.bh * T + rowB] = mB + logf(lB);
}

// Backward, query side: delta [B, NH, T] = Σ_d dy·y per row and head; dq = scale·Σ_j dS·k with the probabilities
// recomputed as exp(s − lse) and dS = P ⊙ (dO·vᵀ − delta), into dqkv's q columns (skipped when dqkv is null).
// Grid (ceil(T / (ATTN_WARPS·ATTN_BWD_ROWS)), B·NH), ATTN_WARPS·32 threads.
extern "C" __global__ void fused_attention_backward_dq(float* dqkv, float* delta, const float* dy, const float* y, const float* lse,
                                                      const float* qkv, const float* bias, const float* mask, int B, int T,
                                                      int NH, int HD, int nW, float scale, int accumulate, int precision)
{
    __shared__ float ks[32][ATTN_MAX_HD + 1];
    __shared__ float vs[32][ATTN_MAX_HD + 1];
    __shared__ float qs[ATTN_WARPS][ATTN_BWD_ROWS][ATTN_MAX_HD];
    __shared__ float dos[ATTN_WARPS][ATTN_BWD_ROWS][ATTN_MAX_HD];
    __shared__ float dss[ATTN_WARPS][32];
    AttentionHead a = attention_head(qkv, bias, mask, T, NH, HD, nW);
    int warp = a.warp, lane = a.lane;
    int row0 = (blockIdx.x * ATTN_WARPS + warp) * ATTN_BWD_ROWS;
    float rowLse[ATTN_BWD_ROWS], rowDelta[ATTN_BWD_ROWS], dq[ATTN_BWD_ROWS][ATTN_CHUNKS];
    for (int r = 0; r < ATTN_BWD_ROWS; r++)
    {
        int i = row0 + r;
        long long o = ((long long)a.b * T + i) * a.C + (long long)a.h * HD;
        float part = 0.f;
        for (int d = lane; d < HD; d += 32)
        {
            qs[warp][r][d] = i < T ? to_precision(a.q[i * a.ld + d], precision) : 0.f;
            dos[warp][r][d] = i < T ? to_precision(dy[o + d], precision) : 0.f;
            if (i < T) part += dy[o + d] * y[o + d];
        }
        rowDelta[r] = warp_sum(part);
        rowLse[r] = i < T ? lse[(long long)a.bh * T + i] : 0.f;
        if (i < T && lane == 0) delta[(long long)a.bh * T + i] = rowDelta[r];
        for (int c = 0; c < ATTN_CHUNKS; c++) dq[r][c] = 0.f;
    }
    for (int j0 = 0; j0 < T; j0 += 32)
    {
        load_row_tiles(ks, a.q + a.C, a.ld, vs, a.q + 2 * a.C, a.ld, T, HD, j0, precision);
        int j = j0 + lane;
        for (int r = 0; r < ATTN_BWD_ROWS; r++)
        {
            int i = row0 + r;
            if (i >= T) break;
            float dot = 0.f, dp = 0.f;
            for (int d = 0; d < HD; d++)
            {
                dot += qs[warp][r][d] * ks[lane][d];
                dp += dos[warp][r][d] * vs[lane][d];
            }
            float ds = j < T ? expf(attention_score(dot, scale, a.biasH, a.maskW, T, i, j) - rowLse[r]) * (dp - rowDelta[r]) : 0.f;
            dss[warp][lane] = to_precision(ds, precision);
            __syncwarp();
            for (int jj = 0; jj < 32; jj++)
                for (int c = 0; c < ATTN_CHUNKS; c++)
                    if (lane + 32 * c < HD) dq[r][c] += dss[warp][jj] * ks[jj][lane + 32 * c];
            __syncwarp();
        }
    }
    if (!dqkv) return;
    for (int r = 0; r < ATTN_BWD_ROWS; r++)
    {
        int i = row0 + r;
        if (i >= T) break;
        float* out = dqkv + ((long long)a.b * T + i) * a.ld + (long long)a.h * HD;
        for (int c = 0; c < ATTN_CHUNKS; c++)
            if (lane + 32 * c < HD) store(out + lane + 32 * c, scale * dq[r][c], accumulate);
    }
}

// Backward, key side: for key row j, dv = Σ_i P·dO and dk = scale·Σ_i dS·q over the queries, streamed 32 at a time,
// into dqkv's k and v columns; needs the query side's delta. Grid (ceil(T / (ATTN_WARPS·ATTN_BWD_ROWS)), B·NH).
extern "C" __global__ void fused_attention_backward_dkdv(float* dqkv, const float* delta, const float* dy, const float* lse,
                                                        const float* qkv, const float* bias, const float* mask, int B, int T,
                                                        int NH, int HD, int nW, float scale, int accumulate, int precision)
{
    __shared__ float qs[32][ATTN_MAX_HD + 1];
    __shared__ float dos[32][ATTN_MAX_HD + 1];
    __shared__ float ks[ATTN_WARPS][ATTN_BWD_ROWS][ATTN_MAX_HD];
    __shared__ float vs[ATTN_WARPS][ATTN_BWD_ROWS][ATTN_MAX_HD];
    __shared__ float ps[ATTN_WARPS][32], dss[ATTN_WARPS][32];
    AttentionHead a = attention_head(qkv, bias, mask, T, NH, HD, nW);
    int warp = a.warp, lane = a.lane;
    const float* dyb = dy + (long long)a.b * T * a.C + (long long)a.h * HD;
    int key0 = (blockIdx.x * ATTN_WARPS + warp) * ATTN_BWD_ROWS;
    float dk[ATTN_BWD_ROWS][ATTN_CHUNKS], dv[ATTN_BWD_ROWS][ATTN_CHUNKS];
    for (int r = 0; r < ATTN_BWD_ROWS; r++)
    {
        int j = key0 + r;
        for (int d = lane; d < HD; d += 32)
        {
            ks[warp][r][d] = j < T ? to_precision(a.q[j * a.ld + a.C + d], precision) : 0.f;
            vs[warp][r][d] = j < T ? to_precision(a.q[j * a.ld + 2 * a.C + d], precision) : 0.f;
        }
        for (int c = 0; c < ATTN_CHUNKS; c++) dk[r][c] = dv[r][c] = 0.f;
    }
    for (int i0 = 0; i0 < T; i0 += 32)
    {
        load_row_tiles(qs, a.q, a.ld, dos, dyb, a.C, T, HD, i0, precision);
        int i = i0 + lane;
        float rowLse = i < T ? lse[(long long)a.bh * T + i] : 0.f, rowDelta = i < T ? delta[(long long)a.bh * T + i] : 0.f;
        for (int r = 0; r < ATTN_BWD_ROWS; r++)
        {
            int j = key0 + r;
            if (j >= T) break;
            float dot = 0.f, dp = 0.f;
            for (int d = 0; d < HD; d++)
            {
                dot += qs[lane][d] * ks[warp][r][d];
                dp += dos[lane][d] * vs[warp][r][d];
            }
            float p = i < T ? expf(attention_score(dot, scale, a.biasH, a.maskW, T, i, j) - rowLse) : 0.f;
            float ds = p * (dp - rowDelta);
            ps[warp][lane] = to_precision(p, precision);
            dss[warp][lane] = to_precision(ds, precision);
            __syncwarp();
            for (int ii = 0; ii < 32; ii++)
                for (int c = 0; c < ATTN_CHUNKS; c++)
                    if (lane + 32 * c < HD)
                    {
                        dv[r][c] += ps[warp][ii] * dos[ii][lane + 32 * c];
                        dk[r][c] += dss[warp][ii] * qs[ii][lane + 32 * c];
                    }
            __syncwarp();
        }
    }
    for (int r = 0; r < ATTN_BWD_ROWS; r++)
    {
        int j = key0 + r;
        if (j >= T) break;
        float* out = dqkv + ((long long)a.b * T + j) * a.ld + (long long)a.h * HD;
        for (int c = 0; c < ATTN_CHUNKS; c++)
            if (lane + 32 * c < HD)
            {
                store(out + a.C + lane + 32 * c, scale * dk[r][c], accumulate);
                store(out + 2 * a.C + lane + 32 * c, dv[r][c], accumulate);
            }
    }
}

// dbias [NH, T, T] += Σ_b dS[b, h, i, j], images in order (deterministic). One warp per (h, i) row; needs delta.
extern "C" __global__ void fused_attention_backward_bias(float* dbias, const float* delta, const float* dy, const float* lse,
                                                        const float* qkv, const float* bias, const float* mask, int B, int T,
                                                        int NH, int HD, int nW, float scale, int precision)
{
    int lane = threadIdx.x % 32, C = NH * HD;
    long long ld = 3LL * C;
    WARP_PER_ROW(row, (long long)NH * T)
    {
        int h = (int)(row / T), i = (int)(row % T);
        for (int j0 = 0; j0 < T; j0 += 32)
        {
            int j = j0 + lane;
            if (j >= T) continue; // no shuffles below: lanes may leave
            float sum = 0.f;
            for (int b = 0; b < B; b++)
            {
                long long bh = (long long)b * NH + h;
                const float* base = qkv + (long long)b * T * ld + (long long)h * HD;
                const float* dyi = dy + ((long long)b * T + i) * C + (long long)h * HD;
                float dot = 0.f, dp = 0.f;
                for (int d = 0; d < HD; d++)
                {
                    dot += to_precision(base[i * ld + d], precision) * to_precision(base[j * ld + C + d], precision);
                    dp += to_precision(dyi[d], precision) * to_precision(base[j * ld + 2 * C + d], precision);
                }
                const float* maskW = mask ? mask + (long long)(b % nW) * T * T : nullptr;
                float p = expf(attention_score(dot, scale, bias + (long long)h * T * T, maskW, T, i, j) - lse[bh * T + i]);
                sum += p * (dp - delta[bh * T + i]);
            }
            dbias[(long long)h * T * T + (long long)i * T + j] += sum;
        }
    }
}
