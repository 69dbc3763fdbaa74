using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Cpu;

namespace Engine.Bench;

/// <summary>
/// This machine's FMA ceiling, timed beside the products it bounds: every thread runs a loop of fused multiply-adds on
/// registers alone (no loads, no stores), 24 independent accumulators of the widest vectors the GEMM's micro-kernel uses
/// (12 with 256-bit vectors, which have 16 registers), as many as its register tile keeps. No product can run faster per
/// core, so a product's GFLOP/s over this loop's is how much of the core it uses.
/// </summary>
static class FmaPeak
{
    /// <summary>Runs <paramref name="flops"/> floating-point operations (each FMA counts two per lane) split evenly over
    /// <see cref="CpuParallel.Threads"/> threads.</summary>
    public static void Run(double flops)
    {
        var body = new Body { Threads = CpuParallel.Threads };
        int lanes = Vector512.IsHardwareAccelerated ? 16 * 24 : 8 * 12; // per iteration
        body.Iterations = (long)(flops / body.Threads / (2.0 * lanes));
        CpuParallel.For(body.Threads, ref body);
    }

    struct Body : IParallelBody
    {
        public int Threads;
        public long Iterations;
        public float Sink; // the sums are stored, so the loop is not dropped

        public void Run(int index) => Sink = Vector512.IsHardwareAccelerated ? Loop512(Iterations) : Loop256(Iterations);
    }

    // x·b + c with x, b fixed near 1: the accumulators neither overflow nor turn denormal over billions of iterations.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Loop512(long n)
    {
        Vector512<float> x = Vector512.Create(1e-9f), b0 = Vector512.Create(1.0001f), b1 = Vector512.Create(0.9999f);
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default,
            c8 = default, c9 = default, c10 = default, c11 = default, d0 = default, d1 = default, d2 = default, d3 = default,
            d4 = default, d5 = default, d6 = default, d7 = default, d8 = default, d9 = default, d10 = default, d11 = default;
        for (long i = 0; i < n; i++)
        {
            c0 = Vector512.FusedMultiplyAdd(x, b0, c0); d0 = Vector512.FusedMultiplyAdd(x, b1, d0);
            c1 = Vector512.FusedMultiplyAdd(x, b0, c1); d1 = Vector512.FusedMultiplyAdd(x, b1, d1);
            c2 = Vector512.FusedMultiplyAdd(x, b0, c2); d2 = Vector512.FusedMultiplyAdd(x, b1, d2);
            c3 = Vector512.FusedMultiplyAdd(x, b0, c3); d3 = Vector512.FusedMultiplyAdd(x, b1, d3);
            c4 = Vector512.FusedMultiplyAdd(x, b0, c4); d4 = Vector512.FusedMultiplyAdd(x, b1, d4);
            c5 = Vector512.FusedMultiplyAdd(x, b0, c5); d5 = Vector512.FusedMultiplyAdd(x, b1, d5);
            c6 = Vector512.FusedMultiplyAdd(x, b0, c6); d6 = Vector512.FusedMultiplyAdd(x, b1, d6);
            c7 = Vector512.FusedMultiplyAdd(x, b0, c7); d7 = Vector512.FusedMultiplyAdd(x, b1, d7);
            c8 = Vector512.FusedMultiplyAdd(x, b0, c8); d8 = Vector512.FusedMultiplyAdd(x, b1, d8);
            c9 = Vector512.FusedMultiplyAdd(x, b0, c9); d9 = Vector512.FusedMultiplyAdd(x, b1, d9);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); d10 = Vector512.FusedMultiplyAdd(x, b1, d10);
            c11 = Vector512.FusedMultiplyAdd(x, b0, c11); d11 = Vector512.FusedMultiplyAdd(x, b1, d11);
        }
        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11 + d0 + d1 + d2 + d3 + d4 + d5 + d6 + d7 + d8 + d9 + d10 + d11);
    }

    /// <summary>The 256-bit loop: 12 accumulators.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Loop256(long n)
    {
        Vector256<float> x = Vector256.Create(1e-9f), b0 = Vector256.Create(1.0001f), b1 = Vector256.Create(0.9999f);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default,
            d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default;
        for (long i = 0; i < n; i++)
        {
            c0 = Vector256.FusedMultiplyAdd(x, b0, c0); d0 = Vector256.FusedMultiplyAdd(x, b1, d0);
            c1 = Vector256.FusedMultiplyAdd(x, b0, c1); d1 = Vector256.FusedMultiplyAdd(x, b1, d1);
            c2 = Vector256.FusedMultiplyAdd(x, b0, c2); d2 = Vector256.FusedMultiplyAdd(x, b1, d2);
            c3 = Vector256.FusedMultiplyAdd(x, b0, c3); d3 = Vector256.FusedMultiplyAdd(x, b1, d3);
            c4 = Vector256.FusedMultiplyAdd(x, b0, c4); d4 = Vector256.FusedMultiplyAdd(x, b1, d4);
            c5 = Vector256.FusedMultiplyAdd(x, b0, c5); d5 = Vector256.FusedMultiplyAdd(x, b1, d5);
        }
        return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + d0 + d1 + d2 + d3 + d4 + d5);
    }
}
