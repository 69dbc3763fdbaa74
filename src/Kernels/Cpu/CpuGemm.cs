using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Cpu;

/// <summary>Instruction set used by the CPU GEMM micro-kernel.</summary>
public enum GemmIsa
{
    /// <summary>Plain scalar code (4×4 tile).</summary>
    Scalar,
    /// <summary>AVX2/FMA-class 256-bit vectors (6×16 tile).</summary>
    Vector256,
    /// <summary>AVX-512-class 512-bit vectors (8×32 tile).</summary>
    Vector512,
}

/// <summary>
/// Single-precision GEMM, row-major: C = alpha·op(A)·op(B) + beta·C.
/// BLIS structure: B is packed per (NC × KC) block into NR-wide panels (kept in L3), A per (MC × KC) block into
/// MR-tall panels (kept in L2), and an MR × NR register-tile micro-kernel runs over them. Transposes cost nothing
/// extra: they only change how the packing reads. Threads split the M blocks (and N chunks when M is small);
/// the summation order of every C element is fixed by KC alone, so results do not depend on the thread count.
/// </summary>
public static unsafe class CpuGemm
{
    const int KC = 256, MC = 168, NC = 4096;

    /// <summary>The best micro-kernel this CPU runs in hardware.</summary>
    public static GemmIsa BestIsa { get; } =
        Vector512.IsHardwareAccelerated ? GemmIsa.Vector512 :
        Vector256.IsHardwareAccelerated ? GemmIsa.Vector256 : GemmIsa.Scalar;

    /// <summary>The micro-kernel in use. Tests force each one to check it (software-emulated when not accelerated).</summary>
    public static GemmIsa Isa { get; set; } = BestIsa;

    static (int MR, int NR) Tile(GemmIsa isa) => isa switch
    {
        GemmIsa.Vector512 => (8, 32),
        GemmIsa.Vector256 => (6, 16),
        _ => (4, 4),
    };

    /// <summary>See <see cref="IKernels.Gemm"/>.</summary>
    public static void Gemm(bool transA, bool transB, int M, int N, int K, float alpha, float* A, int lda,
        float* B, int ldb, float beta, float* C, int ldc)
    {
        if (M <= 0 || N <= 0) return;
        if (K <= 0 || alpha == 0f)
        {
            ScaleC(M, N, beta, C, ldc);
            return;
        }
        var isa = Isa;
        var (MR, NR) = Tile(isa);
        int ncMax = Math.Min(NC, RoundUp(N, NR));
        float* bPack = (float*)ThreadScratch.Get(1, (long)KC * ncMax * sizeof(float));
        for (int jc = 0; jc < N; jc += NC)
        {
            int nc = Math.Min(NC, N - jc);
            for (int pc = 0; pc < K; pc += KC)
            {
                int kc = Math.Min(KC, K - pc);
                PackB(transB, B, ldb, pc, kc, jc, nc, NR, bPack);
                var body = new BlockBody
                {
                    Isa = isa, MR = MR, NR = NR, TransA = transA, A = A, Lda = lda, Pc = pc, Kc = kc,
                    BPack = bPack, Nc = nc, Jc = jc, C = C, Ldc = ldc, Alpha = alpha, Beta = pc == 0 ? beta : 1f,
                };
                body.Plan(M, CpuParallel.Threads);
                CpuParallel.For(body.MBlocks * body.NChunks, ref body);
            }
        }
    }

    /// <summary>See <see cref="IKernels.GemmStridedBatched"/>. Many small matrices run one per thread.</summary>
    public static void GemmStridedBatched(bool transA, bool transB, int M, int N, int K, float alpha,
        float* A, int lda, long strideA, float* B, int ldb, long strideB, float beta, float* C, int ldc, long strideC, int batch)
    {
        if (batch >= 2 * CpuParallel.Threads || (long)M * N * K < 1 << 18)
        {
            var body = new BatchBody
            {
                TransA = transA, TransB = transB, M = M, N = N, K = K, Alpha = alpha, A = A, Lda = lda, StrideA = strideA,
                B = B, Ldb = ldb, StrideB = strideB, Beta = beta, C = C, Ldc = ldc, StrideC = strideC,
            };
            CpuParallel.For(batch, ref body);
            return;
        }
        for (int i = 0; i < batch; i++)
            Gemm(transA, transB, M, N, K, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta, C + i * strideC, ldc);
    }

