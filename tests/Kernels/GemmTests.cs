using Engine.Kernels;
using Engine.Kernels.Cpu;
using MathNet.Numerics.LinearAlgebra;

namespace Engine.Tests;

/// <summary>The CPU GEMM against MathNet.Numerics in double: every transpose pair, every micro-kernel (Vector512 runs
/// in software where the CPU lacks AVX-512), shapes that cross the MC/KC/NC block edges, padded leading dimensions,
/// alpha and beta.</summary>
[TestFixture, NonParallelizable]
public unsafe class GemmTests
{
    // K = 1024 with no padding puts the rows of A 4 KiB apart (the GEMM copies such strips when the L1 has fewer ways than
    // a strip has rows: AliasedStripsReadInPlaceOrCopied runs both); (30, 800, 1024) then copies them once per K block
    // for three column blocks (as it does any transposed A).
    static readonly (int M, int N, int K)[] Shapes = [(1, 1, 1), (7, 13, 5), (197, 61, 67), (300, 37, 600), (13, 4100, 3), (25, 40, 1024), (30, 800, 1024)];

    static float[] Random(int n, ulong seed) => Enumerable.Range(0, n).Select(i => CounterRng.Uniform(seed, (ulong)i) * 2 - 1).ToArray();

    [Test, Combinatorial]
    public void MatchesMathNet([Values] GemmIsa isa, [Values(false, true)] bool transA, [Values(false, true)] bool transB)
    {
        var saved = CpuGemm.Isa;
        CpuGemm.Isa = isa;
        try
        {
            foreach (var (M, N, K) in Shapes)
            {
                if (isa == GemmIsa.Scalar && (long)M * N * K > 2_000_000) continue;
                Check(M, N, K, transA, transB, alpha: 0.7f, beta: 0f, pad: 3);
                Check(M, N, K, transA, transB, alpha: 1f, beta: 0.3f, pad: 0);
            }
        }
        finally { CpuGemm.Isa = saved; }
    }

    /// <summary>Every row count of a last, partial strip (each has its own micro-kernel code: 1–11 rows of 12, 1–5 of
    /// 6), with full and partial column panels, A read in place and packed.</summary>
    [Test, Combinatorial]
    public void EveryPartialStripRowCount([Values] GemmIsa isa, [Values(false, true)] bool transA)
    {
        var saved = CpuGemm.Isa;
        CpuGemm.Isa = isa;
        try
        {
            for (int M = 1; M <= 25; M++) Check(M, 37, 9, transA, transB: true, alpha: 0.7f, beta: 0.3f, pad: 1);
        }
        finally { CpuGemm.Isa = saved; }
    }

    static void Check(int M, int N, int K, bool transA, bool transB, float alpha, float beta, int pad)
    {
        int aRows = transA ? K : M, aCols = transA ? M : K, bRows = transB ? N : K, bCols = transB ? K : N;
        int lda = aCols + pad, ldb = bCols + pad, ldc = N + pad;
        var a = Random(aRows * lda, 1);
        var b = Random(bRows * ldb, 2);
        var c = Random(M * ldc, 3);
        var A = Matrix<double>.Build.Dense(aRows, aCols, (i, j) => a[i * lda + j]);
        var B = Matrix<double>.Build.Dense(bRows, bCols, (i, j) => b[i * ldb + j]);
        var C0 = Matrix<double>.Build.Dense(M, N, (i, j) => c[i * ldc + j]);
        var want = alpha * (transA ? A.Transpose() : A) * (transB ? B.Transpose() : B) + beta * C0;
        fixed (float* pa = a, pb = b, pc = c)
            CpuGemm.Gemm(transA, transB, M, N, K, alpha, pa, lda, pb, ldb, beta, pc, ldc);
        double atol = 1e-6 * Math.Sqrt(K) * 4;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
            {
                double err = Math.Abs(c[i * ldc + j] - want[i, j]);
                if (err > atol + 1e-5 * Math.Abs(want[i, j]))
                    Assert.Fail($"{CpuGemm.Isa} {M}x{N}x{K} tA={transA} tB={transB}: C[{i},{j}] = {c[i * ldc + j]}, want {want[i, j]}");
            }
        // The padding between rows of C is never written.
        for (int i = 0; i < M; i++)
            for (int j = N; j < ldc; j++)
                Assert.That(c[i * ldc + j], Is.EqualTo(Random(M * ldc, 3)[i * ldc + j]), "padding of C was written");
    }

