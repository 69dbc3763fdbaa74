// common.cuh: helpers shared by every kernel family. Compiles under NVRTC (the GPU) and under g++ with
// emu/cuemu.h (the emulated device in CI), so nothing here may need a CUDA header or the C++ library.
#pragma once
#ifdef __CUEMU__
#include "emu/cuemu.h"
#endif

#define FULL_MASK 0xffffffffu

// p as a V* for one wide access (a float4, or 8 or 4 bytes of 16-bit values). A GPU faults on a wide access that is not
// aligned to its size ("misaligned address"), where x86 quietly allows it, so the emulated device checks each one and
// fails the launch that makes one. A plain cast on the GPU (a macro: through a function, NVRTC 11.8 loses the global
// address space of some loads and issues generic ones).
#ifdef __CUEMU__
#define AS_VECTOR(V, p) (static_cast<V*>(cuemu::check_aligned((p), sizeof(V))))
#else
#define AS_VECTOR(V, p) ((V*)(p))
#endif

// Grid-stride loop over [0, n): the grid is sized to the device (a few blocks per multiprocessor), not to n.
#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// __launch_bounds__ from sm_80 on: a register cap that ptxas meets there without spilling but that sm_70's would meet
// only with a stack frame (a column reduction launched at 8 blocks of 256 threads per multiprocessor, which 8 fit
// only at 32 registers or fewer).
#if defined(__CUDA_ARCH__) && !defined(__CUEMU__) && __CUDA_ARCH__ < 800
#define LAUNCH_BOUNDS_FROM_SM80(threads, blocks)
#else
#define LAUNCH_BOUNDS_FROM_SM80(threads, blocks) __launch_bounds__(threads, blocks)
#endif

// Tensors per launch of a multi-tensor kernel (fill_many, adam_step_many): their pointers and sizes travel in a
// struct kernel argument (about 1.4 KiB for Adam's), one block row (blockIdx.y) per tensor.
#define TENSORS_PER_LAUNCH 32

// Rows spread over the warps of the grid: one warp owns a row (LayerNorm, softmax, cross-entropy).
#define WARP_PER_ROW(row, rows)                                                                          \
    for (long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32; row < (rows);          \
         row += (long long)gridDim.x * blockDim.x / 32)

// Every lane gets the warp's sum (or max), from xor shuffles 16, 8, 4, 2, 1 apart; the emulated device computes the
// same steps from the warp's values gathered with one barrier.
template <class T> __device__ __forceinline__ T warp_sum(T v)
{
#ifdef __CUEMU__
    return cuemu::warp_butterfly(v, [](T a, T b) { return a + b; });
#else
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
#endif
}

__device__ __forceinline__ float warp_max(float v)
{
#ifdef __CUEMU__
    return cuemu::warp_butterfly(v, [](float a, float b) { return fmaxf(a, b); });
#else
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
#endif
}

// Sum over all threads of a 1-D block (blockDim.x a multiple of 32, at most 1024); the result is valid in
// thread 0. Fixed order, so deterministic. Ends with a barrier so it can be called again.
template <class T> __device__ T block_sum(T v)
{
    __shared__ T partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    T total = 0;
    if (threadIdx.x == 0)
        for (int w = 0; w < warps; w++) total += partial[w];
    __syncthreads();
    return total;
}

// Column reduction for a (32, 8) block: thread (x, y) sums term(r) over rows r = y, y + 8, ... for its column; the
// eight partial sums are then added in a fixed order. Valid in threadIdx.y == 0. A grid of gridDim.z > 1 cuts the
// rows into gridDim.z equal slices, block z summing slice z (so that narrow outputs still fill the device); each
// slice's sum then goes to column_result's partials, and column_partials_sum adds them in slice order.
#define COLUMN_THREADS_Y 8

// This block's rows [begin, end) when the rows are cut into gridDim.z slices.
__device__ __forceinline__ void column_slice(int rows, int& begin, int& end)
{
    int per_slice = (rows + (int)gridDim.z - 1) / (int)gridDim.z;
    begin = min(rows, (int)blockIdx.z * per_slice);
    end = min(rows, begin + per_slice);
}

