// attention.cu: the permutes around the attention GEMMs, and fused attention.
// Permutes: packed rows [B, T, S, NH, HD] (S = 3 for timm's q|k|v columns, S = 1 for merged heads) ↔ per-head
// [B, NH, T, HD]. Four consecutive values of a row per thread (one head's dims), consecutive threads along the row, so
// both sides are read and written in runs. Launch: block (x: a row's quads, up to 256; y: rows), grid-stride over rows.
// Fused attention, two versions of each direction. Tensor cores (the _tc kernels, further down): head dim 64 with bf16 or
// fp16 operands, mma.sync products. Plain FMA arithmetic (any head dim up to ATTN_MAX_HD, any precision), as follows.
// Flash-attention style: q, k, v read in place from qkv [B, T, 3·NH·HD], keys
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

// Every element of the packed rows [B·T, width] (width = S·NH·HD): body(r, b, t, j, count) for row r = b·T + t and
// columns j .. j + count, count 4 (one head's dims d .. d + 3: HD a multiple of 4 and the pointers aligned, `vector`) or 1.
// Block (x: columns, y: rows), grid-stride over rows; a row's image and token are found once, its columns' slot, head
// and dim with 32-bit arithmetic (the per-element 64-bit divisions of a flat index cost more than the bytes moved).
// Each count has its own call, so it is a constant after inlining: with a run-time count the bodies' value arrays
// went to local memory (a stack frame of 16 to 32 bytes in each of the four head kernels).
template <int Step, class F> __device__ __forceinline__ void packed_rows_by(long long rows, int width, int T, F body)
{
    for (long long r = (long long)blockIdx.x * blockDim.y + threadIdx.y; r < rows; r += (long long)gridDim.x * blockDim.y)
    {
        long long b = r / T, t = r - b * T;
        for (int j = threadIdx.x * Step; j < width; j += blockDim.x * Step) body(r, b, t, j, Step);
    }
}

template <class F> __device__ __forceinline__ void packed_rows(long long rows, int width, int T, bool vector, F body)
{
    if (vector) packed_rows_by<4>(rows, width, T, body);
    else packed_rows_by<1>(rows, width, T, body);
}

// Where column j of a packed row (image b, token t) sits in its slot's per-head [B, NH, T, HD] tensor; slot = j / (NH·HD).
__device__ __forceinline__ long long head_offset(long long b, long long t, int j, int T, int NH, int HD, int& slot)
{
    int C = NH * HD;
    slot = j / C;
    int rest = j - slot * C, h = rest / HD;
    return ((b * NH + h) * T + t) * HD + rest - h * HD;
}

// heads [3, B, NH, T, HD] (q, k, v) from qkv [B, T, 3, NH, HD]; or heads16 instead, in 16 bits (format 2 bf16, 3 fp16).
// qkv float32 (qkvFormat 0) or already in that 16-bit format (the qkv layer's output written so): moved as it is.
extern "C" __global__ void split_heads(float* heads, unsigned short* heads16, int format, const void* qkv, int qkvFormat, int B, int T,
                                       int NH, int HD)
{
    bool vector = HD % 4 == 0 && aligned_for(heads) && aligned_for(heads16, format) && aligned_for(qkv, qkvFormat);
    int width = 3 * NH * HD;
    long long part = (long long)B * NH * T * HD;
    packed_rows((long long)B * T, width, T, vector, [&](long long r, long long b, long long t, int j, int count) {
        int s;
        long long o = head_offset(b, t, j, T, NH, HD, s) + s * part;
        float x[4];
        load_values(x, qkv, qkvFormat, r * width + j, count);
        if (heads16) store_halves(heads16, o, x, count, format);
        else store_values(heads, o, x, count, 0);
    });
}

// dqkv [B, T, 3, NH, HD] from dq, dk, dv [B, NH, T, HD] (written, or added to dqkv); dqkv16, when not null, gets the
// values stored in 16 bits (format 2 bf16, 3 fp16): the qkv layer's products' copy of its gradient.
extern "C" __global__ void split_heads_backward(float* dqkv, unsigned short* dqkv16, int format, const float* dq, const float* dk,
                                               const float* dv, int B, int T, int NH, int HD, int accumulate)
{
    bool vector = HD % 4 == 0 && aligned_for(dqkv) && aligned_for(dqkv16, format) && aligned_for(dq) && aligned_for(dk) && aligned_for(dv);
    int width = 3 * NH * HD;
    packed_rows((long long)B * T, width, T, vector, [&](long long r, long long b, long long t, int j, int count) {
        int s;
        long long o = head_offset(b, t, j, T, NH, HD, s), at = r * width + j;
        float x[4], old[4];
        load_values(x, s == 0 ? dq : s == 1 ? dk : dv, o, count);
        if (accumulate)
        {
            load_values(old, dqkv, at, count);
            for (int k = 0; k < count; k++) x[k] = old[k] + x[k];
        }
        store_values(dqkv, at, x, count, 0);
        if (dqkv16) store_halves(dqkv16, at, x, count, format);
    });
}

