namespace Engine.Kernels.Cpu;

// The PEFT kernels on the CPU: SCT's salient-channel gather and scatter-add, GPS's sparse weight gradient (Adam on
// the selected entries lives with Adam in CpuKernels.Train.cs), and GPS's selection loss (row L2 normalisation and
// the supervised contrastive loss).
public sealed unsafe partial class CpuKernels
{
    // ---------------------------------------------------------------- salient channels (SCT)

    /// <inheritdoc/>
    public void GatherChannels(float* y, float* x, int* index, int rows, int C, int K, bool accumulate)
    {
        var body = new GatherChannelsBody { Y = y, X = x, Index = index, C = C, K = K, Accumulate = accumulate };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    struct GatherChannelsBody : IRangeBody
    {
        public float* Y, X;
        public int* Index;
        public int C, K;
        public bool Accumulate;
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                float* x = X + r * C, y = Y + r * K;
                for (int j = 0; j < K; j++) y[j] = Accumulate ? y[j] + x[Index[j]] : x[Index[j]];
            }
        }
    }

    /// <inheritdoc/>
    public void ScatterAddChannels(float* y, float* x, float* z, float* bias, int* index, int rows, int C, int K)
    {
        var body = new ScatterAddChannelsBody { Y = y, X = x, Z = z, Bias = bias, Index = index, C = C, K = K };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    struct ScatterAddChannelsBody : IRangeBody
    {
        public float* Y, X, Z, Bias;
        public int* Index;
        public int C, K;
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                float* x = X + r * C, y = Y + r * C, z = Z + r * K;
                if (y != x) Buffer.MemoryCopy(x, y, C * sizeof(float), C * sizeof(float));
                for (int j = 0; j < K; j++) y[Index[j]] = x[Index[j]] + z[j] + (Bias == null ? 0f : Bias[j]);
            }
        }
    }

    // ---------------------------------------------------------------- sparse weight gradient (GPS)

    /// <inheritdoc/>
    public void AddSelectedEntries(float* dvalues, float* dense, int* index, int N, int K, int k)
    {
        for (long e = 0; e < (long)N * k; e++) dvalues[e] += dense[e / k * K + index[e]];
    }

    /// <inheritdoc/>
    public void SparseWeightGrad(float* dvalues, float* dy, float* x, int* index, int rows, int N, int K, int k)
    {
        var body = new SparseWeightGradBody { Dy = dy, X = x, Index = index, Rows = rows, N = N, K = K, PerRow = k, Grain = ReductionGrain(rows) };
        int chunks = CpuRange.Chunks(rows, body.Grain);
        body.Partials = Partials(chunks, (long)N * k);
        CpuParallel.For(chunks, ref body);
        SumPartials(dvalues, body.Partials, chunks, (long)N * k);
    }

    /// <summary>A task sums its chunk of tokens into a partial [N, k]: each token's dy row streams once and its x row
    /// stays in L1 for the gathers. Partials are added in chunk order (deterministic).</summary>
    struct SparseWeightGradBody : IParallelBody
    {
        public float* Dy, X, Partials;
        public int* Index;
        public int Rows, N, K, PerRow, Grain;
        public void Run(int chunk)
        {
            long width = (long)N * PerRow;
            float* acc = Partials + chunk * width;
            new Span<float>(acc, (int)width).Clear();
            int end = Math.Min(Rows, (chunk + 1) * Grain);
            for (long r = (long)chunk * Grain; r < end; r++)
            {
                float* dy = Dy + r * N, x = X + r * K;
                if (PerRow == 1)
                    for (int o = 0; o < N; o++) acc[o] += dy[o] * x[Index[o]];
                else
                    for (int o = 0, e = 0; o < N; o++)
                        for (int j = 0; j < PerRow; j++, e++) acc[e] += dy[o] * x[Index[e]];
            }
        }
    }

    // ---------------------------------------------------------------- row L2 normalisation

    /// <inheritdoc/>
    public void L2NormalizeForward(float* y, float* x, int rows, int C, float eps)
    {
        var body = new L2NormalizeBody { Y = y, X = x, C = C, Eps = eps };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    /// <summary>max(‖x‖₂, eps) of one row, the norm summed in double.</summary>
    static float ClampedNorm(float* x, int C, float eps)
    {
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        return MathF.Max((float)Math.Sqrt(ss), eps);
    }

    struct L2NormalizeBody : IRangeBody
    {
        public float* Y, X;
        public int C;
        public float Eps;
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                float* x = X + r * C, y = Y + r * C;
                float n = ClampedNorm(x, C, Eps);
                for (int i = 0; i < C; i++) y[i] = x[i] / n;
            }
        }
    }

    /// <inheritdoc/>
    public void L2NormalizeBackward(float* dx, float* dy, float* x, float* y, int rows, int C, float eps, bool accumulate)
    {
        var body = new L2NormalizeBackwardBody { Dx = dx, Dy = dy, X = x, Y = y, C = C, Eps = eps, Accumulate = accumulate };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    struct L2NormalizeBackwardBody : IRangeBody
    {
        public float* Dx, Dy, X, Y;
        public int C;
        public float Eps;
        public bool Accumulate;
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                float* x = X + r * C, y = Y + r * C, dy = Dy + r * C, dx = Dx + r * C;
                float n = ClampedNorm(x, C, Eps);
                // A clamped norm is a constant: then y = x / eps and dx = dy / eps.
                float dot = 0f;
                if (n > Eps)
                    for (int i = 0; i < C; i++) dot += y[i] * dy[i];
                for (int i = 0; i < C; i++)
                {
                    float g = (dy[i] - y[i] * dot) / n;
                    dx[i] = Accumulate ? dx[i] + g : g;
                }
            }
        }
    }

    // ---------------------------------------------------------------- supervised contrastive loss

    /// <summary>For anchor i: log Σ_{a≠i} exp(s_ia/τ) (max-subtracted) and the number of positives.</summary>
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
