using System.Runtime.CompilerServices;
namespace Engine.Kernels.Cpu;

// Losses on the CPU (cuda/loss.cu): fused softmax cross-entropy with label smoothing (probabilities never stored)
// and GPS's supervised contrastive loss.
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float LogSumExp(float* x, int n)
    {
        float max = float.NegativeInfinity;
        for (int j = 0; j < n; j++) max = MathF.Max(max, x[j]);
        double s = 0;
        for (int j = 0; j < n; j++) s += MathF.Exp(x[j] - max);
        return max + (float)Math.Log(s);
    }

    /// <summary>For anchor i: log Σ_{a≠i} exp(s_ia/τ) (max-subtracted) and the number of positives.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float SupConRow(float* s, int* labels, int N, int i, float invT, out int positives)
    {
        float max = float.NegativeInfinity;
        positives = 0;
        for (int a = 0; a < N; a++)
        {
            if (a == i) continue;
            max = MathF.Max(max, s[a] * invT);
            if (labels[a] == labels[i]) positives++;
        }
        float sum = 0f;
        for (int a = 0; a < N; a++)
            if (a != i) sum += MathF.Exp(s[a] * invT - max);
        return max + MathF.Log(sum);
    }

    /// <inheritdoc/>
    public void SupConForward(float* loss, float* s, int* labels, int N, float temperature)
    {
        float invT = 1f / temperature;
        double total = 0;
        for (int i = 0; i < N; i++)
        {
            float* row = s + (long)i * N;
            float lse = SupConRow(row, labels, N, i, invT, out int positives);
            if (positives == 0) continue;
            double sum = 0;
            for (int a = 0; a < N; a++)
                if (a != i && labels[a] == labels[i]) sum += row[a] * invT - lse;
            total -= sum / positives;
        }
        loss[0] = (float)(total / N);
    }

    /// <inheritdoc/>
    public void SupConBackward(float* ds, float* dloss, float* s, int* labels, int N, float temperature, bool accumulate)
    {
        float invT = 1f / temperature, scale = dloss[0] / N * invT;
        for (int i = 0; i < N; i++)
        {
            float* row = s + (long)i * N, d = ds + (long)i * N;
            float lse = SupConRow(row, labels, N, i, invT, out int positives);
            for (int a = 0; a < N; a++)
            {
                float g = a == i || positives == 0 ? 0f
                    : scale * (MathF.Exp(row[a] * invT - lse) - (labels[a] == labels[i] ? 1f / positives : 0f));
                d[a] = accumulate ? d[a] + g : g;
            }
        }
    }
}