    struct BatchBody : IParallelBody
    {
        public bool TransA, TransB;
        public int M, N, K, Lda, Ldb, Ldc;
        public float Alpha, Beta;
        public float* A, B, C;
        public long StrideA, StrideB, StrideC;

        public void Run(int i) =>
            Gemm(TransA, TransB, M, N, K, Alpha, A + i * StrideA, Lda, B + i * StrideB, Ldb, Beta, C + i * StrideC, Ldc);
    }

    /// <summary>One task: an MC-row block of C against one chunk of the packed B columns.</summary>
    struct BlockBody : IParallelBody
    {
        public GemmIsa Isa;
        public int MR, NR, Lda, Pc, Kc, Nc, Jc, Ldc, M, Mc, MBlocks, NChunks, ChunkCols;
        public bool TransA;
        public float* A, BPack, C;
        public float Alpha, Beta;

        /// <summary>Chooses block sizes so that there are enough equal tasks for the threads.</summary>
        public void Plan(int m, int threads)
        {
            M = m;
            int blocks = (m + MC - 1) / MC;
            if (threads > 1 && blocks < 4 * threads) blocks = RoundUp(blocks, threads);
            Mc = Math.Min(MC, RoundUp((m + blocks - 1) / blocks, MR));
            MBlocks = (m + Mc - 1) / Mc;
            int panels = (Nc + NR - 1) / NR;
            NChunks = MBlocks >= 2 * threads ? 1 : Math.Min(panels, (2 * threads + MBlocks - 1) / MBlocks);
            ChunkCols = (panels + NChunks - 1) / NChunks * NR;
            NChunks = (Nc + ChunkCols - 1) / ChunkCols;
        }

        public void Run(int task)
        {
            int ib = task / NChunks, chunk = task % NChunks;
            int ic = ib * Mc, mc = Math.Min(Mc, M - ic);
            int j0 = chunk * ChunkCols, j1 = Math.Min(Nc, j0 + ChunkCols);
            float* aPack = (float*)ThreadScratch.Get(0, (long)MC * KC * sizeof(float));
            PackA(TransA, A, Lda, ic, mc, Pc, Kc, MR, aPack);
            for (int jr = j0; jr < j1; jr += NR)
            {
                int nr = Math.Min(NR, j1 - jr);
                float* bPanel = BPack + (long)jr * Kc;
                for (int ir = 0; ir < mc; ir += MR)
                {
                    int mr = Math.Min(MR, mc - ir);
                    float* cTile = C + (long)(ic + ir) * Ldc + Jc + jr;
                    float* aPanel = aPack + (long)ir * Kc;
                    switch (Isa)
                    {
                        case GemmIsa.Vector512: Kernel8x32(Kc, aPanel, bPanel, cTile, Ldc, Alpha, Beta, mr, nr); break;
                        case GemmIsa.Vector256: Kernel6x16(Kc, aPanel, bPanel, cTile, Ldc, Alpha, Beta, mr, nr); break;
                        default: Kernel4x4(Kc, aPanel, bPanel, cTile, Ldc, Alpha, Beta, mr, nr); break;
                    }
                }
            }
        }
    }

    static int RoundUp(int x, int m) => (x + m - 1) / m * m;

    static void ScaleC(int M, int N, float beta, float* C, int ldc)
    {
        for (int i = 0; i < M; i++)
        {
            float* row = C + (long)i * ldc;
            for (int j = 0; j < N; j++) row[j] = beta == 0f ? 0f : beta * row[j];
        }
    }

    /// <summary>Packs op(A)[ic..ic+mc, pc..pc+kc] as MR-row panels, each [kc][MR], zero-padded rows.</summary>
    static void PackA(bool transA, float* A, int lda, int ic, int mc, int pc, int kc, int MR, float* dst)
    {
        for (int ir = 0; ir < mc; ir += MR)
        {
            int mr = Math.Min(MR, mc - ir);
            float* panel = dst + (long)ir * kc;
            if (!transA)
            {
                for (int r = 0; r < MR; r++)
                {
                    if (r < mr)
                    {
                        float* src = A + (long)(ic + ir + r) * lda + pc;
                        for (int k = 0; k < kc; k++) panel[k * MR + r] = src[k];
                    }
                    else for (int k = 0; k < kc; k++) panel[k * MR + r] = 0f;
                }
            }
            else
            {
                for (int k = 0; k < kc; k++)
                {
                    float* src = A + (long)(pc + k) * lda + ic + ir;
                    float* d = panel + k * MR;
                    int r = 0;
                    for (; r < mr; r++) d[r] = src[r];
                    for (; r < MR; r++) d[r] = 0f;
                }
            }
        }
    }

