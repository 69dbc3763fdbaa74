// tokens.cu: class-token prepend and take, runs of tokens copied (concat, slice), and the mean-over-tokens backward (the forward and the class-token
// gradient are column sums in elementwise.cu). x [B, T, C]. Launch: 1-D grid-stride, 256 threads.
#include "common.cuh"

// y [B, T+1, C]: y[b, 0] = token, y[b, 1+t] = x[b, t].
extern "C" __global__ void prepend_token(float* y, const float* x, const float* token, int B, int T, int C)
{
    GRID_STRIDE(i, (long long)B * (T + 1) * C)
    {
        int c = (int)(i % C);
        long long row = i / C, t = row % (T + 1), b = row / (T + 1);
        y[i] = t == 0 ? token[c] : x[(b * T + t - 1) * C + c];
    }
}

// dx [B, T, C] = dy[:, 1:].
extern "C" __global__ void prepend_token_backward_input(float* dx, const float* dy, int B, int T, int C, int accumulate)
{
    GRID_STRIDE(i, (long long)B * T * C)
    {
        long long b = i / ((long long)T * C);
        store(dx + i, dy[i + (b + 1) * C], accumulate);
    }
}

// dst[b, dstStart + t] (+)= src[b, srcStart + t] for t < count; dst [B, dstTokens, C], src [B, srcTokens, C].
extern "C" __global__ void copy_tokens(float* dst, int dstTokens, int dstStart, const float* src, int srcTokens, int srcStart,
                                       int count, int B, int C, int accumulate)
{
    GRID_STRIDE(i, (long long)B * count * C)
    {
        int c = (int)(i % C);
        long long row = i / C, t = row % count, b = row / count;
        store(dst + ((b * dstTokens + dstStart + t) * C + c), src[(b * srcTokens + srcStart + t) * C + c], accumulate);
    }
}

// y [B, C] = x[b, index].
extern "C" __global__ void take_token(float* y, const float* x, int B, int T, int C, int index)
{
    GRID_STRIDE(i, (long long)B * C) y[i] = x[(i / C * T + index) * C + i % C];
}

// dx [B, T, C]: dy at token index, zero elsewhere; accumulating touches only token index.
extern "C" __global__ void take_token_backward(float* dx, const float* dy, int B, int T, int C, int index, int accumulate)
{
    if (accumulate)
    {
        GRID_STRIDE(i, (long long)B * C) dx[(i / C * T + index) * C + i % C] += dy[i];
        return;
    }
    GRID_STRIDE(i, (long long)B * T * C)
    {
        long long row = i / C;
        dx[i] = row % T == index ? dy[row / T * C + i % C] : 0.f;
    }
}

// dx [B, T, C] = dy [B, C] / T.
extern "C" __global__ void mean_tokens_backward(float* dx, const float* dy, int B, int T, int C, int accumulate)
{
    float inv = 1.f / T;
    GRID_STRIDE(i, (long long)B * T * C) store(dx + i, dy[i / ((long long)T * C) * C + i % C] * inv, accumulate);
}