// The block's column totals: thread (x, 0) gets the sum of the eight threads (x, y)'s s, added in y order. Every
// thread of the block calls it; the closing barrier lets a kernel call it again.
__device__ __forceinline__ float column_total(float s)
{
    __shared__ float partial[COLUMN_THREADS_Y][33];
    partial[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    float total = 0.f;
    if (threadIdx.y == 0)
        for (int k = 0; k < COLUMN_THREADS_Y; k++) total += partial[k][threadIdx.x];
    __syncthreads();
    return total;
}

template <class F> __device__ float column_sum(int rows, bool active, F term)
{
    int begin, end;
    column_slice(rows, begin, end);
    float s = 0.f;
    if (active)
        for (int r = begin + threadIdx.y; r < end; r += COLUMN_THREADS_Y) s += term(r);
    return column_total(s);
}

// Writes or accumulates one output element (the kernel contract's `accumulate` flag).
__device__ __forceinline__ void store(float* p, float v, int accumulate) { *p = accumulate ? *p + v : v; }

// Where a column reduction's sum for output i (of count) goes: out[i] (stored or accumulated, times scale) when the
// rows are not sliced; else this slice's partial, partials[blockIdx.z · count + i], for column_partials_sum.
__device__ __forceinline__ void column_result(float* out, float* partials, long long count, long long i, float sum,
                                              float scale, int accumulate)
{
    if (gridDim.z == 1) store(out + i, scale * sum, accumulate);
    else partials[blockIdx.z * count + i] = sum;
}

// Exact GELU, x·Φ(x) with Φ(x) = (1 + erf(x/√2)) / 2, and its slope Φ(x) + x·φ(x) (activations.cu, and SSF's
// scale-shift followed by GELU in norm.cu).
__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_slope(float x)
{
    return 0.5f * (1.f + erff(x * 0.70710678118654752f)) + x * 0.39894228040143268f * expf(-0.5f * x * x);
}

// Counter-based uniform in [0, 1): SplitMix64's finaliser of (seed, counter), the top 24 bits. Bit-identical
// to Engine.Kernels.CounterRng, so every backend draws the same dropout masks.
__device__ __forceinline__ float counter_uniform(unsigned long long seed, unsigned long long counter)
{
    unsigned long long z = seed + (counter + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// Low-precision storage (mixed-precision GEMM operands): 16-bit bfloat16 and IEEE half, our own types so the files
// compile under NVRTC without NVIDIA's headers and under the emulator. Conversions round to nearest, ties to even, bit
// for bit as Engine.Kernels.LowPrecision on the CPU: NaN stays a quiet NaN, half overflows to ±inf and keeps subnormals.
// From sm_80 one cvt instruction converts (the same rounding; a NaN comes out as the canonical quiet NaN, not with its
// payload kept), where the portable code takes 5 instructions for bf16 and a dozen, with branches, for half.
struct bf16 { unsigned short bits; };
struct fp16 { unsigned short bits; };

// x with the low `drop` significand bits rounded away (13: tf32, 16: bf16), still an fp32 bit pattern.
__device__ __forceinline__ unsigned int round_significand(unsigned int u, int drop)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) return u | 0x00400000u; // NaN: quiet
    return (u + ((1u << (drop - 1)) - 1u) + ((u >> drop) & 1u)) & ~((1u << drop) - 1u);
}

__device__ __forceinline__ float round_tf32(float x) { return __int_as_float((int)round_significand((unsigned int)__float_as_int(x), 13)); }

__device__ __forceinline__ bf16 to_bf16(float x)
{
    bf16 r;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(__CUEMU__)
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
#else
    r.bits = (unsigned short)(round_significand((unsigned int)__float_as_int(x), 16) >> 16);
#endif
    return r;
}

__device__ __forceinline__ float from_bf16(bf16 h) { return __int_as_float((int)((unsigned int)h.bits << 16)); }

__device__ __forceinline__ fp16 to_fp16(float x)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(__CUEMU__)
    fp16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
#else
    unsigned int u = (unsigned int)__float_as_int(x), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    fp16 r;
    if (a > 0x7f800000u) r.bits = (unsigned short)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); // NaN, quiet
    else if (a >= 0x477ff000u) r.bits = (unsigned short)(sign | 0x7c00u);                  // ≥ 65520 (and inf): inf
    else if (a >= 0x38800000u)                                                               // normal: |x| ≥ 2⁻¹⁴
        r.bits = (unsigned short)(sign | ((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13)); // exponent 127 → 15
    else
    {
        // Subnormal (or zero): the half is m·2⁻²⁴ with m = |x|·2²⁴ rounded, |x| = s·2^(e−150) for exponent field e.
        int e = (int)(a >> 23);
        unsigned int m = 0;
        if (e >= 102) // below that |x| < 2⁻²⁵: rounds to zero
        {
            unsigned int s = (a & 0x7fffffu) | 0x800000u;
            int shift = 126 - e; // 14 .. 24
            unsigned int rest = s & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
            m = s >> shift;
            if (rest > halfway || (rest == halfway && (m & 1u))) m++; // 1024 is the smallest normal, correctly encoded
        }
        r.bits = (unsigned short)(sign | m);
    }
#endif
    return r;
}

