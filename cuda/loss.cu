// loss.cu: mean softmax cross-entropy with label smoothing ε (target distribution (1−ε)·onehot + ε/V) and its
// gradient, probabilities never stored; and the supervised contrastive loss of GPS's selection pass. logits [B, V], targets [B]. A target outside [0, V) makes the
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

// Anchor i of the supervised contrastive loss, by a whole warp: log Σ_{a≠i} exp(s_ia/τ) and the positive count.
__device__ float supcon_row(const float* s, const int* labels, int N, int i, float invT, int lane, int* positives)
{
    float m = __int_as_float(0xff800000);
    int count = 0;
    for (int a = lane; a < N; a += 32)
        if (a != i)
        {
            m = fmaxf(m, s[a] * invT);
            count += labels[a] == labels[i];
        }
    m = warp_max(m);
    *positives = warp_sum(count);
    float sum = 0.f;
    for (int a = lane; a < N; a += 32)
        if (a != i) sum += expf(s[a] * invT - m);
    return m + logf(warp_sum(sum));
}

// loss[0] = −(1/N) Σ_i mean_{p ∈ P(i)} (s_ip/τ − lse_i); anchors without positives add 0. One block of 256 threads,
// warp w takes anchors w, w + 8, ...; per-warp sums (double) are added in warp order (deterministic).
extern "C" __global__ void supcon_forward(float* loss, const float* s, const int* labels, int N, float temperature)
{
    __shared__ double warpTotals[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    float invT = 1.f / temperature;
    double total = 0.0;
    for (int i = warp; i < N; i += warps)
    {
        const float* row = s + (long long)i * N;
        int positives;
        float lse = supcon_row(row, labels, N, i, invT, lane, &positives);
        float sum = 0.f;
        for (int a = lane; a < N; a += 32)
            if (a != i && labels[a] == labels[i]) sum += row[a] * invT - lse;
        sum = warp_sum(sum);
        if (positives > 0) total -= (double)sum / positives;
    }
    if (lane == 0) warpTotals[warp] = total;
    __syncthreads();
    if (threadIdx.x == 0)
    {
        double sum = 0.0;
        for (int w = 0; w < warps; w++) sum += warpTotals[w];
        loss[0] = (float)(sum / N);
    }
}

// ds[i, a] = dloss/N · (softmax_{a≠i}(s_i/τ) − [a ∈ P(i)]/|P(i)|) / τ, zero on the diagonal and for anchors without
// positives. One warp per anchor row.
extern "C" __global__ void supcon_backward(float* ds, const float* dloss, const float* s, const int* labels, int N,
                                          float temperature, int accumulate)
{
    int lane = threadIdx.x % 32;
    float invT = 1.f / temperature, scale = dloss[0] / N * invT;
    WARP_PER_ROW(i, N)
    {
        const float* row = s + i * N;
        int positives;
        float lse = supcon_row(row, labels, N, (int)i, invT, lane, &positives);
        for (int a = lane; a < N; a += 32)
        {
            float g = (a == i || positives == 0) ? 0.f
                : scale * (expf(row[a] * invT - lse) - (labels[a] == labels[i] ? 1.f / positives : 0.f));
            store(ds + i * N + a, g, accumulate);
        }
    }
}