// y [B, T, NH·HD] from o [B, NH, T, HD]; or y16 instead, in 16 bits (format 2 bf16, 3 fp16).
extern "C" __global__ void merge_heads(float* y, unsigned short* y16, int format, const float* o, int B, int T, int NH, int HD)
{
    bool vector = HD % 4 == 0 && aligned_for(y) && aligned_for(y16, format) && aligned_for(o);
    int width = NH * HD;
    packed_rows((long long)B * T, width, T, vector, [&](long long r, long long b, long long t, int j, int count) {
        int s;
        float x[4];
        load_values(x, o, head_offset(b, t, j, T, NH, HD, s), count);
        if (y16) store_halves(y16, r * width + j, x, count, format);
        else store_values(y, r * width + j, x, count, 0);
    });
}

// do [B, NH, T, HD] from dy [B, T, NH·HD]; or dout16 instead, in 16 bits (format 2 bf16, 3 fp16).
extern "C" __global__ void merge_heads_backward(float* dout, unsigned short* dout16, int format, const float* dy, int B, int T, int NH,
                                               int HD, int accumulate)
{
    bool vector = HD % 4 == 0 && aligned_for(dout) && aligned_for(dout16, format) && aligned_for(dy);
    int width = NH * HD;
    packed_rows((long long)B * T, width, T, vector, [&](long long r, long long b, long long t, int j, int count) {
        int s;
        float x[4];
        load_values(x, dy, r * width + j, count);
        long long o = head_offset(b, t, j, T, NH, HD, s);
        if (dout16) store_halves(dout16, o, x, count, format);
        else store_values(dout, o, x, count, accumulate);
    });
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
    long long ld;        // values between token rows of qkv (3·C)
    long long offset;    // q of token 0 in qkv
    const float* q;      // q of token 0 (k at +C, v at +2C); null without a float32 qkv
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
    a.offset = (long long)a.b * T * a.ld + (long long)a.h * HD;
    a.q = qkv ? qkv + a.offset : nullptr;
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

// Tensor-core fused attention, head dim D = 64 (ViT) or 32 (Swin), bf16 or fp16 operands (precision 2 or 3), fp32
// accumulation: the same results and rounding points as the FMA kernels (q, k, v, P, dO and dS rounded to 16 bits; softmax, its statistics and
// every sum fp32). A warp owns 16 rows (queries, or keys in the dk/dv kernel); a block of 4 warps 64. The other side
// streams through shared memory 64 rows at a time, rounded to 16 bits as it is loaded, in [row][dim] layout (the B
// operand of a product over dims) and transposed [dim][row] (the B operand of a product over rows), rows padded by 8
// values so the 8 groups of a warp hit different banks. Products are mma_16x8x16; scores live in accumulator fragments
// (a thread holds rows g and g+8, columns 2t and 2t+1 of each 8-column tile) and become the A operand of the next
// product as they are. Grid (ceil(T / 64), B·NH), 128 threads; qkv's and dy's rows and head columns 16-byte aligned
// (tiles are read as float4).
#define TC_ROWS 64
template <int D> using TcRows = unsigned short[TC_ROWS][D + 8]; // [row][dim]
template <int D> using TcCols = unsigned short[D][TC_ROWS + 8]; // [dim][row], rows placed by tc_col

// Where row r of a dim in 8-dim step `step` (dim / 8) sits in a [dim][row] tile. At D = 64 the rows go in pairs (one
// 32-bit word, as tc_accumulate reads them), the pair's word XORed with 2·step: load_tc_tiles stores a warp's values
// for 16 dims 4 apart and 2 rows, which in place fell on 2 banks (8-way conflicts) and swizzled fall on 16, while
// tc_accumulate's reads (the 8 dims of one step, 4 pairs) share the XOR and stay conflict-free. At D = 32 the rows stay
// in place (4-way conflicts there): the swizzle's address arithmetic cost its forward and key-side kernels 25 and 5
// registers at sm_90, one resident block per SM each.
template <int D> __device__ __forceinline__ int tc_col(int step, int r)
{
    if (D == 32) return r;
    return (((r >> 1) ^ (step << 1)) << 1) | (r & 1);
}

// One operand of load_tc_tiles: rows of [T, D] values `ld` apart, float32 (src) or already in 16 bits (src16, when not
// null: read as they are).
struct TcSource
{
    const float* src;
    long long ld;
    const unsigned short* src16;
};

// Part `part` (0 q, 1 k, 2 v) of this head's qkv as a load_tc_tiles operand: from q16 (qkv in 16 bits) when not null.
__device__ __forceinline__ TcSource qkv_source(const AttentionHead& a, const unsigned short* q16, int part)
{
    if (q16) return {nullptr, a.ld, q16 + part * a.C};
    return {a.q + part * a.C, a.ld, nullptr};
}

// Values 4·d4 .. 4·d4 + 3 of a source's row: one float4 load, or from a 16-bit source one 8-byte load whose two pairs
// ride in x and y (the registers the float4 would use, so a 16-bit tile costs none more). __ldg: the source pointer is
// picked between two, one null, so NVRTC cannot tell it is global and would issue a generic load.
__device__ __forceinline__ float4 tc_load4(const TcSource& s, int row, int d4)
{
    if (!s.src16) return __ldg(AS_VECTOR(const float4, s.src + (long long)row * s.ld) + d4);
    unsigned long long q = __ldg(AS_VECTOR(const unsigned long long, s.src16 + (long long)row * s.ld) + d4);
    float4 v;
    v.x = bits_float((unsigned int)q);
    v.y = bits_float((unsigned int)(q >> 32));
    v.z = v.w = 0.f;
    return v;
}

// Rows row0..row0+63 of two operands (zeros past T) into their tiles ([row][dim] and/or [dim][row]; null: not wanted),
// between barriers: each thread issues its D / 4 float4 loads before the first barrier (the previous tiles are
// consumed) and stores after it, so a tile costs about one memory latency. The tiles are parameters of their own, not
// members of TcSource: NVRTC does not follow a shared pointer through a struct, and the stores became generic ST.E.
template <int D>
__device__ __forceinline__ void load_tc_tiles(TcSource a, TcRows<D>* aRows, TcCols<D>* aCols, TcSource b, TcRows<D>* bRows, TcCols<D>* bCols,
                                              int T, int row0, int precision)
{
    const int perThread = TC_ROWS * D / 4 / 128;
    float4 va[perThread], vb[perThread], zero = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int r = 0; r < perThread; r++)
    {
        int e = threadIdx.x + 128 * r, row = row0 + e / (D / 4), d4 = e % (D / 4);
        va[r] = row < T ? tc_load4(a, row, d4) : zero;
        vb[r] = row < T ? tc_load4(b, row, d4) : zero;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < perThread; r++)
    {
        int e = threadIdx.x + 128 * r, rr = e / (D / 4), d = 4 * (e % (D / 4));
#pragma unroll
        for (int side = 0; side < 2; side++)
        {
            float4 v = side == 0 ? va[r] : vb[r];
            TcRows<D>* rows = side == 0 ? aRows : bRows;
            TcCols<D>* cols = side == 0 ? aCols : bCols;
            bool halves = (side == 0 ? a.src16 : b.src16) != nullptr;
            unsigned int p01 = halves ? float_bits(v.x) : pack_pair(v.x, v.y, precision);
            unsigned int p23 = halves ? float_bits(v.y) : pack_pair(v.z, v.w, precision);
            if (rows)
            {
                *AS_VECTOR(unsigned int, &(*rows)[rr][d]) = p01;
                *AS_VECTOR(unsigned int, &(*rows)[rr][d + 2]) = p23;
            }
            if (cols)
            {
                int at = tc_col<D>(d >> 3, rr); // the same for d + 1 .. d + 3 (d is a multiple of 4)
                (*cols)[d][at] = (unsigned short)(p01 & 0xffffu);
                (*cols)[d + 1][at] = (unsigned short)(p01 >> 16);
                (*cols)[d + 2][at] = (unsigned short)(p23 & 0xffffu);
                (*cols)[d + 3][at] = (unsigned short)(p23 >> 16);
            }
        }
    }
    __syncthreads();
}

