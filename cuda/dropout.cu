// dropout.cu: dropout and drop-path as one kernel. Sample s = i / perSample is kept, scaled by 1/(1−p), when
// counter_uniform(seed ^ *seedOffset, s) ≥ p (no offset when seedOffset is null: a captured graph's replays write a
// new one there); the mask is recomputed in backward, never stored. The backward is the same map applied to dy.
// Launch: 1-D grid-stride, 256 threads.
#include "common.cuh"

extern "C" __global__ void drop_samples(float* y, const float* x, long long n, long long perSample, float p,
                                       unsigned long long seed, const unsigned long long* seedOffset, int accumulate)
{
    float keepScale = 1.f / (1.f - p);
    if (seedOffset) seed ^= *seedOffset;
    GRID_STRIDE(i, n)
    {
        float v = counter_uniform(seed, (unsigned long long)(i / perSample)) >= p ? x[i] * keepScale : 0.f;
        store(y + i, v, accumulate);
    }
}