    /// <summary>Strips of A whose rows are a multiple of 4 KiB apart are copied (per strip, or once per K block for a
    /// rectangle of several column blocks) and give the bits of the same A with padded rows, which are read in place;
    /// both match MathNet.</summary>
    [Test]
    public void AliasedStripsAreCopiedWithTheInPlaceBits([Values(GemmIsa.Vector256, GemmIsa.Vector512)] GemmIsa isa)
    {
        var saved = CpuGemm.Isa;
        try
        {
            CpuGemm.Isa = isa;
            foreach (var (M, N, K) in new[] { (13, 100, 1024), (30, 800, 1024), (197, 700, 2048) })
            {
                Check(M, N, K, false, true, alpha: 1f, beta: 0.5f, pad: 0);
                var b = Random(N * K, 42);
                float[] Run(int lda)
                {
                    var a = new float[M * lda];
                    var values = Random(M * K, 41);
                    for (int i = 0; i < M; i++) Array.Copy(values, i * K, a, i * lda, K);
                    var c = new float[M * N];
                    fixed (float* pa = a, pb = b, pc = c) CpuGemm.Gemm(false, true, M, N, K, 1f, pa, lda, pb, K, 0f, pc, N);
                    return c;
                }
                Assert.That(Run(K), Is.EqualTo(Run(K + 16)), $"{isa} {M}x{N}x{K}");
            }
        }
        finally { CpuGemm.Isa = saved; }
    }

    /// <summary>The packed B block's width follows the L2 size (half width when A fits in L2 only beside half a block):
    /// either width gives the same bits, at M = 197 with partial blocks in N and K.</summary>
    [Test]
    public void BlockWidthDoesNotChangeTheBits([Values(GemmIsa.Vector256, GemmIsa.Vector512)] GemmIsa isa)
    {
        const int M = 197, N = 700, K = 600;
        var a = Random(M * K, 11);
        var b = Random(N * K, 12);
        var saved = (CpuGemm.Isa, CpuGemm.L2Bytes);
        float[]? first = null;
        try
        {
            CpuGemm.Isa = isa;
            foreach (long l2 in new long[] { 64 << 10, 512 << 10, 16 << 20 }) // full block (A never fits), half block, full block (both fit)
            {
                CpuGemm.L2Bytes = l2;
                Check(M, N, K, false, true, alpha: 1f, beta: 0f, pad: 0);
                var c = new float[M * N];
                fixed (float* pa = a, pb = b, pc = c) CpuGemm.Gemm(false, true, M, N, K, 1f, pa, K, pb, K, 0f, pc, N);
                if (first == null) first = c;
                else Assert.That(c, Is.EqualTo(first), $"L2 {l2 >> 10} KiB");
            }
        }
        finally { (CpuGemm.Isa, CpuGemm.L2Bytes) = saved; }
    }