// This warp's A fragments of rows r0..r0+15 × D dims of a row-major operand (zeros past T), one set per 16 dims, packed
// in the 16-bit format Precision (2 bf16, 3 fp16).
template <int D, int Precision>
__device__ __forceinline__ void load_a_fragments_as(unsigned int f[D / 16][4], const float* src, long long ld, int T, int r0)
{
    int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4, rowA = r0 + g, rowB = r0 + g + 8;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
    {
        const float *a = src + (long long)rowA * ld + 16 * kk + 2 * t, *b = src + (long long)rowB * ld + 16 * kk + 2 * t;
        f[kk][0] = rowA < T ? pack_pair(__ldg(a), __ldg(a + 1), Precision) : 0u;
        f[kk][1] = rowB < T ? pack_pair(__ldg(b), __ldg(b + 1), Precision) : 0u;
        f[kk][2] = rowA < T ? pack_pair(__ldg(a + 8), __ldg(a + 9), Precision) : 0u;
        f[kk][3] = rowB < T ? pack_pair(__ldg(b + 8), __ldg(b + 9), Precision) : 0u;
    }
}

// The same for a run-time precision: one call per format, so that pack_pair's switch on it is decided before the
// loads (inside it, each load sat in a branch of its own and waited for the one before: D / 4 round trips in a row).
template <int D>
__device__ __forceinline__ void load_a_fragments(unsigned int f[D / 16][4], const float* src, long long ld, int T, int r0, int precision)
{
    if (precision == 3) load_a_fragments_as<D, 3>(f, src, ld, T, r0);
    else load_a_fragments_as<D, 2>(f, src, ld, T, r0);
}