__device__ __forceinline__ float from_fp16(fp16 h)
{
    unsigned int sign = ((unsigned int)h.bits & 0x8000u) << 16, e = ((unsigned int)h.bits >> 10) & 0x1fu, m = h.bits & 0x3ffu;
    if (e == 31) return __int_as_float((int)(sign | 0x7f800000u | (m << 13)));
    if (e == 0)
    {
        float v = (float)m * 5.9604644775390625e-8f; // m·2⁻²⁴, exact
        return sign ? -v : v;
    }
    return __int_as_float((int)(sign | ((e + 112u) << 23) | (m << 13)));
}

// Element i of an operand that is float32 (format 0) or packed 16-bit values (2 bf16, 3 fp16; Precision's order), as a
// float: a saved activation read as it was kept, with no widened copy.
__device__ __forceinline__ float load_operand(const void* p, int format, long long i)
{
    if (format == 2) { bf16 h; h.bits = ((const unsigned short*)p)[i]; return from_bf16(h); }
    if (format == 3) { fp16 h; h.bits = ((const unsigned short*)p)[i]; return from_fp16(h); }
    return ((const float*)p)[i];
}

// Elementwise kernels take four values per thread: one 16-byte load keeps four values in flight (what a memory-bound
// kernel needs to reach copy speed) and the index arithmetic is paid once per four. grid_stride_quads calls
// body(i, 4) for i = 0, 4, 8, ... while i + 4 ≤ n when `vector` (the caller's pointers aligned for it: aligned_for), then
// body(i, 1) for each value left (all of them when not vector). The body moves `count` values with the helpers below,
// so one body serves both (count is a constant after inlining).
template <class F> __device__ __forceinline__ void grid_stride_quads(long long n, bool vector, F body)
{
    long long quads = vector ? n / 4 : 0;
    GRID_STRIDE(q, quads) body(4 * q, 4);
    GRID_STRIDE(i, n - 4 * quads) body(4 * quads + i, 1);
}

// Whether p may be read four values at a time: 16-byte aligned for floats (format 0), 8-byte for 16-bit values
// (formats 2 and 3); a null pointer does not matter.
__device__ __forceinline__ bool aligned_for(const void* p, int format = 0)
{
    return ((unsigned long long)p & (format == 0 ? 15u : 7u)) == 0;
}

// v[0 .. count) = p[i .. i + count), count 4 (one float4 load) or 1.
__device__ __forceinline__ void load_values(float v[4], const float* p, long long i, int count)
{
    if (count == 4)
    {
        float4 q = *AS_VECTOR(const float4, p + i);
        v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
    }
    else v[0] = p[i];
}

// The same from an operand that is float32 (format 0) or 16-bit (2 bf16, 3 fp16; one 8-byte load), widened.
__device__ __forceinline__ void load_values(float v[4], const void* p, int format, long long i, int count)
{
    if (format == 0) { load_values(v, (const float*)p, i, count); return; }
    if (count != 4) { v[0] = load_operand(p, format, i); return; }
    unsigned long long q = *AS_VECTOR(const unsigned long long, (const unsigned short*)p + i);
    for (int k = 0; k < 4; k++)
    {
        unsigned short bits = (unsigned short)(q >> (16 * k));
        if (format == 3) { fp16 h; h.bits = bits; v[k] = from_fp16(h); }
        else { bf16 h; h.bits = bits; v[k] = from_bf16(h); }
    }
}

