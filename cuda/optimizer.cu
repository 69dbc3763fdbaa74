// optimizer.cu: one Adam / AdamW step (torch.optim arithmetic, bias corrections computed on the host exactly as
// the CPU backend does). mask [n] (1 trainable, 0 frozen) or null; masked-out elements keep their parameter and
// moments bitwise. Launch: 1-D grid-stride, 256 threads.
#include "common.cuh"

extern "C" __global__ void adam_step(float* param, const float* grad, float* m, float* v, const float* mask, long long n, float lr,
                                    float beta1, float beta2, float eps, float weightDecay, float biasCorrection1,
                                    float biasCorrection2Sqrt, int decoupled)
{
    float stepSize = lr / biasCorrection1;
    GRID_STRIDE(i, n)
    {
        if (mask && mask[i] == 0.f) continue;
        float p = param[i], g = grad[i];
        if (decoupled) p *= 1.f - lr * weightDecay;
        else g += weightDecay * p;
        float mi = beta1 * m[i] + (1.f - beta1) * g;
        float vi = beta2 * v[i] + (1.f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = p - stepSize * mi / (sqrtf(vi) / biasCorrection2Sqrt + eps);
    }
}