// The same from an operand already in 16 bits: each fragment register is a pair read as it is.
template <int D>
__device__ __forceinline__ void load_a_fragments(unsigned int f[D / 16][4], const unsigned short* src, long long ld, int T, int r0)
{
    int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4, rowA = r0 + g, rowB = r0 + g + 8;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
    {
        const unsigned short *a = src + (long long)rowA * ld + 16 * kk + 2 * t, *b = src + (long long)rowB * ld + 16 * kk + 2 * t;
        f[kk][0] = rowA < T ? *AS_VECTOR(const unsigned int, a) : 0u;
        f[kk][1] = rowB < T ? *AS_VECTOR(const unsigned int, b) : 0u;
        f[kk][2] = rowA < T ? *AS_VECTOR(const unsigned int, a + 8) : 0u;
        f[kk][3] = rowB < T ? *AS_VECTOR(const unsigned int, b + 8) : 0u;
    }
}

// Part `part` (0 q, 1 k, 2 v) of this head's qkv as A fragments of rows r0..r0+15: from q16 when not null.
template <int D>
__device__ __forceinline__ void load_qkv_fragments(unsigned int f[D / 16][4], const AttentionHead& a, const unsigned short* q16, int part,
                                                   int T, int r0, int precision)
{
    if (q16) load_a_fragments<D>(f, q16 + part * a.C, a.ld, T, r0);
    else load_a_fragments<D>(f, a.q + part * a.C, a.ld, T, r0, precision);
}

// s = A·Bᵀ over D dims: A this warp's 16 rows (fragments), B a [row][dim] tile whose rows from `rows` on are zeros (past
// T): their columns of s are left 0 without their products (a partial last tile, ViT's 197 = 3·64 + 5 keys, costs one
// 8-column product instead of eight). s[n] holds columns 8n..8n+7.
template <int D>
__device__ __forceinline__ void tc_scores(float s[TC_ROWS / 8][4], const unsigned int a[D / 16][4], const TcRows<D>& b, int rows, int precision)
{
    int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int n = 0; n < TC_ROWS / 8; n++)
    {
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
        if (8 * n >= rows) continue; // the same for the whole warp, as mma.sync needs
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
        {
            unsigned int f[2] = {*AS_VECTOR(const unsigned int, &b[8 * n + g][16 * kk + 2 * t]), *AS_VECTOR(const unsigned int, &b[8 * n + g][16 * kk + 8 + 2 * t])};
            mma_16x8x16(s[n], a[kk], f, precision);
        }
    }
}

// acc += P·B over a tile's rows: P this warp's 16 × 64 scores (rounded to 16 bits here), B a transposed [dim][row] tile;
// acc[n] holds dims 8n..8n+7. Rows from `rows` on (past T: zero scores against zero rows) add nothing and are skipped
// 16 at a time.
template <int D>
__device__ __forceinline__ void tc_accumulate(float acc[D / 8][4], const float p[TC_ROWS / 8][4], const TcCols<D>& bt, int rows, int precision)
{
    int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int kk = 0; kk < TC_ROWS / 16; kk++)
    {
        if (16 * kk >= rows) continue; // warp-uniform
        unsigned int pa[4] = {pack_pair(p[2 * kk][0], p[2 * kk][1], precision), pack_pair(p[2 * kk][2], p[2 * kk][3], precision),
                              pack_pair(p[2 * kk + 1][0], p[2 * kk + 1][1], precision), pack_pair(p[2 * kk + 1][2], p[2 * kk + 1][3], precision)};
#pragma unroll
        for (int n = 0; n < D / 8; n++)
        {
            const unsigned short* row = bt[8 * n + g]; // dims 8n .. 8n + 7: step n of tc_col
            unsigned int f[2] = {*AS_VECTOR(const unsigned int, row + tc_col<D>(n, 16 * kk + 2 * t)), *AS_VECTOR(const unsigned int, row + tc_col<D>(n, 16 * kk + 8 + 2 * t))};
            mma_16x8x16(acc[n], pa, f, precision);
        }
    }
}

