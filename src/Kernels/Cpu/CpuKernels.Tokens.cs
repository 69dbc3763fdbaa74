namespace Engine.Kernels.Cpu;

// Token ops on the CPU (cuda/tokens.cu): class token prepend/take, runs of tokens copied (concat, slice) and the mean
// over tokens.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void PrependToken(float* y, float* x, float* token, int B, int T, int C)
    {
        for (long b = 0; b < B; b++)
        {
            float* yb = y + b * (T + 1) * C;
            Buffer.MemoryCopy(token, yb, C * sizeof(float), C * sizeof(float));
            Buffer.MemoryCopy(x + b * T * C, yb + C, (long)T * C * sizeof(float), (long)T * C * sizeof(float));
        }
    }

    /// <inheritdoc/>
    public void PrependTokenBackward(float* dx, float* dtoken, float* dy, int B, int T, int C, bool accumulate)
    {
        for (long b = 0; b < B; b++)
        {
            float* dyb = dy + b * (T + 1) * C;
            if (dtoken != null) for (int c = 0; c < C; c++) dtoken[c] += dyb[c];
            if (dx != null) Copy(dx + b * T * C, dyb + C, (long)T * C, accumulate);
        }
    }

    /// <inheritdoc/>
    public void CopyTokens(float* dst, int dstTokens, int dstStart, float* src, int srcTokens, int srcStart, int count, int B, int C, bool accumulate)
    {
        for (long b = 0; b < B; b++)
            Copy(dst + (b * dstTokens + dstStart) * C, src + (b * srcTokens + srcStart) * C, (long)count * C, accumulate);
    }

    /// <inheritdoc/>
    public void TakeToken(float* y, float* x, int B, int T, int C, int index)
    {
        for (long b = 0; b < B; b++)
            Buffer.MemoryCopy(x + (b * T + index) * C, y + b * C, C * sizeof(float), C * sizeof(float));
    }

    /// <inheritdoc/>
    public void TakeTokenBackward(float* dx, float* dy, int B, int T, int C, int index, bool accumulate)
    {
        if (!accumulate) Fill(dx, (long)B * T * C, 0f);
        for (long b = 0; b < B; b++)
        {
            float* d = dx + (b * T + index) * C, s = dy + b * C;
            for (int c = 0; c < C; c++) d[c] += s[c];
        }
    }

    /// <inheritdoc/>
    public void MeanTokens(float* y, float* x, int B, int T, int C)
    {
        for (long b = 0; b < B; b++)
        {
            float* yb = y + b * C;
            new Span<float>(yb, C).Clear();
            for (long t = 0; t < T; t++)
            {
                float* xt = x + (b * T + t) * C;
                for (int c = 0; c < C; c++) yb[c] += xt[c];
            }
            for (int c = 0; c < C; c++) yb[c] /= T;
        }
    }

    /// <inheritdoc/>
    public void MeanTokensBackward(float* dx, float* dy, int B, int T, int C, bool accumulate)
    {
        float inv = 1f / T;
        for (long b = 0; b < B; b++)
            for (long t = 0; t < T; t++)
            {
                float* d = dx + (b * T + t) * C, s = dy + b * C;
                for (int c = 0; c < C; c++) d[c] = accumulate ? d[c] + s[c] * inv : s[c] * inv;
            }
    }
}
