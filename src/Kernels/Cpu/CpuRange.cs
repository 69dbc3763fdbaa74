using System.Runtime.CompilerServices;
namespace Engine.Kernels.Cpu;

/// <summary>Work over a half-open range [start, end) of elements or rows.</summary>
public interface IRangeBody
{
    /// <summary>Processes items start .. end−1.</summary>
    void Run(long start, long end);
}

/// <summary>Splits a range into fixed-size chunks (a function of the size only, never of the thread count).</summary>
public static class CpuRange
{
    /// <summary>Chunk count used for a range of <paramref name="n"/> items of the given grain.</summary>
    public static int Chunks(long n, long grain) => (int)Math.Max(1, (n + grain - 1) / grain);

    /// <summary>Runs body over [0,n) in chunks of <paramref name="grain"/> items, in parallel.</summary>
    public static void For<T>(long n, long grain, ref T body) where T : struct, IRangeBody
    {
        if (n <= 0) return;
        if (n <= grain)
        {
            body.Run(0, n);
            return;
        }
        var chunked = new Chunked<T> { Body = body, N = n, Grain = grain };
        CpuParallel.For(Chunks(n, grain), ref chunked);
    }

    struct Chunked<T> : IParallelBody where T : struct, IRangeBody
    {
        public T Body;
        public long N, Grain;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int index) => Body.Run(index * Grain, Math.Min(N, (index + 1) * Grain));
    }
}