// p[i .. i + count) = v (or += v: the kernel contract's `accumulate` flag), count 4 (one float4 store) or 1.
__device__ __forceinline__ void store_values(float* p, long long i, const float v[4], int count, int accumulate)
{
    if (count != 4) { store(p + i, v[0], accumulate); return; }
    float4 q;
    q.x = v[0]; q.y = v[1]; q.z = v[2]; q.w = v[3];
    if (accumulate)
    {
        float4 o = *AS_VECTOR(const float4, p + i);
        q.x += o.x; q.y += o.y; q.z += o.z; q.w += o.w;
    }
    *AS_VECTOR(float4, p + i) = q;
}

// p[i .. i + count) = v rounded to 16 bits (format 2 bf16, 3 fp16), count 4 (one 8-byte store) or 1.
__device__ __forceinline__ void store_halves(unsigned short* p, long long i, const float v[4], int count, int format)
{
    unsigned long long q = 0;
    for (int k = 0; k < count; k++) q |= (unsigned long long)(format == 3 ? to_fp16(v[k]).bits : to_bf16(v[k]).bits) << (16 * k);
    if (count == 4) *AS_VECTOR(unsigned long long, p + i) = q;
    else p[i] = (unsigned short)q;
}

// A gradient element written at dx[i], or added to it (accumulate), and the value stored also at dx16[i] in 16 bits
// (format 2 bf16, 3 fp16) when dx16 is not null: the copy that the products reading this gradient take.
__device__ __forceinline__ void store_gradient(float* dx, unsigned short* dx16, int format, long long i, float v, int accumulate)
{
    if (accumulate) v = dx[i] + v;
    dx[i] = v;
    if (dx16) store_halves(dx16, i, &v, 1, format);
}

// A float's bits as an unsigned int and back (a register that carries two 16-bit values through float storage).
__device__ __forceinline__ unsigned int float_bits(float f)
{
#ifdef __CUEMU__
    return std::bit_cast<unsigned int>(f);
#else
    return __float_as_uint(f);
#endif
}

__device__ __forceinline__ float bits_float(unsigned int u)
{
#ifdef __CUEMU__
    return std::bit_cast<float>(u);
#else
    return __uint_as_float(u);
#endif
}

// Two values as the 16-bit pair a tensor-core fragment register holds (lo in bits 0-15), in bf16 (precision 2) or
// fp16 (3). From sm_80 one cvt instruction rounds both (to nearest, ties to even, as to_bf16 and to_fp16 do; only a
// NaN's payload may differ).
__device__ __forceinline__ unsigned int pack_pair(float lo, float hi, int precision)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(__CUEMU__)
    unsigned int pair;
    if (precision == 3) asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(pair) : "f"(hi), "f"(lo));
    else asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(pair) : "f"(hi), "f"(lo));
    return pair;
#else
    unsigned int a = precision == 3 ? to_fp16(lo).bits : to_bf16(lo).bits, b = precision == 3 ? to_fp16(hi).bits : to_bf16(hi).bits;
    return a | b << 16;
#endif
}

// The 16-bit value in half `upper` of a fragment register, as a float.
__device__ __forceinline__ float unpack_half(unsigned int pair, int upper, int precision)
{
    unsigned short bits = (unsigned short)(upper ? pair >> 16 : pair & 0xffffu);
    if (precision == 3) { fp16 h; h.bits = bits; return from_fp16(h); }
    bf16 h; h.bits = bits; return from_bf16(h);
}

