using System.Runtime.CompilerServices;
using System.Numerics;

namespace Engine.Kernels.Cpu;

// Elementwise kernels on the CPU (cuda/elementwise.cu): fill, copy (plain and strided), add, scale, and the bias
// add and its gradient (a deterministic column sum).
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void Fill(float* x, long n, float value) => new Span<float>(x, checked((int)n)).Fill(value);

    /// <inheritdoc/>
    public void FillMany(ReadOnlySpan<TensorSpan> targets, float value)
    {
        foreach (var target in targets) Fill(target.Data, target.Count, value);
    }

    /// <inheritdoc/>
    public void Copy(float* dst, float* src, long n, bool accumulate)
    {
        if (!accumulate)
        {
            Buffer.MemoryCopy(src, dst, n * sizeof(float), n * sizeof(float));
            return;
        }
        var body = new AddBody { Y = dst, A = dst, B = src };
        CpuRange.For(n, ElementGrain, ref body);
    }

    /// <inheritdoc/>
    public void Add(float* y, float* a, float* b, long n)
    {
        var body = new AddBody { Y = y, A = a, B = b };
        CpuRange.For(n, ElementGrain, ref body);
    }

    struct AddBody : IRangeBody
    {
        public float* Y, A, B;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            long i = start;
            for (; i + Vector<float>.Count <= end; i += Vector<float>.Count)
                Vec.Store(Y + i, Vec.Load(A + i) + Vec.Load(B + i));
            for (; i < end; i++) Y[i] = A[i] + B[i];
        }
    }

    /// <inheritdoc/>
    public void Scale(float* x, long n, float s)
    {
        for (long i = 0; i < n; i++) x[i] *= s;
    }

    /// <inheritdoc/>
    public void CopyStrided(float* dst, float* src, int rank, int* shape, long* srcStrides)
    {
        if (rank is < 1 or > 8) throw new ArgumentOutOfRangeException(nameof(rank), rank, "CopyStrided supports rank 1..8");
        long rows = 1;
        for (int d = 0; d < rank - 1; d++) rows *= shape[d];
        int inner = shape[rank - 1];
        long innerStride = srcStrides[rank - 1];
        for (long r = 0; r < rows; r++)
        {
            long rem = r, offset = 0;
            for (int d = rank - 2; d >= 0; d--)
            {
                offset += rem % shape[d] * srcStrides[d];
                rem /= shape[d];
            }
            float* s = src + offset, o = dst + r * inner;
            for (int j = 0; j < inner; j++) o[j] = s[j * innerStride];
        }
    }

    /// <inheritdoc/>
    public void AddBias(float* y, float* x, float* bias, int rows, int cols)
    {
        var body = new AddBiasBody { Y = y, X = x, Bias = bias, Cols = cols };
        CpuRange.For(rows, Math.Max(1, ElementGrain / cols), ref body);
    }

    struct AddBiasBody : IRangeBody
    {
        public float* Y, X, Bias;
        public int Cols;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                var row = new AddBody { Y = Y + r * Cols, A = X + r * Cols, B = Bias };
                row.Run(0, Cols);
            }
        }
    }

    /// <inheritdoc/>
    public void BiasGrad(float* dbias, float* dy, int rows, int cols)
    {
        var body = new BiasGradBody { Dy = dy, Cols = cols, Grain = ReductionGrain(rows), Rows = rows };
        int chunks = CpuRange.Chunks(rows, body.Grain);
        body.Partials = Partials(chunks, cols);
        CpuParallel.For(chunks, ref body);
        SumPartials(dbias, body.Partials, chunks, cols);
    }

    struct BiasGradBody : IParallelBody
    {
        public float* Dy, Partials;
        public int Cols, Grain, Rows;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int chunk)
        {
            float* acc = Partials + (long)chunk * Cols;
            new Span<float>(acc, Cols).Clear();
            int end = Math.Min(Rows, (chunk + 1) * Grain);
            for (long r = (long)chunk * Grain; r < end; r++)
            {
                var row = new AddBody { Y = acc, A = acc, B = Dy + r * Cols };
                row.Run(0, Cols);
            }
        }
    }
}