    /// <summary>Packs op(B)[pc..pc+kc, jc..jc+nc] as NR-column panels, each [kc][NR], zero-padded columns.</summary>
    static void PackB(bool transB, float* B, int ldb, int pc, int kc, int jc, int nc, int NR, float* dst)
    {
        for (int jr = 0; jr < nc; jr += NR)
        {
            int nr = Math.Min(NR, nc - jr);
            float* panel = dst + (long)jr * kc;
            if (!transB)
            {
                for (int k = 0; k < kc; k++)
                {
                    float* src = B + (long)(pc + k) * ldb + jc + jr;
                    float* d = panel + k * NR;
                    if (nr == NR) Buffer.MemoryCopy(src, d, NR * sizeof(float), NR * sizeof(float));
                    else
                    {
                        int c = 0;
                        for (; c < nr; c++) d[c] = src[c];
                        for (; c < NR; c++) d[c] = 0f;
                    }
                }
            }
            else
            {
                for (int c = 0; c < NR; c++)
                {
                    if (c < nr)
                    {
                        float* src = B + (long)(jc + jr + c) * ldb + pc;
                        for (int k = 0; k < kc; k++) panel[k * NR + c] = src[k];
                    }
                    else for (int k = 0; k < kc; k++) panel[k * NR + c] = 0f;
                }
            }
        }
    }