// d += a·b on tensor cores, one warp: mma.sync m16n8k16 with 16-bit operands (bf16, or fp16 when precision is 3) and
// fp32 accumulators, all 32 lanes together. Fragments (g = lane / 4, t = lane % 4): a[0] holds A[g][2t, 2t+1], a[1]
// A[g+8][2t..], a[2] A[g][2t+8..], a[3] A[g+8][2t+8..] of the 16×16 A; b[0] holds B[2t, 2t+1][g], b[1] B[2t+8..][g]
// of the 16×8 B; d[0], d[1] are D[g][2t, 2t+1] and d[2], d[3] D[g+8][2t..]. On the emulated device the same product
// runs once for the warp on its gathered fragments (every operand exact in fp32, each sum in k order). A GPU below sm_80 has no
// such instruction and the engine never launches these kernels there (CudaKernels.UsesTensorCoreAttention), so its
// build traps instead: the unrolled emulation took NVRTC 40 s more for sm_70, compiled on first use.
__device__ __forceinline__ void mma_16x8x16(float d[4], const unsigned int a[4], const unsigned int b[2], int precision)
{
#if defined(__CUDA_ARCH__) && !defined(__CUEMU__) && __CUDA_ARCH__ < 800
    __trap();
#elif defined(__CUDA_ARCH__) && !defined(__CUEMU__)
    if (precision == 3)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    // The warp's fragments and sums gathered with one barrier (64 shuffles would each take one); the first lane past it
    // multiplies the whole tile, each sum in k order as a lane's 16 steps would, and every lane takes its four sums.
    struct Fragments { unsigned int a[4], b[2]; float d[4]; };
    const Fragments* f = cuemu::warp_all_gather(Fragments{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {d[0], d[1], d[2], d[3]}});
    struct Tile { float d[16][8]; };
    const Tile& tile = cuemu::warp_once<Tile>([&](Tile& out)
    {
        float A[16][16], B[16][8];
        for (int lane = 0; lane < 32; lane++)
        {
            int g = lane / 4, t = lane % 4;
            for (int upper = 0; upper < 2; upper++)
            {
                A[g][2 * t + upper] = unpack_half(f[lane].a[0], upper, precision);
                A[g + 8][2 * t + upper] = unpack_half(f[lane].a[1], upper, precision);
                A[g][2 * t + 8 + upper] = unpack_half(f[lane].a[2], upper, precision);
                A[g + 8][2 * t + 8 + upper] = unpack_half(f[lane].a[3], upper, precision);
                B[2 * t + upper][g] = unpack_half(f[lane].b[0], upper, precision);
                B[2 * t + 8 + upper][g] = unpack_half(f[lane].b[1], upper, precision);
                out.d[g + 8 * upper][2 * t] = f[lane].d[2 * upper];
                out.d[g + 8 * upper][2 * t + 1] = f[lane].d[2 * upper + 1];
            }
        }
        for (int m = 0; m < 16; m++)
            for (int k = 0; k < 16; k++)
                for (int n = 0; n < 8; n++) out.d[m][n] += A[m][k] * B[k][n];
    });
    int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    d[0] = tile.d[g][2 * t], d[1] = tile.d[g][2 * t + 1], d[2] = tile.d[g + 8][2 * t], d[3] = tile.d[g + 8][2 * t + 1];
#endif
}

// x rounded to a Precision (0 fp32, 1 tf32, 2 bf16, 3 fp16; the order of Engine.Kernels.Precision), as a float.
__device__ __forceinline__ float to_precision(float x, int precision)
{
    switch (precision)
    {
    case 1: return round_tf32(x);
    case 2: return from_bf16(to_bf16(x));
    case 3: return from_fp16(to_fp16(x));
    default: return x;
    }
}

// Element i of an operand as it is stored: the 16 bits of a packed value, or a float32's bits. With the format a
// template parameter, a loop of these loads has no branch, so a thread can issue several before it uses any.
template <bool Packed> __device__ __forceinline__ unsigned int load_stored(const void* p, long long i)
{
    return Packed ? (unsigned int)((const unsigned short*)p)[i] : (unsigned int)__float_as_int(((const float*)p)[i]);
}

// A stored value as a float in `precision` (0 fp32, 1 tf32, 2 bf16, 3 fp16): a packed value, which is stored in that
// precision, widened exactly; a float32 rounded to it (fp32 leaves it as it is).
template <bool Packed> __device__ __forceinline__ float widen_stored(unsigned int v, int precision)
{
    if (!Packed) return to_precision(__int_as_float((int)v), precision);
    if (precision == 3) { fp16 h; h.bits = (unsigned short)v; return from_fp16(h); }
    bf16 h; h.bits = (unsigned short)v; return from_bf16(h);
}
