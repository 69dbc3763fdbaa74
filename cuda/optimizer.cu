// optimizer.cu: one Adam / AdamW step (torch.optim arithmetic, bias corrections computed on the host exactly as
// the CPU backend does), dense with an optional mask [n] (1 trainable, 0 frozen: masked-out elements keep their
// parameter and moments bitwise) or sparse (GPS: only the selected entries of each row, with moments for those
// only). stepValues, when not null, is [lr, bc1, √bc2, gate] in device memory, read in place of the arguments (a
// captured graph's replays rewrite it); a gate that is not finite (the step's loss) skips the step. Launch: 1-D
// grid-stride, 256 threads.
#include "common.cuh"

// One element: p −= lr/bc1 · m / (√v/√bc2 + eps), with decoupled (AdamW) or L2 (Adam) weight decay, on values in
// registers (adam_step moves four at a time).
__device__ __forceinline__ void adam_update(float& p, float g, float& m, float& v, float lr, float beta1, float beta2, float eps,
                                            float weightDecay, float stepSize, float biasCorrection2Sqrt, int decoupled)
{
    if (decoupled) p *= 1.f - lr * weightDecay;
    else g += weightDecay * p;
    m = beta1 * m + (1.f - beta1) * g;
    v = beta2 * v + (1.f - beta2) * g * g;
    p = p - stepSize * m / (sqrtf(v) / biasCorrection2Sqrt + eps);
}

// The same on one element in memory.
__device__ __forceinline__ void adam_update_at(float* param, float g, float* m, float* v, float lr, float beta1, float beta2,
                                               float eps, float weightDecay, float stepSize, float biasCorrection2Sqrt, int decoupled)
{
    float p = *param, mi = *m, vi = *v;
    adam_update(p, g, mi, vi, lr, beta1, beta2, eps, weightDecay, stepSize, biasCorrection2Sqrt, decoupled);
    *m = mi;
    *v = vi;
    *param = p;
}

// The step's lr and bias corrections from stepValues when given; false when its gate says to skip the step.
__device__ __forceinline__ bool step_values(const float* stepValues, float& lr, float& biasCorrection1, float& biasCorrection2Sqrt)
{
    if (!stepValues) return true;
    if (!isfinite(stepValues[3])) return false;
    lr = stepValues[0];
    biasCorrection1 = stepValues[1];
    biasCorrection2Sqrt = stepValues[2];
    return true;
}

extern "C" __global__ void adam_step(float* param, const float* grad, float* m, float* v, const float* mask, long long n, float lr,
                                    float beta1, float beta2, float eps, float weightDecay, float biasCorrection1,
                                    float biasCorrection2Sqrt, int decoupled, const float* stepValues)
{
    if (!step_values(stepValues, lr, biasCorrection1, biasCorrection2Sqrt)) return;
    float stepSize = lr / biasCorrection1;
    // Four elements a thread (one 16-byte load per operand), as copy moves them: one at a time, a full fine-tuning
    // step's largest tensors ran at 85% of copy's rate on an H200. Masked-out elements are written back as read.
    bool vector = aligned_for(param) && aligned_for(grad) && aligned_for(m) && aligned_for(v) && aligned_for(mask);
    grid_stride_quads(n, vector, [&](long long i, int count) {
        float p[4], g[4], mi[4], vi[4], keep[4] = {1.f, 1.f, 1.f, 1.f};
        if (mask) load_values(keep, mask, i, count);
        load_values(p, param, i, count);
        load_values(g, grad, i, count);
        load_values(mi, m, i, count);
        load_values(vi, v, i, count);
        for (int k = 0; k < count; k++)
            if (keep[k] != 0.f)
                adam_update(p[k], g[k], mi[k], vi[k], lr, beta1, beta2, eps, weightDecay, stepSize, biasCorrection2Sqrt, decoupled);
        store_values(m, i, mi, count, 0);
        store_values(v, i, vi, count, 0);
        store_values(param, i, p, count, 0);
    });
}

// The tensors of one adam_step_many launch: tensor j (j < gridDim.y) has n[j] elements and its own weight decay. A
// mask (when not null) keeps the elements where it is zero; an index (when not null) makes tensor j a selection of
// entries: entry e of its gradient and moments updates param[e / per_row · columns + index[e]].
struct AdamTensors
{
    float* param[TENSORS_PER_LAUNCH];
    const float* grad[TENSORS_PER_LAUNCH];
    float* m[TENSORS_PER_LAUNCH];
    float* v[TENSORS_PER_LAUNCH];
    const float* mask[TENSORS_PER_LAUNCH];
    const int* index[TENSORS_PER_LAUNCH];
    long long n[TENSORS_PER_LAUNCH];
    float weightDecay[TENSORS_PER_LAUNCH];
    int perRow[TENSORS_PER_LAUNCH];
    int columns[TENSORS_PER_LAUNCH];
};

// adam_step (dense, masked) or sparse_adam_step (selected entries) on every tensor of the launch (many small
// parameters, such as biases, norms, SSF's scales and shifts and GPS's selections, in one launch instead of one each):
// the same update, element for element. Grid (blocks per tensor, tensors).
extern "C" __global__ void adam_step_many(AdamTensors t, float lr, float beta1, float beta2, float eps, float biasCorrection1,
                                         float biasCorrection2Sqrt, int decoupled, const float* stepValues)
{
    if (!step_values(stepValues, lr, biasCorrection1, biasCorrection2Sqrt)) return;
    float stepSize = lr / biasCorrection1;
    int j = blockIdx.y;
    const float* mask = t.mask[j];
    const int* index = t.index[j];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < t.n[j]; i += (long long)gridDim.x * blockDim.x)
    {
        if (mask && mask[i] == 0.f) continue;
        float* p = index ? t.param[j] + i / t.perRow[j] * t.columns[j] + index[i] : t.param[j] + i;
        adam_update_at(p, t.grad[j][i], t.m[j] + i, t.v[j] + i, lr, beta1, beta2, eps, t.weightDecay[j], stepSize, biasCorrection2Sqrt,
                    decoupled);
    }
}

// Entry e = (o, j) of the [N, k] selection updates param[o·K + index[e]] with grad[e], m[e], v[e].
extern "C" __global__ void sparse_adam_step(float* param, const float* grad, float* m, float* v, const int* index, int N, int K,
                                           int k, float lr, float beta1, float beta2, float eps, float weightDecay,
                                           float biasCorrection1, float biasCorrection2Sqrt, int decoupled,
                                           const float* stepValues)
{
    if (!step_values(stepValues, lr, biasCorrection1, biasCorrection2Sqrt)) return;
    float stepSize = lr / biasCorrection1;
    GRID_STRIDE(e, (long long)N * k)
        adam_update_at(param + e / k * K + index[e], grad[e], m + e, v + e, lr, beta1, beta2, eps, weightDecay, stepSize,
                    biasCorrection2Sqrt, decoupled);
}