    /// <summary>Writes an accumulator tile held in a stack buffer [MR][NR] into the valid mr × nr corner of C.</summary>
    static void StorePartial(float* tile, int NR, float* c, int ldc, float alpha, float beta, int mr, int nr)
    {
        for (int r = 0; r < mr; r++)
        {
            float* row = c + (long)r * ldc;
            for (int j = 0; j < nr; j++)
                row[j] = beta == 0f ? alpha * tile[r * NR + j] : alpha * tile[r * NR + j] + beta * row[j];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store(float* c, Vector256<float> acc, float alpha, float beta)
    {
        var r = acc * alpha;
        if (beta != 0f) r = Vector256.FusedMultiplyAdd(Vector256.Load(c), Vector256.Create(beta), r);
        r.Store(c);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store(float* c, Vector512<float> acc, float alpha, float beta)
    {
        var r = acc * alpha;
        if (beta != 0f) r = Vector512.FusedMultiplyAdd(Vector512.Load(c), Vector512.Create(beta), r);
        r.Store(c);
    }

    /// <summary>6×16 tile in 12 ymm accumulators: per k, two B vectors and six broadcasts of A.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel6x16(int kc, float* a, float* b, float* c, int ldc, float alpha, float beta, int mr, int nr)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int k = 0; k < kc; k++, a += 6, b += 16)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            var a0 = Vector256.Create(a[0]);
            c00 = Vector256.FusedMultiplyAdd(a0, b0, c00); c01 = Vector256.FusedMultiplyAdd(a0, b1, c01);
            var a1 = Vector256.Create(a[1]);
            c10 = Vector256.FusedMultiplyAdd(a1, b0, c10); c11 = Vector256.FusedMultiplyAdd(a1, b1, c11);
            var a2 = Vector256.Create(a[2]);
            c20 = Vector256.FusedMultiplyAdd(a2, b0, c20); c21 = Vector256.FusedMultiplyAdd(a2, b1, c21);
            var a3 = Vector256.Create(a[3]);
            c30 = Vector256.FusedMultiplyAdd(a3, b0, c30); c31 = Vector256.FusedMultiplyAdd(a3, b1, c31);
            var a4 = Vector256.Create(a[4]);
            c40 = Vector256.FusedMultiplyAdd(a4, b0, c40); c41 = Vector256.FusedMultiplyAdd(a4, b1, c41);
            var a5 = Vector256.Create(a[5]);
            c50 = Vector256.FusedMultiplyAdd(a5, b0, c50); c51 = Vector256.FusedMultiplyAdd(a5, b1, c51);
        }
        if (mr == 6 && nr == 16)
        {
            Store(c, c00, alpha, beta); Store(c + 8, c01, alpha, beta); c += ldc;
            Store(c, c10, alpha, beta); Store(c + 8, c11, alpha, beta); c += ldc;
            Store(c, c20, alpha, beta); Store(c + 8, c21, alpha, beta); c += ldc;
            Store(c, c30, alpha, beta); Store(c + 8, c31, alpha, beta); c += ldc;
            Store(c, c40, alpha, beta); Store(c + 8, c41, alpha, beta); c += ldc;
            Store(c, c50, alpha, beta); Store(c + 8, c51, alpha, beta);
            return;
        }
        float* t = stackalloc float[6 * 16];
        c00.Store(t); c01.Store(t + 8); c10.Store(t + 16); c11.Store(t + 24); c20.Store(t + 32); c21.Store(t + 40);
        c30.Store(t + 48); c31.Store(t + 56); c40.Store(t + 64); c41.Store(t + 72); c50.Store(t + 80); c51.Store(t + 88);
        StorePartial(t, 16, c, ldc, alpha, beta, mr, nr);
    }

    /// <summary>8×32 tile in 16 zmm accumulators: per k, two B vectors and eight broadcasts of A.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel8x32(int kc, float* a, float* b, float* c, int ldc, float alpha, float beta, int mr, int nr)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default,
            c60 = default, c61 = default, c70 = default, c71 = default;
        for (int k = 0; k < kc; k++, a += 8, b += 32)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var a0 = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(a0, b0, c00); c01 = Vector512.FusedMultiplyAdd(a0, b1, c01);
            var a1 = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(a1, b0, c10); c11 = Vector512.FusedMultiplyAdd(a1, b1, c11);
            var a2 = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(a2, b0, c20); c21 = Vector512.FusedMultiplyAdd(a2, b1, c21);
            var a3 = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(a3, b0, c30); c31 = Vector512.FusedMultiplyAdd(a3, b1, c31);
            var a4 = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(a4, b0, c40); c41 = Vector512.FusedMultiplyAdd(a4, b1, c41);
            var a5 = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(a5, b0, c50); c51 = Vector512.FusedMultiplyAdd(a5, b1, c51);
            var a6 = Vector512.Create(a[6]);
            c60 = Vector512.FusedMultiplyAdd(a6, b0, c60); c61 = Vector512.FusedMultiplyAdd(a6, b1, c61);
            var a7 = Vector512.Create(a[7]);
            c70 = Vector512.FusedMultiplyAdd(a7, b0, c70); c71 = Vector512.FusedMultiplyAdd(a7, b1, c71);
        }
        if (mr == 8 && nr == 32)
        {
            Store(c, c00, alpha, beta); Store(c + 16, c01, alpha, beta); c += ldc;
            Store(c, c10, alpha, beta); Store(c + 16, c11, alpha, beta); c += ldc;
            Store(c, c20, alpha, beta); Store(c + 16, c21, alpha, beta); c += ldc;
            Store(c, c30, alpha, beta); Store(c + 16, c31, alpha, beta); c += ldc;
            Store(c, c40, alpha, beta); Store(c + 16, c41, alpha, beta); c += ldc;
            Store(c, c50, alpha, beta); Store(c + 16, c51, alpha, beta); c += ldc;
            Store(c, c60, alpha, beta); Store(c + 16, c61, alpha, beta); c += ldc;
            Store(c, c70, alpha, beta); Store(c + 16, c71, alpha, beta);
            return;
        }
        float* t = stackalloc float[8 * 32];
        c00.Store(t); c01.Store(t + 16); c10.Store(t + 32); c11.Store(t + 48); c20.Store(t + 64); c21.Store(t + 80);
        c30.Store(t + 96); c31.Store(t + 112); c40.Store(t + 128); c41.Store(t + 144); c50.Store(t + 160);
        c51.Store(t + 176); c60.Store(t + 192); c61.Store(t + 208); c70.Store(t + 224); c71.Store(t + 240);
        StorePartial(t, 32, c, ldc, alpha, beta, mr, nr);
    }

    /// <summary>Scalar 4×4 tile, for CPUs without SIMD acceleration.</summary>
    static void Kernel4x4(int kc, float* a, float* b, float* c, int ldc, float alpha, float beta, int mr, int nr)
    {
        float* t = stackalloc float[16];
        for (int i = 0; i < 16; i++) t[i] = 0f;
        for (int k = 0; k < kc; k++, a += 4, b += 4)
            for (int r = 0; r < 4; r++)
                for (int j = 0; j < 4; j++)
                    t[r * 4 + j] = MathF.FusedMultiplyAdd(a[r], b[j], t[r * 4 + j]);
        StorePartial(t, 4, c, ldc, alpha, beta, mr, nr);
    }
}
