namespace Engine.Kernels.Cpu;

// Fused softmax cross-entropy with label smoothing on the CPU; probabilities are never stored.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void CrossEntropyForward(float* loss, float* logits, int* targets, int B, int V, float smoothing)
    {
        // loss_b = logsumexp(x) − (1−ε)·x[t] − ε·mean(x); mean over b in double, in row order.
        double total = 0;
        for (int b = 0; b < B; b++)
        {
            float* x = logits + (long)b * V;
            int t = CheckTarget(targets[b], b, V);
            float lse = LogSumExp(x, V);
            double mean = 0;
            for (int j = 0; j < V; j++) mean += x[j];
            mean /= V;
            total += lse - (1 - smoothing) * x[t] - smoothing * mean;
        }
        loss[0] = (float)(total / B);
    }

    /// <inheritdoc/>
    public void CrossEntropyBackward(float* dlogits, float* dloss, float* logits, int* targets, int B, int V, float smoothing, bool accumulate)
    {
        float scale = dloss[0] / B, uniform = smoothing / V;
        for (int b = 0; b < B; b++)
        {
            float* x = logits + (long)b * V, dx = dlogits + (long)b * V;
            int t = CheckTarget(targets[b], b, V);
            float lse = LogSumExp(x, V);
            for (int j = 0; j < V; j++)
            {
                float q = uniform + (j == t ? 1 - smoothing : 0f);
                float v = scale * (MathF.Exp(x[j] - lse) - q);
                dx[j] = accumulate ? dx[j] + v : v;
            }
        }
    }

    static int CheckTarget(int t, int row, int V) => (uint)t < (uint)V ? t
        : throw new ArgumentOutOfRangeException("targets", t, $"cross-entropy target of row {row} is outside [0, {V})");

    static float LogSumExp(float* x, int n)
    {
        float max = float.NegativeInfinity;
        for (int j = 0; j < n; j++) max = MathF.Max(max, x[j]);
        double s = 0;
        for (int j = 0; j < n; j++) s += MathF.Exp(x[j] - max);
        return max + (float)Math.Log(s);
    }
}
