using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Cpu;

namespace Engine.Bench;

/// <summary>
/// This machine's FMA ceiling, timed beside the products it bounds: every thread runs a loop of fused multiply-adds on
/// registers alone (no loads, no stores), 12 independent accumulators of the widest vectors the GEMM's micro-kernel
/// uses (512 bits where accelerated, else 256): more than the FMA units' latency × issue width needs, so nothing but
/// the FMA units bounds it. No product can run faster per core, so a product's GFLOP/s over this loop's is how much of
/// the core it uses.
/// </summary>
static class FmaPeak
{
    const int Accumulators = 12;

    /// <summary>Runs <paramref name="flops"/> floating-point operations (each FMA counts two per lane) split evenly over
    /// <see cref="CpuParallel.Threads"/> threads.</summary>
    public static void Run(double flops)
    {
        var body = new Body { Threads = CpuParallel.Threads };
        int lanes = Accumulators * (Vector512.IsHardwareAccelerated ? Vector512<float>.Count : Vector256<float>.Count); // per iteration
        body.Iterations = (long)(flops / body.Threads / (2.0 * lanes));
        CpuParallel.For(body.Threads, ref body);
    }

    struct Body : IParallelBody
    {
        public int Threads;
        public long Iterations;
        public float Sink; // the sums are stored, so the loop is not dropped

        public void Run(int index) =>
            Sink = Vector512.IsHardwareAccelerated ? Loop<Vector512<float>, V512>(Iterations) : Loop<Vector256<float>, V256>(Iterations);
    }

    interface IVector<TV> where TV : struct
    {
        static abstract TV Splat(float x);
        static abstract TV Fma(TV a, TV b, TV c);
        static abstract TV Add(TV a, TV b);
        static abstract float Sum(TV a);
    }

    struct V512 : IVector<Vector512<float>>
    {
        public static Vector512<float> Splat(float x) => Vector512.Create(x);
        public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
        public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
        public static float Sum(Vector512<float> a) => Vector512.Sum(a);
    }

    struct V256 : IVector<Vector256<float>>
    {
        public static Vector256<float> Splat(float x) => Vector256.Create(x);
        public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);
        public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
        public static float Sum(Vector256<float> a) => Vector256.Sum(a);
    }

    // x·b + c with x, b fixed near 1: the accumulators neither overflow nor turn denormal over billions of iterations.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Loop<TV, W>(long n) where TV : struct where W : IVector<TV>
    {
        TV x = W.Splat(1e-9f), b = W.Splat(1.0001f);
        TV c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default,
            c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (long i = 0; i < n; i++)
        {
            c0 = W.Fma(x, b, c0); c1 = W.Fma(x, b, c1); c2 = W.Fma(x, b, c2); c3 = W.Fma(x, b, c3);
            c4 = W.Fma(x, b, c4); c5 = W.Fma(x, b, c5); c6 = W.Fma(x, b, c6); c7 = W.Fma(x, b, c7);
            c8 = W.Fma(x, b, c8); c9 = W.Fma(x, b, c9); c10 = W.Fma(x, b, c10); c11 = W.Fma(x, b, c11);
        }
        TV s = W.Add(W.Add(W.Add(c0, c1), W.Add(c2, c3)), W.Add(W.Add(c4, c5), W.Add(c6, c7)));
        return W.Sum(W.Add(s, W.Add(W.Add(c8, c9), W.Add(c10, c11))));
    }
}
