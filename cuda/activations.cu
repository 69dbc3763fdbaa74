// activations.cu: exact GELU, y = x·Φ(x), its derivative, the Linear+GELU epilogue, and ReLU. Launch: 1-D grid-stride, 256 threads.
#include "common.cuh"

extern "C" __global__ void gelu_forward(float* y, const float* x, long long n)
{
    GRID_STRIDE(i, n) y[i] = gelu(x[i]);
}

// The Linear+GELU epilogue after the GEMM: v = x[r, c] + bias[c] (no bias: null); y = GELU(v); h = v when h is not
// null (the pre-activation the backward needs). x [rows, cols] may be y or h. 1-D grid-stride.
extern "C" __global__ void bias_gelu_forward(float* y, float* h, const float* x, const float* bias, int rows, int cols)
{
    GRID_STRIDE(i, (long long)rows * cols)
    {
        float v = x[i] + (bias ? bias[i % cols] : 0.f);
        if (h) h[i] = v;
        y[i] = gelu(v);
    }
}

// dx = dy · (Φ(x) + x·φ(x)).
extern "C" __global__ void gelu_backward(float* dx, const float* dy, const float* x, long long n, int accumulate)
{
    GRID_STRIDE(i, n) store(dx + i, dy[i] * gelu_slope(x[i]), accumulate);
}

// y = max(x, 0).
extern "C" __global__ void relu_forward(float* y, const float* x, long long n)
{
    GRID_STRIDE(i, n) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

// dx = dy where x > 0, else 0.
extern "C" __global__ void relu_backward(float* dx, const float* dy, const float* x, long long n, int accumulate)
{
    GRID_STRIDE(i, n) store(dx + i, x[i] > 0.f ? dy[i] : 0.f, accumulate);
}