    /// <summary>B packed once (a frozen weight) gives the bits of B packed per product, for every micro-kernel, both
    /// orientations and a 16-bit precision, with the bias and GELU epilogue, on shapes with partial panels and several K
    /// and column blocks; a pack that does not fit the product (another shape, precision or micro-kernel, or disposed) is
    /// ignored.</summary>
    [Test, Combinatorial]
    public void PackedBGivesTheSameBits([Values] GemmIsa isa, [Values(false, true)] bool transB, [Values(Precision.FP32, Precision.BF16)] Precision precision)
    {
        var saved = CpuGemm.Isa;
        try
        {
            CpuGemm.Isa = isa;
            foreach (var (M, N, K) in new[] { (49, 700, 600), (197, 61, 67), (1, 13, 300) })
            {
                if (isa == GemmIsa.Scalar && M * N * K > 2_000_000) continue;
                var a = Random(M * K, 21);
                var b = Random(N * K, 22);
                var bias = Random(N, 23);
                int ldb = transB ? K : N;
                float[] Run(CpuGemm.PackedB? packed)
                {
                    var h = new float[M * N];
                    var y = new float[M * N];
                    fixed (float* pa = a, pb = b, ph = h, py = y, pbias = bias)
                        CpuGemm.Gemm(false, transB, M, N, K, 1f, pa, K, pb, ldb, 0f, ph, N, pbias, precision, GemmEpilogue.Gelu(py), packed);
                    return [.. h, .. y];
                }
                var want = Run(null);
                CpuGemm.PackedB Pack(Precision p, int k)
                {
                    fixed (float* pb = b) return CpuGemm.PackedB.Pack(transB, pb, ldb, k, N, p);
                }
                using (var packed = Pack(precision, K))
                {
                    Assert.That(packed.Fits(transB, K, N, precision), Is.True);
                    Assert.That(Run(packed), Is.EqualTo(want), $"{isa} {M}x{N}x{K} transB={transB} {precision}");
                    packed.Dispose();
                    Assert.That(packed.Fits(transB, K, N, precision), Is.False, "disposed");
                    Assert.That(Run(packed), Is.EqualTo(want), "a disposed pack is ignored");
                }
                using (var other = Pack(precision == Precision.FP32 ? Precision.BF16 : Precision.FP32, K))
                    Assert.That(Run(other), Is.EqualTo(want), "a pack in another precision is ignored");
                using (var shorter = Pack(precision, K - 1))
                    Assert.That(Run(shorter), Is.EqualTo(want), "a pack of another shape is ignored");
                using (var packed = Pack(precision, K))
                {
                    CpuGemm.Isa = isa == GemmIsa.Scalar ? GemmIsa.Vector256 : GemmIsa.Scalar;
                    Assert.That(packed.Fits(transB, K, N, precision), Is.False, "packed for another micro-kernel");
                    CpuGemm.Isa = isa;
                }
            }
        }
        finally { CpuGemm.Isa = saved; }
    }

    /// <summary>The calling-thread GEMM (attention's per-head products) gives <see cref="CpuGemm.Gemm"/>'s bits for every
    /// micro-kernel and transpose pair: partial strips and panels, more than one K block, padded leading dimensions,
    /// beta 0 (over NaN) and not; in 16-bit precision it is Gemm.</summary>
    [Test, Combinatorial]
    public void GemmOnThreadGivesGemmsBits([Values] GemmIsa isa, [Values(false, true)] bool transA, [Values(false, true)] bool transB)
    {
        var saved = CpuGemm.Isa;
        try
        {
            CpuGemm.Isa = isa;
            foreach (var (M, N, K, beta, precision) in new[] { (49, 49, 32, 0f, Precision.FP32), (197, 64, 300, 0.5f, Precision.FP32),
                         (13, 37, 600, 0f, Precision.FP32), (1, 1, 1, 0f, Precision.FP32), (25, 70, 300, 0.3f, Precision.BF16) })
            {
                int pad = 3, lda = (transA ? M : K) + pad, ldb = (transB ? K : N) + pad, ldc = N + pad;
                var a = Random((transA ? K : M) * lda, 31);
                var b = Random((transB ? N : K) * ldb, 32);
                var c0 = Random(M * ldc, 33);
                if (beta == 0f) Array.Fill(c0, float.NaN);
                float[] Run(bool onThread)
                {
                    var c = (float[])c0.Clone();
                    fixed (float* pa = a, pb = b, pc = c)
                        if (onThread) CpuGemm.GemmOnThread(transA, transB, M, N, K, 0.8f, pa, lda, pb, ldb, beta, pc, ldc, precision);
                        else CpuGemm.Gemm(transA, transB, M, N, K, 0.8f, pa, lda, pb, ldb, beta, pc, ldc, precision: precision);
                    return c;
                }
                var want = Run(false);
                Assert.That(want.Where((v, i) => i % ldc < N).All(float.IsFinite), Is.True, "Gemm's own result");
                Assert.That(Run(true), Is.EqualTo(want), $"{isa} {M}x{N}x{K} tA={transA} tB={transB} beta={beta} {precision}");
            }
        }
        finally { CpuGemm.Isa = saved; }
    }

