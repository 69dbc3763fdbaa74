// activations.cu: exact GELU, y = x·Φ(x), its derivative, the Linear+GELU epilogue, and ReLU. Launch: 1-D grid-stride, 256 threads.
#include "common.cuh"

extern "C" __global__ void gelu_forward(float* y, const float* x, long long n)
{
    GRID_STRIDE(i, n) y[i] = gelu(x[i]);
}

// The Linear+GELU epilogue after the GEMM: v = x[r, c] + bias[c] (no bias: null); y = GELU(v); the pre-activation the
// backward needs kept as h = v (float32) or h16 = v in 16 bits (h_format 2 bf16, 3 fp16, as autocast keeps a Linear's
// output) when either is not null. x [rows, cols] may be y or h. 1-D grid-stride.
extern "C" __global__ void bias_gelu_forward(float* y, float* h, unsigned short* h16, int h_format, const float* x, const float* bias,
                                             int rows, int cols)
{
    GRID_STRIDE(i, (long long)rows * cols)
    {
        float v = x[i] + (bias ? bias[i % cols] : 0.f);
        if (h) h[i] = v;
        if (h16) h16[i] = h_format == 3 ? to_fp16(v).bits : to_bf16(v).bits;
        y[i] = gelu(v);
    }
}

// dx = dy · (Φ(x) + x·φ(x)); x float32 (format 0) or 16-bit (2 bf16, 3 fp16: LinearGelu's pre-activation as kept).
extern "C" __global__ void gelu_backward(float* dx, const float* dy, const void* x, int format, long long n, int accumulate)
{
    GRID_STRIDE(i, n) store(dx + i, dy[i] * gelu_slope(load_operand(x, format, i)), accumulate);
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
