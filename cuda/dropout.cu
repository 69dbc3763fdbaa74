// dropout.cu: dropout and drop-path as one kernel. Sample s = i / perSample is kept, scaled by 1/(1−p), when
// counter_uniform(seed ^ *seedOffset, s) ≥ p (no offset when seedOffset is null: a captured graph's replays write a
// new one there); the mask is recomputed in backward, never stored. The backward is the same map applied to dy. With
// a residual, y = residual + the dropped x (a block's residual join after stochastic depth, in one pass).
// Launch: 1-D grid-stride, 256 threads, four values per thread where the pointers allow, and within a sample one draw
// per four values.
#include "common.cuh"

// Values i .. i + count − 1 (count 4 or 1), the first at place `offset` of sample `sample`. The kept product is rounded
// before the residual is added (__fmul_rn: no FMA), as DropPath then Add round it.
__device__ __forceinline__ void drop_values(float* y, const float* x, const float* residual, long long i, int count, long long sample,
                                            long long offset, long long perSample, float p, unsigned long long seed, float keepScale,
                                            int accumulate)
{
    float v[4], r[4] = {0.f, 0.f, 0.f, 0.f};
    load_values(v, x, i, count);
    if (residual) load_values(r, residual, i, count);
    bool keep = counter_uniform(seed, (unsigned long long)sample) >= p;
    for (int k = 0; k < count; k++)
    {
        if (offset == perSample) // the quad runs into the next sample
        {
            keep = counter_uniform(seed, (unsigned long long)++sample) >= p;
            offset = 0;
        }
        v[k] = keep ? __fmul_rn(v[k], keepScale) : 0.f;
        if (residual) v[k] = r[k] + v[k];
        offset++;
    }
    store_values(y, i, v, count, accumulate);
}

extern "C" __global__ void drop_samples(float* y, const float* x, const float* residual, long long n, long long perSample, float p,
                                       unsigned long long seed, const unsigned long long* seedOffset, int accumulate)
{
    if (n == 0) return;
    float keepScale = 1.f / (1.f - p);
    if (seedOffset) seed ^= *seedOffset;
    // The quads as grid_stride_quads walks them, with this thread's first quad's sample and place found by one division
    // and each step's moved on by adds (the step's whole samples and rest): a 64-bit division per quad costs more
    // instructions than moving its 32 bytes takes.
    long long quads = aligned_for(y) && aligned_for(x) && aligned_for(residual) ? n / 4 : 0, threads = (long long)gridDim.x * blockDim.x;
    long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stepSamples = 4 * threads / perSample, stepRest = 4 * threads - stepSamples * perSample;
    long long sample = 4 * first / perSample, offset = 4 * first - sample * perSample;
    for (long long q = first; q < quads; q += threads)
    {
        drop_values(y, x, residual, 4 * q, 4, sample, offset, perSample, p, seed, keepScale, accumulate);
        sample += stepSamples;
        offset += stepRest;
        if (offset >= perSample) offset -= perSample, sample++;
    }
    GRID_STRIDE(i, n - 4 * quads)
    {
        long long at = 4 * quads + i, s = at / perSample;
        drop_values(y, x, residual, at, 1, s, at - s * perSample, perSample, p, seed, keepScale, accumulate);
    }
}