    [Test]
    public void BetaZeroIgnoresNaNInC()
    {
        var a = Random(6 * 5, 1);
        var b = Random(5 * 7, 2);
        var c = Enumerable.Repeat(float.NaN, 6 * 7).ToArray();
        fixed (float* pa = a, pb = b, pc = c) CpuGemm.Gemm(false, false, 6, 7, 5, 1f, pa, 5, pb, 7, 0f, pc, 7);
        Assert.That(c.All(float.IsFinite), Is.True);
    }

    [Test]
    public void StridedBatchedEqualsLoop()
    {
        int M = 13, N = 11, K = 7, batch = 5;
        var a = Random(batch * K * M, 4);
        var b = Random(batch * N * K, 5);
        var c1 = new float[batch * M * N];
        var c2 = new float[batch * M * N];
        fixed (float* pa = a, pb = b, p1 = c1, p2 = c2)
        {
            CpuGemm.GemmStridedBatched(true, true, M, N, K, 0.5f, pa, M, K * M, pb, K, N * K, 0f, p1, N, M * N, batch);
            for (int i = 0; i < batch; i++)
                CpuGemm.Gemm(true, true, M, N, K, 0.5f, pa + i * K * M, M, pb + i * N * K, K, 0f, p2 + i * M * N, N);
        }
        Assert.That(c1, Is.EqualTo(c2));
    }

    /// <summary>Two threads split C by columns (wide N) or by rows (narrow N, a transposed A); either way every
    /// element sums in the same order as on one thread (also with a transposed A copied once per K block for more
    /// than one column block).</summary>
    [TestCase(517, 300, 700, false), TestCase(517, 40, 700, true), TestCase(197, 2304, 96, false), TestCase(300, 900, 520, true)]
    public void ThreadCountDoesNotChangeBits(int M, int N, int K, bool transA)
    {
        var a = Random(M * K, 6);
        var b = Random(N * K, 7);
        float[] Run(int threads)
        {
            var c = new float[M * N];
            int saved = CpuParallel.Threads;
            CpuParallel.Threads = threads;
            try
            {
                fixed (float* pa = a, pb = b, pc = c) CpuGemm.Gemm(transA, true, M, N, K, 1f, pa, transA ? M : K, pb, K, 0f, pc, N);
            }
            finally { CpuParallel.Threads = saved; }
            return c;
        }
        if (Environment.ProcessorCount < 2) Assert.Ignore("one processor: nothing to compare");
        Assert.That(Run(2), Is.EqualTo(Run(1)));
    }

    [Test]
    public void AgreesWithOpenBlas()
    {
        var blas = OpenBlas.TryLoad(out var reason);
        if (blas == null) Assert.Ignore(reason);
        int M = 301, N = 257, K = 513;
        var a = Random(K * M, 8);
        var b = Random(N * K, 9);
        var ours = new float[M * N];
        var theirs = new float[M * N];
        fixed (float* pa = a, pb = b, p1 = ours, p2 = theirs)
        {
            CpuGemm.Gemm(true, true, M, N, K, 1f, pa, M, pb, K, 0f, p1, N);
            blas!.Sgemm(true, true, M, N, K, 1f, pa, M, pb, K, 0f, p2, N);
        }
        for (int i = 0; i < ours.Length; i++) Assert.That(ours[i], Is.EqualTo(theirs[i]).Within(1e-4), $"element {i}");
    }
}