// Writes (or adds) this warp's 16 rows × D dims of acc·factor at out + base + row·ld (rows below T only).
// out16, when not null, gets each value stored in 16 bits at the same place (format 2 bf16, 3 fp16): a gradient's copy
// for the products that read it (store_gradient). The offset travels apart from the pointers, which stay the kernel's
// own: an offset added to a pointer that may be null is picked by a select, and NVRTC made the stores through it generic.
template <int D>
__device__ __forceinline__ void store_tc_rows(float* out, unsigned short* out16, long long base, int format, long long ld,
                                              const float acc[D / 8][4], float factor, int T, int r0, int accumulate)
{
    int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int n = 0; n < D / 8; n++)
    {
        if (r0 + g < T)
        {
            long long at = base + (long long)(r0 + g) * ld + 8 * n + 2 * t;
            store_gradient(out, out16, format, at, acc[n][0] * factor, accumulate);
            store_gradient(out, out16, format, at + 1, acc[n][1] * factor, accumulate);
        }
        if (r0 + g + 8 < T)
        {
            long long at = base + (long long)(r0 + g + 8) * ld + 8 * n + 2 * t;
            store_gradient(out, out16, format, at, acc[n][2] * factor, accumulate);
            store_gradient(out, out16, format, at + 1, acc[n][3] * factor, accumulate);
        }
    }
}

// This warp's 16 rows × D dims of acc in 16 bits (precision 2 bf16, 3 fp16) at out + row·ld (rows below T only): an
// output that only products read.
template <int D>
__device__ __forceinline__ void store_tc_rows16(unsigned short* out, long long ld, const float acc[D / 8][4], int T, int r0, int precision)
{
    int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int n = 0; n < D / 8; n++)
    {
        if (r0 + g < T) *AS_VECTOR(unsigned int, out + (long long)(r0 + g) * ld + 8 * n + 2 * t) = pack_pair(acc[n][0], acc[n][1], precision);
        if (r0 + g + 8 < T) *AS_VECTOR(unsigned int, out + (long long)(r0 + g + 8) * ld + 8 * n + 2 * t) = pack_pair(acc[n][2], acc[n][3], precision);
    }
}

// The backward's elementwise step on a 16 × 64 tile, in place: s (scores) becomes P = exp(score − lse) and dp (dO·vᵀ)
// becomes dS = P ⊙ (dp − delta); zeros outside T × T. The tile's rows are r0 + g, r0 + g + 8 and its columns
// c0 + 8n + 2t (+1): queries × keys, or keys × queries when rowsAreKeys (the dk/dv kernel's transposed tiles).
__device__ __forceinline__ void tc_softmax_backward(float s[TC_ROWS / 8][4], float dp[TC_ROWS / 8][4], const AttentionHead& a, float scale,
                                                    int T, int r0, int c0, bool rowsAreKeys, const float* lseHead, const float* deltaHead)
{
    int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int n = 0; n < TC_ROWS / 8; n++)
#pragma unroll
        for (int c = 0; c < 4; c++)
        {
            int row = r0 + g + (c < 2 ? 0 : 8), col = c0 + 8 * n + 2 * t + c % 2;
            int i = rowsAreKeys ? col : row, j = rowsAreKeys ? row : col;
            bool inside = i < T && j < T;
            float p = inside ? expf(attention_score(s[n][c], scale, a.biasH, a.maskW, T, i, j) - lseHead[i]) : 0.f;
            s[n][c] = p;
            dp[n][c] = inside ? p * (dp[n][c] - deltaHead[i]) : 0.f;
        }
}

