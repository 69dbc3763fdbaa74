// dropout.cu: dropout and drop-path as one kernel. Sample s = i / perSample is kept, scaled by 1/(1−p), when
// counter_uniform(seed ^ *seedOffset, s) ≥ p (no offset when seedOffset is null: a captured graph's replays write a
// new one there); the mask is recomputed in backward, never stored. The backward is the same map applied to dy.
// Launch: 1-D grid-stride, 256 threads, four values per thread where the pointers allow: one division and, within a
// sample, one draw per four values.
#include "common.cuh"

extern "C" __global__ void drop_samples(float* y, const float* x, long long n, long long perSample, float p,
                                       unsigned long long seed, const unsigned long long* seedOffset, int accumulate)
{
    float keepScale = 1.f / (1.f - p);
    if (seedOffset) seed ^= *seedOffset;
    grid_stride_quads(n, aligned_for(y) && aligned_for(x), [&](long long i, int count) {
        float v[4];
        load_values(v, x, i, count);
        long long sample = i / perSample, offset = i - sample * perSample; // value i's sample and place in it
        bool keep = counter_uniform(seed, (unsigned long long)sample) >= p;
        for (int k = 0; k < count; k++)
        {
            if (offset == perSample) // the quad runs into the next sample
            {
                keep = counter_uniform(seed, (unsigned long long)++sample) >= p;
                offset = 0;
            }
            v[k] = keep ? v[k] * keepScale : 0.f;
            offset++;
        }
        store_values(y, i, v, count, accumulate);
    });
}
