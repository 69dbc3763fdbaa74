// attention.cu: the permutes around the attention GEMMs. Packed rows [B, T, S, NH, HD] (S = 3 for timm's q|k|v
// columns, S = 1 for merged heads) ↔ per-head [B, NH, T, HD]. One thread per per-head element, consecutive
// threads along HD, so both sides are read and written in runs. Launch: 1-D grid-stride, 256 threads.
#include "common.cuh"

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
