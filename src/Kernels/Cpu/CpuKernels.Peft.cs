using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
namespace Engine.Kernels.Cpu;

// The PEFT kernels on the CPU (cuda/peft.cu): SCT's salient-channel gather and scatter-add, and GPS's sparse weight
// gradient and selected-entry gather (Adam on the selected entries is in CpuKernels.Optimizer.cs).
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void GatherChannels(float* y, float* x, int* index, int rows, int C, int K, bool accumulate)
    {
        AssertIndices(index, K, C);
        var body = new GatherChannelsBody { Y = y, X = x, Index = index, C = C, K = K, Accumulate = accumulate };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    struct GatherChannelsBody : IRangeBody
    {
        public float* Y, X;
        public int* Index;
        public int C, K;
        public bool Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
        AssertIndices(index, K, C);
        var body = new ScatterAddChannelsBody { Y = y, X = x, Z = z, Bias = bias, Index = index, C = C, K = K };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    struct ScatterAddChannelsBody : IRangeBody
    {
        public float* Y, X, Z, Bias;
        public int* Index;
        public int C, K;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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

    /// <inheritdoc/>
    public void AddSelectedEntries(float* dvalues, float* dense, int* index, int N, int K, int k)
    {
        AssertIndices(index, (long)N * k, K);
        for (long e = 0; e < (long)N * k; e++) dvalues[e] += dense[e / k * K + index[e]];
    }

    /// <inheritdoc/>
    public void SparseWeightGrad(float* dvalues, float* dy, float* x, int* index, int rows, int N, int K, int k)
    {
        AssertIndices(index, (long)N * k, K);
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
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
                {
                    int o = 0;
                    if (Avx2.IsSupported) // eight selected inputs per gather
                        for (; o + 8 <= N; o += 8)
                            Vector256.Store(Vector256.Load(acc + o) + Vector256.Load(dy + o) * Avx2.GatherVector256(x, Vector256.Load(Index + o), 4), acc + o);
                    for (; o < N; o++) acc[o] += dy[o] * x[Index[o]];
                }
                else
                    for (int o = 0, e = 0; o < N; o++)
                        for (int j = 0; j < PerRow; j++, e++) acc[e] += dy[o] * x[Index[e]];
            }
        }
    }

    /// <summary>Debug builds: every index lies in [0, bound) (the ops check what they are given before any kernel runs;
    /// this catches a caller that does not).</summary>
    [System.Diagnostics.Conditional("DEBUG")]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void AssertIndices(int* index, long count, int bound)
    {
        for (long i = 0; i < count; i++)
            System.Diagnostics.Debug.Assert((uint)index[i] < (uint)bound, $"index {index[i]} at {i} outside [0, {bound})");
    }
}