// The forward: S = q·kᵀ, an online softmax on its fragments, O += P·v; y [B, T, NH·HD] (or y16 instead, in the
// 16-bit precision, when not null) and lse [B, NH, T]. qkv float32, or qkv16 instead (already in that precision).
template <int D>
__device__ void attention_forward_tc(float* y, unsigned short* y16, float* lse, const float* qkv, const unsigned short* qkv16,
                                     const float* bias, const float* mask, int B, int T, int NH, int HD, int nW, float scale, int precision)
{
    __shared__ TcRows<D> ks; // k [key][dim]
    __shared__ TcCols<D> vt; // v transposed [dim][key]
    AttentionHead a = attention_head(qkv, bias, mask, T, NH, HD, nW);
    const unsigned short* q16 = qkv16 ? qkv16 + a.offset : nullptr; // qkv in 16 bits, read as it is
    int g = a.lane / 4, t = a.lane % 4;
    int row0 = (blockIdx.x * 4 + a.warp) * 16, rowA = row0 + g, rowB = row0 + g + 8; // this thread's two rows
    unsigned int qa[D / 16][4];
    load_qkv_fragments<D>(qa, a, q16, 0, T, row0, precision);
    const float minusInf = __int_as_float(0xff800000);
    float mA = minusInf, mB = minusInf, lA = 0.f, lB = 0.f; // running max and (this thread's part of the) sum per row
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    for (int j0 = 0; j0 < T; j0 += TC_ROWS)
    {
        load_tc_tiles<D>(qkv_source(a, q16, 1), &ks, nullptr, qkv_source(a, q16, 2), nullptr, &vt, T, j0, precision);
        if (row0 >= T) continue; // the whole warp (it still meets the barriers)
        int keys = min(TC_ROWS, T - j0); // the tile's keys below T
        float sc[TC_ROWS / 8][4];
        tc_scores<D>(sc, qa, ks, keys, precision);
        float tileA = minusInf, tileB = minusInf;
#pragma unroll
        for (int n = 0; n < TC_ROWS / 8; n++)
        {
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
        for (int n = 0; n < D / 8; n++)
        {
            o[n][0] *= corrA;
            o[n][1] *= corrA;
            o[n][2] *= corrB;
            o[n][3] *= corrB;
        }
#pragma unroll
        for (int n = 0; n < TC_ROWS / 8; n++)
        {
            if (8 * n >= keys) // past T: exp(−∞) = 0
            {
                sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
                continue;
            }
            sc[n][0] = expf(sc[n][0] - mNewA);
            sc[n][1] = expf(sc[n][1] - mNewA);
            sc[n][2] = expf(sc[n][2] - mNewB);
            sc[n][3] = expf(sc[n][3] - mNewB);
            lA += sc[n][0] + sc[n][1];
            lB += sc[n][2] + sc[n][3];
        }
        tc_accumulate<D>(o, sc, vt, keys, precision);
        mA = mNewA;
        mB = mNewB;
    }
    if (row0 >= T) return;
    lA += __shfl_xor_sync(FULL_MASK, lA, 1);
    lA += __shfl_xor_sync(FULL_MASK, lA, 2);
    lB += __shfl_xor_sync(FULL_MASK, lB, 1);
    lB += __shfl_xor_sync(FULL_MASK, lB, 2);
#pragma unroll
    for (int n = 0; n < D / 8; n++)
    {
        o[n][0] /= lA;
        o[n][1] /= lA;
        o[n][2] /= lB;
        o[n][3] /= lB;
    }
    long long yAt = (long long)a.b * T * a.C + (long long)a.h * HD;
    if (y16) store_tc_rows16<D>(y16 + yAt, a.C, o, T, row0, precision);
    else store_tc_rows<D>(y, nullptr, yAt, 0, a.C, o, 1.f, T, row0, 0);
    if (t == 0 && rowA < T) lse[(long long)a.bh * T + rowA] = mA + logf(lA);
    if (t == 0 && rowB < T) lse[(long long)a.bh * T + rowB] = mB + logf(lB);
}

// delta = Σ_d dO·y of this warp's 16 rows r0.. (rows below T), y float32 or, Packed, in the 16-bit `format` (as the
// forward kept it): a lane sums dims lane, lane + 32, ..., then the warp sums the lanes. Every row's values are loaded,
// as stored, before the first is widened or summed (a widening next to its load made each load wait for the one
// before), so the 16 rows wait for memory about once, not once per value.
template <int D, bool Packed>
__device__ __forceinline__ void tc_delta_rows(float* deltaHead, const float* dyHead, const void* yHead, int format, long long ld, int T, int r0)
{
    int lane = threadIdx.x % 32;
    float dyv[16][D / 32];
    unsigned int yv[16][D / 32];
#pragma unroll
    for (int r = 0; r < 16; r++)
#pragma unroll
        for (int c = 0; c < D / 32; c++)
        {
            long long at = (long long)(r0 + r) * ld + lane + 32 * c;
            dyv[r][c] = r0 + r < T ? dyHead[at] : 0.f;
            yv[r][c] = r0 + r < T ? load_stored<Packed>(yHead, at) : 0u;
        }
#pragma unroll
    for (int r = 0; r < 16; r++)
    {
        float part = 0.f;
#pragma unroll
        for (int c = 0; c < D / 32; c++) part += dyv[r][c] * widen_stored<Packed>(yv[r][c], format);
        float sum = warp_sum(part);
        if (r0 + r < T && lane == 0) deltaHead[r0 + r] = sum;
    }
}

// Backward, query side: delta [B, NH, T] = Σ_d dy·y per row, then (when dqkv is given) dq = scale·dS·k with
// P = exp(s − lse) and dS = P ⊙ (dO·vᵀ − delta), into dqkv's q columns (and dqkv16's, in 16 bits, when not null).
template <int D>
__device__ void attention_backward_dq_tc(float* dqkv, unsigned short* dqkv16, int copyFormat, float* delta, const float* dy, const float* y,
                                         const unsigned short* y16, const float* lse, const float* qkv, const unsigned short* qkv16,
                                         const float* bias, const float* mask, int B, int T, int NH, int HD, int nW, float scale,
                                         int accumulate, int precision)
{
    __shared__ TcRows<D> ks, vs; // k and v [key][dim]
    __shared__ TcCols<D> kt;     // k [dim][key]
    AttentionHead a = attention_head(qkv, bias, mask, T, NH, HD, nW);
    const unsigned short* q16 = qkv16 ? qkv16 + a.offset : nullptr; // qkv in 16 bits, read as it is
    int row0 = (blockIdx.x * 4 + a.warp) * 16;
    long long headAt = (long long)a.b * T * a.C + (long long)a.h * HD;
    const float* dyHead = dy + headAt;
    // delta of this warp's 16 rows (read back below by the warp's own threads, after load_tc_tiles' barriers)
    float* deltaHead = delta + (long long)a.bh * T;
    if (y16) tc_delta_rows<D, true>(deltaHead, dyHead, y16 + headAt, precision, a.C, T, row0);
    else tc_delta_rows<D, false>(deltaHead, dyHead, y + headAt, 0, a.C, T, row0);
    if (!dqkv) return;
    unsigned int qa[D / 16][4], da[D / 16][4];
    load_qkv_fragments<D>(qa, a, q16, 0, T, row0, precision);
    load_a_fragments<D>(da, dyHead, a.C, T, row0, precision);
    const float* lseHead = lse + (long long)a.bh * T;
    float dq[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;
    for (int j0 = 0; j0 < T; j0 += TC_ROWS)
    {
        load_tc_tiles<D>(qkv_source(a, q16, 1), &ks, &kt, qkv_source(a, q16, 2), &vs, nullptr, T, j0, precision);
        if (row0 >= T) continue;
        int keys = min(TC_ROWS, T - j0);
        float sc[TC_ROWS / 8][4], ds[TC_ROWS / 8][4];
        tc_scores<D>(sc, qa, ks, keys, precision);
        tc_scores<D>(ds, da, vs, keys, precision);
        tc_softmax_backward(sc, ds, a, scale, T, row0, j0, false, lseHead, deltaHead);
        tc_accumulate<D>(dq, ds, kt, keys, precision);
    }
    if (row0 >= T) return;
    long long dqAt = (long long)a.b * T * a.ld + (long long)a.h * HD;
    store_tc_rows<D>(dqkv, dqkv16, dqAt, copyFormat, a.ld, dq, scale, T, row0, accumulate);
}

// Backward, key side: dk = scale·dSᵀ·q and dv = Pᵀ·dO for this block's keys, from Sᵀ = k·qᵀ and dPᵀ = v·dOᵀ, with
// delta from fused_attention_backward_dq_tc; into dqkv's k and v columns (and dqkv16's, in 16 bits, when not null).
template <int D>
__device__ void attention_backward_dkdv_tc(float* dqkv, unsigned short* dqkv16, int copyFormat, const float* delta, const float* dy,
                                           const float* lse, const float* qkv, const unsigned short* qkv16, const float* bias,
                                           const float* mask, int B, int T, int NH, int HD, int nW, float scale, int accumulate,
                                           int precision)
{
    __shared__ TcRows<D> qs, dos; // q and dO [query][dim]
    __shared__ TcCols<D> qt, dot; // and [dim][query]
    AttentionHead a = attention_head(qkv, bias, mask, T, NH, HD, nW);
    const unsigned short* q16 = qkv16 ? qkv16 + a.offset : nullptr; // qkv in 16 bits, read as it is
    int key0 = (blockIdx.x * 4 + a.warp) * 16;
    const float* dyHead = dy + (long long)a.b * T * a.C + (long long)a.h * HD;
    const float *lseHead = lse + (long long)a.bh * T, *deltaHead = delta + (long long)a.bh * T;
    unsigned int ka[D / 16][4], va[D / 16][4];
    load_qkv_fragments<D>(ka, a, q16, 1, T, key0, precision);
    load_qkv_fragments<D>(va, a, q16, 2, T, key0, precision);
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.f;
    for (int i0 = 0; i0 < T; i0 += TC_ROWS)
    {
        load_tc_tiles<D>(qkv_source(a, q16, 0), &qs, &qt, TcSource{dyHead, a.C, nullptr}, &dos, &dot, T, i0, precision);
        if (key0 >= T) continue;
        int queries = min(TC_ROWS, T - i0); // the tile's queries below T
        float pt[TC_ROWS / 8][4], dst[TC_ROWS / 8][4]; // Pᵀ and dSᵀ: rows are this warp's keys, columns the tile's queries
        tc_scores<D>(pt, ka, qs, queries, precision);
        tc_scores<D>(dst, va, dos, queries, precision);
        tc_softmax_backward(pt, dst, a, scale, T, key0, i0, true, lseHead, deltaHead);
        tc_accumulate<D>(dv, pt, dot, queries, precision);
        tc_accumulate<D>(dk, dst, qt, queries, precision);
    }
    if (key0 >= T) return;
    long long dkAt = (long long)a.b * T * a.ld + a.C + (long long)a.h * HD;
    store_tc_rows<D>(dqkv, dqkv16, dkAt, copyFormat, a.ld, dk, scale, T, key0, accumulate);
    store_tc_rows<D>(dqkv, dqkv16, dkAt + a.C, copyFormat, a.ld, dv, 1.f, T, key0, accumulate);
}

// The entry points, one per head dim: 64 (ViT's heads; no suffix) and 32 (Swin's). Each instance has shared tiles of
// its own size, so each dim is a kernel of its own. (Written out: NVRTC 11.8 with -lineinfo crashes on a kernel whose
// parameter list comes from a macro.)
extern "C" __global__ void fused_attention_forward_tc(float* y, unsigned short* y16, float* lse, const float* qkv, const unsigned short* qkv16,
    const float* bias, const float* mask, int B, int T, int NH, int HD, int nW, float scale, int precision)
{ attention_forward_tc<64>(y, y16, lse, qkv, qkv16, bias, mask, B, T, NH, HD, nW, scale, precision); }
extern "C" __global__ void fused_attention_forward_tc32(float* y, unsigned short* y16, float* lse, const float* qkv, const unsigned short* qkv16,
    const float* bias, const float* mask, int B, int T, int NH, int HD, int nW, float scale, int precision)
{ attention_forward_tc<32>(y, y16, lse, qkv, qkv16, bias, mask, B, T, NH, HD, nW, scale, precision); }
extern "C" __global__ void fused_attention_backward_dq_tc(float* dqkv, unsigned short* dqkv16, int copyFormat, float* delta, const float* dy,
    const float* y, const unsigned short* y16, const float* lse, const float* qkv, const unsigned short* qkv16, const float* bias, const float* mask,
    int B, int T, int NH, int HD, int nW, float scale, int accumulate, int precision)
{ attention_backward_dq_tc<64>(dqkv, dqkv16, copyFormat, delta, dy, y, y16, lse, qkv, qkv16, bias, mask, B, T, NH, HD, nW, scale, accumulate, precision); }
extern "C" __global__ void fused_attention_backward_dq_tc32(float* dqkv, unsigned short* dqkv16, int copyFormat, float* delta, const float* dy,
    const float* y, const unsigned short* y16, const float* lse, const float* qkv, const unsigned short* qkv16, const float* bias, const float* mask,
    int B, int T, int NH, int HD, int nW, float scale, int accumulate, int precision)
{ attention_backward_dq_tc<32>(dqkv, dqkv16, copyFormat, delta, dy, y, y16, lse, qkv, qkv16, bias, mask, B, T, NH, HD, nW, scale, accumulate, precision); }
extern "C" __global__ void fused_attention_backward_dkdv_tc(float* dqkv, unsigned short* dqkv16, int copyFormat, const float* delta, const float* dy,
    const float* lse, const float* qkv, const unsigned short* qkv16, const float* bias, const float* mask, int B, int T, int NH, int HD, int nW,
    float scale, int accumulate, int precision)
{ attention_backward_dkdv_tc<64>(dqkv, dqkv16, copyFormat, delta, dy, lse, qkv, qkv16, bias, mask, B, T, NH, HD, nW, scale, accumulate, precision); }
extern "C" __global__ void __launch_bounds__(128, 3) fused_attention_backward_dkdv_tc32(float* dqkv, unsigned short* dqkv16, int copyFormat, const float* delta, const float* dy,
    const float* lse, const float* qkv, const unsigned short* qkv16, const float* bias, const float* mask, int B, int T, int NH, int HD, int nW,
    float scale, int accumulate, int precision)
{ attention_backward_dkdv_tc<32>(dqkv, dqkv16, copyFormat, delta, dy, lse, qkv, qkv16, bias, mask, B, T, NH, HD, nW, scale, accumulate, precision); }

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
