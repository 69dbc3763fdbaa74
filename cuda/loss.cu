// loss.cu: mean softmax cross-entropy with label smoothing ε (target distribution (1−ε)·onehot + ε/V) and its
// gradient; probabilities are never stored. logits [B, V], targets [B]. A target outside [0, V) makes the
// loss NaN (a kernel cannot throw; the training loop's non-finite check stops the run).
#include "common.cuh"

// logsumexp of one row, computed by a whole warp (valid in every lane).
__device__ float row_logsumexp(const float* x, int V, int lane)
{
    float m = __int_as_float(0xff800000);
    for (int j = lane; j < V; j += 32) m = fmaxf(m, x[j]);
    m = warp_max(m);
    float s = 0.f;
    for (int j = lane; j < V; j += 32) s += expf(x[j] - m);
    return m + logf(warp_sum(s));
}

// loss[0] = mean_b (lse_b − (1−ε)·x[b, t_b] − ε·mean_j x[b, j]). One block of 256 threads: warp w takes rows
// w, w + 8, ...; the per-warp sums (double) are added in warp order, so the result is deterministic.
extern "C" __global__ void cross_entropy_forward(float* loss, const float* logits, const int* targets, int B, int V, float smoothing)
{
    __shared__ double warpTotals[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    double total = 0.0;
    for (int b = warp; b < B; b += warps)
    {
        const float* x = logits + (long long)b * V;
        int t = targets[b];
        float lse = row_logsumexp(x, V, lane);
        float s = 0.f;
        for (int j = lane; j < V; j += 32) s += x[j];
        float mean = warp_sum(s) / V;
        float target = (t >= 0 && t < V) ? x[t] : __int_as_float(0x7fc00000); // NaN for a bad target
        total += (double)(lse - (1.f - smoothing) * target - smoothing * mean);
    }
    if (lane == 0) warpTotals[warp] = total;
    __syncthreads();
    if (threadIdx.x == 0)
    {
        double sum = 0.0;
        for (int w = 0; w < warps; w++) sum += warpTotals[w];
        loss[0] = (float)(sum / B);
    }
}

// dlogits = dloss[0]/B · (softmax(x) − q). One warp per row (256-thread blocks).
extern "C" __global__ void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const int* targets,
                                                 int B, int V, float smoothing, int accumulate)
{
    int lane = threadIdx.x % 32;
    float scale = dloss[0] / B, uniform = smoothing / V;
    WARP_PER_ROW(b, B)
    {
        const float* x = logits + b * V;
        float* dx = dlogits + b * V;
        int t = targets[b];
        float lse = row_logsumexp(x, V, lane);
        float bad = (t >= 0 && t < V) ? 0.f : __int_as_float(0x7fc00000);
        for (int j = lane; j < V; j += 32)
        {
            float q = uniform + (j == t ? 1.f - smoothing : 0.f);
            store(dx + j, scale * (expf(x[j] - lse) - q) + bad, accumulate);
        }
    }
}
