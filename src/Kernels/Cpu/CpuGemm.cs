using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Engine.Kernels.Cpu;

/// <summary>Instruction set used by the CPU GEMM micro-kernel.</summary>
public enum GemmIsa
{
    /// <summary>Plain scalar code (4×4 tile).</summary>
    Scalar,
    /// <summary>AVX2/FMA-class 256-bit vectors (6×16 tile).</summary>
    Vector256,
    /// <summary>AVX-512-class 512-bit vectors (12×32 tile).</summary>
    Vector512,
}

/// <summary>
/// Single-precision GEMM, row-major: C = alpha·op(A)·op(B) + beta·C.
/// C is cut into one rectangle per thread (whole NR-wide column panels or whole MR-tall row strips, across the longer
/// side). For every (KC × ncb) block of op(B) in its columns a task packs the block into NR-wide panels
/// [kc][NR] (kept in L2), then walks its row strips: an MR × kc strip of A (kept in L1) is read in place when A is not
/// transposed and its rows are not a multiple of 4 KiB apart; else the strips are copied, a transposed A's once per K
/// block for the whole rectangle. The MR × NR register-tile micro-kernel sweeps the packed
/// panels. No task waits for another: each packs the blocks of B it needs.
/// The summation order of every C element is fixed by KC alone and the rectangles are tile-aligned, so results do
/// not depend on the thread count.
/// </summary>
public static unsafe class CpuGemm
{
    /// <summary>K block (the depth of one pass over C) and the width of a packed B block (a multiple of every NR).</summary>
    const int KC = 256, NCB = 384;

    /// <summary>Floats between a rectangle's copied A strips beyond the strip itself: one cache line, so that strips
    /// 4 KiB multiples long (12 rows × 256) do not all start in the same L1 sets.</summary>
    const int StripPad = 16;

    /// <summary>Bytes of one core's L2 cache that the blocking plans for: read from Linux sysfs (512 KiB where it cannot
    /// be read: the Zen 5 VMs this project is measured on hide sysfs' cache directory, and their 1 MiB L2 is planned as
    /// 512 KiB; in a trial of both widths there, the half-width block this gives at M = 197 was the faster one at K = 3072
    /// and level at K = 768: C's block, which <see cref="BlockCols"/> does not count, shares the L2). Tests set it to run
    /// both block widths of <see cref="BlockCols"/>; results do not depend on it.</summary>
    public static long L2Bytes { get; set; } = ReadL2Bytes();

    static long ReadL2Bytes()
    {
        try
        {
            foreach (var dir in Directory.EnumerateDirectories("/sys/devices/system/cpu/cpu0/cache", "index*"))
            {
                if (File.ReadAllText(Path.Combine(dir, "level")).Trim() != "2") continue;
                var text = File.ReadAllText(Path.Combine(dir, "size")).Trim(); // "512K"
                long scale = text.EndsWith('K') ? 1024 : text.EndsWith('M') ? 1024 * 1024 : 1;
                return long.Parse(text.TrimEnd('K', 'M'), System.Globalization.CultureInfo.InvariantCulture) * scale;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or OverflowException) { }
        return 512 * 1024;
    }

    /// <summary>The width of a packed B block for a product with <paramref name="rows"/> rows of A: NCB, or half of it
    /// when a K block of all of A fits in L2 beside the half-width B block but not beside the full one (M ≈ 197 on a
    /// 512 KiB L2: A's 197 KiB and B's 384 KiB evicted each other; with half the block both stay). When A does not fit
    /// either way it streams from L3 anyway, and the wider block halves its passes.</summary>
    static int BlockCols(int rows)
    {
        long a = (long)rows * KC * sizeof(float), b = (long)NCB * KC * sizeof(float);
        return a + b > L2Bytes && a + b / 2 <= L2Bytes ? NCB / 2 : NCB;
    }

    /// <summary>The best micro-kernel this CPU runs in hardware.</summary>
    public static GemmIsa BestIsa { get; } =
        Vector512.IsHardwareAccelerated ? GemmIsa.Vector512 :
        Vector256.IsHardwareAccelerated ? GemmIsa.Vector256 : GemmIsa.Scalar;

    /// <summary>The micro-kernel in use. Tests force each one to check it (software-emulated when not accelerated).</summary>
    public static GemmIsa Isa { get; set; } = BestIsa;

    static (int MR, int NR) Tile(GemmIsa isa) => isa switch
    {
        GemmIsa.Vector512 => (12, 32),
        GemmIsa.Vector256 => (6, 16),
        _ => (4, 4),
    };

    /// <summary>See <see cref="IKernels.Gemm"/>; with <paramref name="bias"/> [N], bias[j] is added to every row of C
    /// once a strip of C is complete, while it is in L1 (the Linear layer's epilogue, bit for bit the same as a separate
    /// bias add); then the <paramref name="epilogue"/>, if any, writes GELU or a scale-shift of each completed strip (the
    /// Linear+GELU and SSF-at-a-Linear layers). A <paramref name="precision"/> below fp32 rounds the operands as they are
    /// packed (A is then always packed). A <paramref name="packedB"/> that <see cref="PackedB.Fits"/> this product is
    /// read in place of packing B (bit for bit the same result); one that does not is ignored. A <paramref name="packedA"/>
    /// holds A (not transposed; A itself is then null) as 16-bit values in <paramref name="precision"/>, bf16 or fp16:
    /// each strip is widened as it is copied, which gives the values rounding a float32 A would give.</summary>
    public static void Gemm(bool transA, bool transB, int M, int N, int K, float alpha, float* A, int lda,
        float* B, int ldb, float beta, float* C, int ldc, float* bias = null, Precision precision = Precision.FP32,
        GemmEpilogue epilogue = default, PackedB? packedB = null, ushort* packedA = null)
    {
        if (packedA != null && (transA || precision is not (Precision.BF16 or Precision.FP16)))
            throw new ArgumentException($"a 16-bit A needs bf16 or fp16 GEMMs and no transpose, not {precision.Name()}{(transA ? ", transposed" : "")}", nameof(packedA));
        if (M <= 0 || N <= 0) return;
        if (K <= 0 || alpha == 0f)
        {
            ScaleC(M, N, beta, C, ldc);
            EpilogueBlock(epilogue, 0, ldc, C, ldc, bias, M, N);
            return;
        }
        var isa = Isa;
        var (MR, NR) = Tile(isa);
        var body = new RectangleBody
        {
            Isa = isa, MR = MR, NR = NR, Ncb = BlockCols(M), TransA = transA, TransB = transB, M = M, N = N, K = K, Alpha = alpha,
            A = A, APacked = packedA, Lda = lda, B = B, Ldb = ldb, Beta = beta, C = C, Ldc = ldc, Bias = bias, Epilogue = epilogue, Precision = precision,
            PackedB = packedB != null && packedB.Fits(transB, K, N, precision) ? packedB.Data : null,
        };
        body.Plan((long)M * N * K < 1 << 20 ? 1 : CpuParallel.ThreadsHere);
        CpuParallel.For(body.ColumnParts * body.RowParts, ref body);
    }

    /// <summary>
    /// C [M,N] = alpha·op(A)·op(B) + beta·C on the calling thread, for the small products inside a fused kernel's task
    /// (attention's per-head products: a few hundred rows, columns and terms). Nothing goes through the thread pool and
    /// fp32 operands are read where they lie: op(A) 12 rows at a time, from a row-major A or, for Aᵀ, as k-major strips of
    /// its rows (each k a run of 12 adjacent floats); a B that is not transposed one NR-wide panel at a time, rows ldb
    /// apart (only a partial last panel is copied). A transposed B is packed per K block. Every element sums its terms in
    /// the same order as <see cref="Gemm"/> does, so the two agree bit for bit. Below fp32 this is <see cref="Gemm"/>,
    /// which rounds the operands as it packs them.
    /// </summary>
    public static void GemmOnThread(bool transA, bool transB, int M, int N, int K, float alpha, float* A, int lda,
        float* B, int ldb, float beta, float* C, int ldc, Precision precision = Precision.FP32)
    {
        if (precision != Precision.FP32 || M <= 0 || N <= 0 || K <= 0 || alpha == 0f)
        {
            Gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, precision: precision);
            return;
        }
        var isa = Isa;
        var (MR, NR) = Tile(isa);
        long rowStep = transA ? 1 : lda, kStep = transA ? lda : 1; // op(A)[m, k] = A[m·rowStep + k·kStep]
        float* panels = (float*)ThreadScratch.Get(5, ((long)KC * PaddedCols(N, NR) + MR * NR) * sizeof(float));
        float* tile = panels + (long)KC * PaddedCols(N, NR);
        for (int pc = 0; pc < K; pc += KC)
        {
            int kc = Math.Min(KC, K - pc);
            float blockBeta = pc == 0 ? beta : 1f;
            if (transB) PackB(true, B, ldb, pc, kc, 0, N, NR, panels);
            for (int jr = 0; jr < N; jr += NR)
            {
                int nr = Math.Min(NR, N - jr);
                float* panel = transB ? panels + (long)jr * kc : B + (long)pc * ldb + jr;
                long bs = transB ? NR : ldb;
                if (!transB && nr < NR)
                {
                    PackB(false, B, ldb, pc, kc, jr, nr, NR, panel = panels);
                    bs = NR;
                }
                for (int ir = 0; ir < M; ir += MR)
                {
                    int mr = Math.Min(MR, M - ir);
                    float* a = A + ir * rowStep + pc * kStep, c = C + (long)ir * ldc + jr;
                    if (nr == NR) MicroKernel(isa, mr, kc, a, rowStep, kStep, panel, bs, c, ldc, alpha, blockBeta);
                    else
                    {
                        MicroKernel(isa, mr, kc, a, rowStep, kStep, panel, bs, tile, NR, 1f, 0f);
                        StorePartial(tile, NR, c, ldc, alpha, blockBeta, mr, nr);
                    }
                }
            }
        }
    }

    /// <summary>See <see cref="IKernels.GemmStridedBatched"/>. Many small matrices run one per thread.</summary>
    public static void GemmStridedBatched(bool transA, bool transB, int M, int N, int K, float alpha,
        float* A, int lda, long strideA, float* B, int ldb, long strideB, float beta, float* C, int ldc, long strideC, int batch,
        Precision precision = Precision.FP32)
    {
        if (batch >= 2 * CpuParallel.Threads || (long)M * N * K < 1 << 18)
        {
            var body = new BatchBody
            {
                TransA = transA, TransB = transB, M = M, N = N, K = K, Alpha = alpha, A = A, Lda = lda, StrideA = strideA,
                B = B, Ldb = ldb, StrideB = strideB, Beta = beta, C = C, Ldc = ldc, StrideC = strideC, Precision = precision,
            };
            CpuParallel.For(batch, ref body);
            return;
        }
        for (int i = 0; i < batch; i++)
            Gemm(transA, transB, M, N, K, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta, C + i * strideC, ldc, null, precision);
    }

    struct BatchBody : IParallelBody
    {
        public bool TransA, TransB;
        public int M, N, K, Lda, Ldb, Ldc;
        public float Alpha, Beta;
        public float* A, B, C;
        public long StrideA, StrideB, StrideC;
        public Precision Precision;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int i) =>
            Gemm(TransA, TransB, M, N, K, Alpha, A + i * StrideA, Lda, B + i * StrideB, Ldb, Beta, C + i * StrideC, Ldc, null, Precision);
    }

    /// <summary>One task: the rectangle of C at (row part, column part) of a RowParts × ColumnParts grid.</summary>
    struct RectangleBody : IParallelBody
    {
        public GemmIsa Isa;
        public int MR, NR, Ncb, M, N, K, Lda, Ldb, Ldc, RowParts, ColumnParts, PartRows, PartCols;
        public bool TransA, TransB;
        public float* A, B, C, Bias, PackedB;
        public ushort* APacked;
        public GemmEpilogue Epilogue;
        public float Alpha, Beta;
        public Precision Precision;

        /// <summary>Splits C into one rectangle per thread, across the longer of its sides: across columns when M ≤ N
        /// (and every thread gets a panel), else across rows. Each column part reads all of A again and each row part
        /// packs all of B again, so for t parts the columns cost t·M·K + K·N reads and the rows M·K + t·K·N: the longer
        /// side is the cheaper cut. (On a 2-vCPU Zen 5 VM: at M = 1576, ViT-B's batch 8, rows ran 5–14% faster than columns
        /// while another tenant loaded the memory system, level otherwise; at M ≈ 49–392 columns were faster. Four
        /// rectangles per thread, taken as they come, ran up to 15% slower: each one packs B or reads A again, and a
        /// column part narrower than a packed B block adds a partial block.)</summary>
        public void Plan(int threads)
        {
            int panels = (N + NR - 1) / NR, strips = (M + MR - 1) / MR;
            ColumnParts = RowParts = 1;
            if (threads > 1)
            {
                if (M <= N && panels >= threads) ColumnParts = threads;
                else RowParts = Math.Min(threads, strips);
            }
            PartCols = (panels + ColumnParts - 1) / ColumnParts * NR;
            PartRows = (strips + RowParts - 1) / RowParts * MR;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int task)
        {
            int n0 = task % ColumnParts * PartCols, n1 = Math.Min(N, n0 + PartCols);
            int m0 = task / ColumnParts * PartRows, m1 = Math.Min(M, m0 + PartRows);
            if (n0 >= n1 || m0 >= m1) return;
            float* bPack = PackedB != null ? null : (float*)ThreadScratch.Get(1, (long)KC * Ncb * sizeof(float));
            // An A that must be copied (transposed, rounded, or rows a multiple of 4 KiB apart) is copied once per K
            // block for all of the rectangle's strips when it is transposed or the rectangle has more than one column
            // block, and the column blocks then run inside the K blocks. A strip whose rows are 4 KiB apart puts all of
            // them into one L1 set, where every line of B that lands in that set evicts one of them. Read in place (when
            // C was cut across columns) ViT-B/16's fc2 at batch 1 on 2 threads ran 0.75–0.89 of the speed of the same
            // product with padded rows; copied it runs level with it (docs/benchmarks.md, the ninth Zen 5 sitting),
            // though each column part copies all of A. A transposed strip copied
            // on its own gathers 48 bytes from each of kc rows of A lda apart (the same L1 sets when lda is a multiple of
            // 1024); copied for the whole rectangle, each row of A is read once from end to end. Each C element still
            // sums its K blocks in order, so the result is the same bit for bit.
            bool copyA = TransA || Lda % 1024 == 0 || Precision != Precision.FP32;
            bool keepA = TransA || copyA && n1 - n0 > Ncb;
            long strips = (m1 - m0 + MR - 1) / MR, aFloats = keepA ? strips * (MR * KC + StripPad) : MR * KC;
            float* aCopy = (float*)ThreadScratch.Get(0, (aFloats + (long)MR * NR) * sizeof(float));
            float* tile = aCopy + aFloats; // a partial tile's full MR × NR result, before its valid corner is stored
            if (!keepA)
            {
                for (int jc = n0; jc < n1; jc += Ncb)
                    for (int pc = 0; pc < K; pc += KC) Block(m0, m1, jc, Math.Min(Ncb, n1 - jc), pc, Math.Min(KC, K - pc), copyA ? aCopy : null, 0, bPack, tile);
                return;
            }
            for (int pc = 0; pc < K; pc += KC)
            {
                int kc = Math.Min(KC, K - pc);
                long stride = MR * kc + StripPad;
                if (!TransA)
                    for (int ir = m0; ir < m1; ir += MR) CopyStrip(ir, Math.Min(MR, m1 - ir), pc, kc, aCopy + (ir - m0) / MR * stride);
                else
                {
                    PackATransposed(A, Lda, m0, m1, pc, kc, MR, aCopy, stride);
                    if (Precision != Precision.FP32)
                        for (long st = 0; st < strips; st++) LowPrecision.Round(aCopy + st * stride, aCopy + st * stride, (long)MR * kc, Precision);
                }
                for (int jc = n0; jc < n1; jc += Ncb) Block(m0, m1, jc, Math.Min(Ncb, n1 - jc), pc, kc, aCopy, stride, bPack, tile);
            }
        }

        /// <summary>One (kc × nc) block of op(B) against rows m0..m1 of op(A): B packed (or found in PackedB), then
        /// each MR-row strip through the micro-kernel. aCopy null: A read in place; stride 0: aCopy holds one strip,
        /// copied here; else aCopy holds the rectangle's strips, stride floats apart, already copied for this K block.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        readonly void Block(int m0, int m1, int jc, int nc, int pc, int kc, float* aCopy, long stride, float* bPack, float* tile)
        {
            if (PackedB != null) bPack = PackedB + (long)pc * PaddedCols(N, NR) + (long)jc * kc; // the block's panels, in place
            else
            {
                PackB(TransB, B, Ldb, pc, kc, jc, nc, NR, bPack);
                if (Precision != Precision.FP32) LowPrecision.Round(bPack, bPack, (long)kc * PaddedCols(nc, NR), Precision);
            }
            float beta = pc == 0 ? Beta : 1f;
            bool lastBlock = pc + kc == K;
            for (int ir = m0; ir < m1; ir += MR)
            {
                int mr = Math.Min(MR, m1 - ir); // the last strip may be partial: the micro-kernel then runs on its rows alone
                float* a;
                long la = TransA ? 1 : kc, ka = TransA ? MR : 1; // row and k strides of a copied strip
                if (aCopy == null)
                {
                    a = A + (long)ir * Lda + pc;
                    la = Lda;
                }
                else if (stride == 0) CopyStrip(ir, mr, pc, kc, a = aCopy);
                else a = aCopy + (ir - m0) / MR * stride;
                float* cRow = C + (long)ir * Ldc + jc;
                for (int jr = 0; jr < nc; jr += NR)
                {
                    int nr = Math.Min(NR, nc - jr);
                    float* bPanel = bPack + (long)jr * kc;
                    if (nr == NR) MicroKernel(Isa, mr, kc, a, la, ka, bPanel, NR, cRow + jr, Ldc, Alpha, beta);
                    else
                    {
                        MicroKernel(Isa, mr, kc, a, la, ka, bPanel, NR, tile, NR, 1f, 0f);
                        StorePartial(tile, NR, cRow + jr, Ldc, Alpha, beta, mr, nr);
                    }
                }
                if (lastBlock && (Bias != null || Epilogue.Y != null || Epilogue.Residual != null))
                    EpilogueBlock(Epilogue, cRow - C, Ldc, cRow, Ldc, Bias == null ? null : Bias + jc, mr, nc);
            }
        }

        /// <summary>Copies the strip op(A)[ir..ir+mr, pc..pc+kc] into dst as <see cref="PackAStrip"/> lays it out, in the
        /// product's precision: widened from <see cref="APacked"/> (already in it), else copied and rounded.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        readonly void CopyStrip(int ir, int mr, int pc, int kc, float* dst)
        {
            if (APacked == null)
            {
                PackAStrip(TransA, A, Lda, ir, mr, pc, kc, MR, dst);
                if (Precision != Precision.FP32) LowPrecision.Round(dst, dst, (long)MR * kc, Precision);
                return;
            }
            for (int r = 0; r < mr; r++) CpuKernels.UnpackRow(dst + (long)r * kc, APacked + (long)(ir + r) * Lda + pc, kc, Precision);
            new Span<float>(dst + (long)mr * kc, (MR - mr) * kc).Clear();
        }
    }

    /// <summary>The Linear epilogue on an mr × nr block h of C (rows ldh apart) that starts <paramref name="offset"/>
    /// elements into C, while it is in L1: h[r, j] += bias[j] (no bias: null), then the epilogue's y at the same offset
    /// (rows ldy apart; y may be C): GELU(h), or h·scale + shift per column (scale and shift from the block's first
    /// column, offset mod ldy), and GELU of that when the epilogue says so; h is packed to 16 bits first when the
    /// epilogue keeps it so, and y after it when the epilogue writes it so. The epilogue's residual (rows ldy apart) is
    /// added last: to h itself when there is no y, else to y after the scale-shift.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void EpilogueBlock(in GemmEpilogue e, long offset, int ldy, float* h, int ldh, float* bias, int mr, int nr)
    {
        if (bias != null) AddBiasTile(h, ldh, bias, mr, nr);
        if (e.Y == null)
        {
            if (e.Residual != null) AddResidualTile(h, ldh, e.Residual + offset, ldy, mr, nr);
            return;
        }
        float* y = e.Y + offset;
        if (e.Scale == null)
        {
            for (int r = 0; r < mr; r++)
            {
                float* hr = h + (long)r * ldh, yr = y + (long)r * ldy;
                if (e.Packed != null) CpuKernels.PackRow(e.Packed + offset + (long)r * ldy, hr, nr, e.PackedPrecision);
                hr = RoundedInput(e, hr, yr, nr);
                CpuKernels.GeluRow(yr, hr, nr);
                if (e.PackedY != null) CpuKernels.PackRow(e.PackedY + offset + (long)r * ldy, y + (long)r * ldy, nr, e.PackedPrecision);
            }
            return;
        }
        long col = offset % ldy;
        float* scale = e.Scale + col, shift = e.Shift + col;
        int V = System.Numerics.Vector<float>.Count;
        for (int r = 0; r < mr; r++)
        {
            float* hr = h + (long)r * ldh, yr = y + (long)r * ldy;
            if (e.Packed != null) CpuKernels.PackRow(e.Packed + offset + (long)r * ldy, hr, nr, e.PackedPrecision);
            hr = RoundedInput(e, hr, yr, nr);
            int j = 0;
            for (; j + V <= nr; j += V) Vec.Store(yr + j, Vec.Load(hr + j) * Vec.Load(scale + j) + Vec.Load(shift + j));
            for (; j < nr; j++) yr[j] = hr[j] * scale[j] + shift[j];
            if (e.GeluAfter) CpuKernels.GeluRow(yr, yr, nr);
            if (e.Residual != null) AddResidualTile(yr, ldy, e.Residual + offset + (long)r * ldy, ldy, 1, nr);
            if (e.PackedY != null) CpuKernels.PackRow(e.PackedY + offset + (long)r * ldy, yr, nr, e.PackedPrecision);
        }
    }

    /// <summary>A row of h as the epilogue's op reads it: h itself, or, where the epilogue says (<see
    /// cref="GemmEpilogue.InputPrecision"/>), h rounded to 16 bits into y's row (a float32 h kept for backward stays
    /// unrounded).</summary>
    static float* RoundedInput(in GemmEpilogue e, float* h, float* y, int n)
    {
        if (e.InputPrecision == Precision.FP32) return h;
        LowPrecision.Round(y, h, n, e.InputPrecision);
        return y;
    }

    /// <summary>c[r, j] += bias[j] for an mr × nr tile of C (rows ldc apart), while the tile is in L1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void AddBiasTile(float* c, int ldc, float* bias, int mr, int nr)
    {
        int V = System.Numerics.Vector<float>.Count;
        for (int r = 0; r < mr; r++)
        {
            float* row = c + (long)r * ldc;
            int j = 0;
            for (; j + V <= nr; j += V) Vec.Store(row + j, Vec.Load(row + j) + Vec.Load(bias + j));
            for (; j < nr; j++) row[j] += bias[j];
        }
    }

    /// <summary>c[r, j] = residual[r, j] + c[r, j] for an mr × nr tile of C (rows ldc apart; the residual's ldr apart),
    /// while the tile is in L1: the residual add after a layer, in the order a separate add computes it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void AddResidualTile(float* c, int ldc, float* residual, int ldr, int mr, int nr)
    {
        int V = System.Numerics.Vector<float>.Count;
        for (int r = 0; r < mr; r++)
        {
            float* row = c + (long)r * ldc, add = residual + (long)r * ldr;
            int j = 0;
            for (; j + V <= nr; j += V) Vec.Store(row + j, Vec.Load(add + j) + Vec.Load(row + j));
            for (; j < nr; j++) row[j] = add[j] + row[j];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ScaleC(int M, int N, float beta, float* C, int ldc)
    {
        for (int i = 0; i < M; i++)
        {
            float* row = C + (long)i * ldc;
            for (int j = 0; j < N; j++) row[j] = beta == 0f ? 0f : beta * row[j];
        }
    }

    /// <summary>Copies op(A)[ir..ir+mr, pc..pc+kc] into dst, rows past mr zero (the micro-kernel reads only mr rows;
    /// the zeros keep a low-precision rounding of the whole strip on defined values). A not transposed (rows a multiple
    /// of 4 KiB apart, which would all fall into the same L1 set, or operands rounded to a low precision): row-major
    /// [MR][kc]. A transposed: k-major [kc][MR], each k's MR values contiguous in A too (a
    /// row-major copy would gather them one by one; the micro-kernels take either layout by its row and k strides).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackAStrip(bool transA, float* A, int lda, int ir, int mr, int pc, int kc, int MR, float* dst)
    {
        if (!transA)
        {
            for (int r = 0; r < mr; r++)
                Buffer.MemoryCopy(A + (long)(ir + r) * lda + pc, dst + (long)r * kc, kc * sizeof(float), kc * sizeof(float));
            new Span<float>(dst + (long)mr * kc, (MR - mr) * kc).Clear();
            return;
        }
        for (int k = 0; k < kc; k++, dst += MR)
        {
            float* src = A + (long)(pc + k) * lda + ir;
            int r = 0;
            for (; r + 4 <= mr; r += 4) Vector128.Store(Vector128.Load(src + r), dst + r);
            for (; r < mr; r++) dst[r] = src[r];
            for (; r < MR; r++) dst[r] = 0f;
        }
    }

    /// <summary>Copies rows m0..m1 of op(A) = Aᵀ, K block pc..pc+kc, into k-major strips [kc][MR] stride floats
    /// apart (rows past the last strip's end zero): row pc + k of A is read once from end to end, 12 of its values
    /// to each strip.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackATransposed(float* A, int lda, int m0, int m1, int pc, int kc, int MR, float* dst, long stride)
    {
        for (int k = 0; k < kc; k++)
        {
            float* src = A + (long)(pc + k) * lda;
            float* d = dst + (long)k * MR;
            for (int ir = m0; ir < m1; ir += MR, d += stride)
            {
                int mr = Math.Min(MR, m1 - ir), r = 0;
                for (; r + 8 <= mr; r += 8) Vector256.Store(Vector256.Load(src + ir + r), d + r);
                for (; r + 4 <= mr; r += 4) Vector128.Store(Vector128.Load(src + ir + r), d + r);
                for (; r < mr; r++) d[r] = src[ir + r];
                for (; r < MR; r++) d[r] = 0f;
            }
        }
    }

    /// <summary>n rounded up to whole NR-wide panels.</summary>
    static int PaddedCols(int n, int NR) => (n + NR - 1) / NR * NR;

    /// <summary>
    /// op(B) [K, N] packed once for <see cref="Gemm"/>, for an operand that does not change between products (a frozen
    /// weight): each K block's NR-wide panels one after another, [⌈K/KC⌉][⌈N/NR⌉][kc][NR], so the panels of any block
    /// of columns are the bytes a product would pack for itself. The product then streams them straight from memory into
    /// its micro-kernel instead of first copying (and, for a transposed weight, transposing) each block: with few rows of
    /// A (M ≈ 49–200) that copy is not repaid by many strips. The panels cost as much memory again as B. Made for the
    /// micro-kernel in use when packed (<see cref="Isa"/>), with values rounded to one precision.
    /// </summary>
    public sealed class PackedB : IDisposable
    {
        internal float* Data { get; private set; }

        /// <summary>What the panels hold: op(B)'s orientation and shape, the micro-kernel and the precision.</summary>
        readonly (bool TransB, int K, int N, GemmIsa Isa, Precision Precision) _made;

        PackedB(float* data, (bool, int, int, GemmIsa, Precision) made, long bytes)
        {
            Data = data;
            _made = made;
            Bytes = bytes;
            GC.AddMemoryPressure(bytes);
        }

        /// <summary>Packs op(B) [K, N] (B [K, N] with rows ldb apart, or transposed, [N, K]) for the micro-kernel in use
        /// (<see cref="Isa"/>), its values rounded to <paramref name="precision"/>.</summary>
        public static PackedB Pack(bool transB, float* B, int ldb, int K, int N, Precision precision = Precision.FP32)
        {
            if (K <= 0 || N <= 0) throw new ArgumentOutOfRangeException(nameof(K), $"cannot pack an empty operand [{K}, {N}]");
            var isa = Isa;
            int NR = Tile(isa).NR, cols = PaddedCols(N, NR);
            long count = (long)K * cols;
            float* data = (float*)NativeBuffer.Allocate(count * sizeof(float));
            for (int pc = 0; pc < K; pc += KC) PackB(transB, B, ldb, pc, Math.Min(KC, K - pc), 0, N, NR, data + (long)pc * cols);
            if (precision != Precision.FP32) LowPrecision.Round(data, data, count, precision);
            return new PackedB(data, (transB, K, N, isa, precision), count * sizeof(float));
        }

        /// <summary>Bytes the panels take.</summary>
        public long Bytes { get; }

        /// <summary>Whether a product of op(B) [K, N] in <paramref name="precision"/> can read these panels: same
        /// orientation, shape and precision, packed for the micro-kernel in use now, not disposed.</summary>
        public bool Fits(bool transB, int K, int N, Precision precision) =>
            Data != null && _made == (transB, K, N, Isa, precision);

        /// <summary>Frees the panels; products no longer read them.</summary>
        public void Dispose()
        {
            Free();
            GC.SuppressFinalize(this);
        }

        /// <summary>Frees the panels of a pack nobody disposed.</summary>
        ~PackedB() => Free();

        void Free()
        {
            if (Data == null) return;
            NativeMemory.AlignedFree(Data);
            Data = null;
            GC.RemoveMemoryPressure(Bytes);
        }
    }

    /// <summary>Packs op(B)[pc..pc+kc, jc..jc+nc] as NR-column panels, each [kc][NR], zero-padded columns.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
                    if (nr == NR && NR % 8 == 0)
                        for (int c = 0; c < NR; c += 8) Vector256.Store(Vector256.Load(src + c), d + c); // (MemoryCopy's call cost more than 64 bytes)
                    else
                    {
                        int c = 0;
                        for (; c < nr; c++) d[c] = src[c];
                        for (; c < NR; c++) d[c] = 0f;
                    }
                }
            }
            else if (NR % 8 == 0 && Avx.IsSupported) // (the scalar kernel's 4-wide panels go by hand)
            {
                // W rows (jc+jr+c) become panel columns: 8×8 blocks transposed in registers, the k tail, a last group of
                // fewer than 8 rows and the zero columns past the end by hand.
                int k8 = kc & ~7;
                for (int c = 0; c < NR; c += 8)
                {
                    float* src = B + (long)(jc + jr + c) * ldb + pc;
                    int live = Math.Clamp(nr - c, 0, 8);
                    int kt = live == 8 ? k8 : 0;
                    for (int k = 0; k < kt; k += 8) Transpose8x8(src + k, ldb, panel + k * NR + c, NR);
                    for (int k = kt; k < kc; k++)
                    {
                        float* d = panel + k * NR + c;
                        int j = 0;
                        for (; j < live; j++) d[j] = src[(long)j * ldb + k];
                        for (; j < 8; j++) d[j] = 0f;
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

    /// <summary>dst[j, i] = src[i, j] for an 8×8 block; rows ldSrc and ldDst floats apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose8x8(float* src, long ldSrc, float* dst, long ldDst)
    {
        var r0 = Avx.LoadVector256(src); var r1 = Avx.LoadVector256(src + ldSrc);
        var r2 = Avx.LoadVector256(src + 2 * ldSrc); var r3 = Avx.LoadVector256(src + 3 * ldSrc);
        var r4 = Avx.LoadVector256(src + 4 * ldSrc); var r5 = Avx.LoadVector256(src + 5 * ldSrc);
        var r6 = Avx.LoadVector256(src + 6 * ldSrc); var r7 = Avx.LoadVector256(src + 7 * ldSrc);
        // Pairs of rows interleaved, then pairs of pairs: each 128-bit lane holds a 4×4 transpose.
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        // Low lanes of rows 0–3 with low lanes of rows 4–7 give output rows 0–3; the high lanes rows 4–7.
        Avx.Store(dst, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(dst + ldDst, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(dst + 2 * ldDst, Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(dst + 3 * ldDst, Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(dst + 4 * ldDst, Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(dst + 5 * ldDst, Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(dst + 6 * ldDst, Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(dst + 7 * ldDst, Avx.Permute2x128(u3, u7, 0x31));
    }

    /// <summary>Writes an accumulator tile held in a buffer [MR][NR] into the valid mr × nr corner of C
    /// (with the same fused beta·C + alpha·acc as the full-tile store).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void StorePartial(float* tile, int NR, float* c, int ldc, float alpha, float beta, int mr, int nr)
    {
        int V = System.Numerics.Vector<float>.Count;
        var a = new System.Numerics.Vector<float>(alpha);
        var b = new System.Numerics.Vector<float>(beta);
        for (int r = 0; r < mr; r++)
        {
            float* row = c + (long)r * ldc, t = tile + r * NR;
            int j = 0;
            for (; j + V <= nr; j += V)
                Vec.Store(row + j, beta == 0f ? a * Vec.Load(t + j) : System.Numerics.Vector.FusedMultiplyAdd(Vec.Load(row + j), b, a * Vec.Load(t + j)));
            for (; j < nr; j++)
                row[j] = beta == 0f ? alpha * t[j] : MathF.FusedMultiplyAdd(row[j], beta, alpha * t[j]);
        }
    }

    /// <summary>One row of a register tile: c0 += a·b0, c1 += a·b1 (a broadcast).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Fma2<TV, W>(ref TV c0, ref TV c1, float a, TV b0, TV b1) where TV : struct where W : ISimd<TV>
    {
        var x = W.Splat(a);
        c0 = W.Fma(x, b0, c0);
        c1 = W.Fma(x, b1, c1);
    }

    /// <summary>One row of a register tile into C: c[0..2·Count) = alpha·(acc0, acc1) + beta·c (beta 0: C is not read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store2<TV, W>(float* c, TV acc0, TV acc1, float alpha, float beta) where TV : struct where W : ISimd<TV>
    {
        TV a = W.Splat(alpha), r0 = W.Mul(acc0, a), r1 = W.Mul(acc1, a);
        if (beta != 0f)
        {
            var b = W.Splat(beta);
            r0 = W.Fma(W.Load(c), b, r0);
            r1 = W.Fma(W.Load(c + W.Count), b, r1);
        }
        W.Store(c, r0);
        W.Store(c + W.Count, r1);
    }

    /// <summary>The float <paramref name="bytes"/> bytes past <paramref name="p"/>: rows of an in-place A strip are
    /// addressed as base + lda or base + 2·lda, so a 12-row strip needs only four base pointers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float At(float* p, nint bytes) => *(float*)((byte*)p + bytes);

    /// <summary>The micro-kernel of <paramref name="isa"/> on the first <paramref name="rows"/> (1..MR) rows of a strip.</summary>
    static void MicroKernel(GemmIsa isa, int rows, int kc, float* a, long lda, long ks, float* b, long bs, float* c, int ldc, float alpha, float beta)
    {
        if (isa == GemmIsa.Vector512) KernelRows<Vector512<float>, W512>(rows, kc, a, lda, ks, b, bs, c, ldc, alpha, beta);
        else if (isa == GemmIsa.Vector256) KernelRows<Vector256<float>, W256>(rows, kc, a, lda, ks, b, bs, c, ldc, alpha, beta);
        else Kernel4x4(rows, kc, a, lda, ks, b, bs, c, ldc, alpha, beta);
    }

    /// <summary><see cref="KernelTile"/> compiled for <paramref name="rows"/> rows.</summary>
    static void KernelRows<TV, W>(int rows, int kc, float* a, long lda, long ks, float* b, long bs, float* c, int ldc, float alpha, float beta)
        where TV : struct where W : ISimd<TV>
    {
        switch (rows)
        {
            case 12: KernelTile<TV, W, N12>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 11: KernelTile<TV, W, N11>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 10: KernelTile<TV, W, N10>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 9: KernelTile<TV, W, N9>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 8: KernelTile<TV, W, N8>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 7: KernelTile<TV, W, N7>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 6: KernelTile<TV, W, N6>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 5: KernelTile<TV, W, N5>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 4: KernelTile<TV, W, N4>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 3: KernelTile<TV, W, N3>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            case 2: KernelTile<TV, W, N2>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
            default: KernelTile<TV, W, N1>(kc, a, lda, ks, b, bs, c, ldc, alpha, beta); break;
        }
    }

    /// <summary>The register-tile micro-kernel, up to 12 rows × 2 vectors of columns: 12×32 in 24 zmm accumulators (of
    /// 32) with 512-bit vectors, 6×16 in 12 ymm (of 16) with 256-bit ones (rows R.N, a compile-time constant: each
    /// row count gets its own code with the other rows' loads, FMAs and stores gone, so a partial strip of 1–11 rows
    /// costs its rows, not a whole strip's).
    /// Before the k loop it prefetches its tile of C (read or written after the loop; a rectangle's C block outgrows L2
    /// at M = 1576, so each K block would otherwise meet its tiles in L3 or memory and stall on them: `bash bench/ab.sh`
    /// at 1576×2304×768 and 1576×768×3072 on 2 threads, 1.11× the speed without it).
    /// Per k: two B vectors and a broadcast of A per row. a: the rows × kc, element (r, k) at a[r·lda + k·ks] (a
    /// row-major strip: ks = 1; a k-major one: lda = 1, ks = MR); b: panel [kc][2·W.Count], rows bs floats apart (packed:
    /// bs = 2·W.Count; a B read in place: its row stride); c: the tile's rows, all
    /// columns (a tile with fewer columns goes through a scratch tile: no stack buffer or call here, which made the JIT
    /// spill the accumulators when it compiled without profile data).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void KernelTile<TV, W, R>(int kc, float* a, long lda, long ks, float* b, long bs, float* c, int ldc, float alpha, float beta)
        where TV : struct where W : ISimd<TV> where R : struct, ICount
    {
        TV c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default,
            c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default,
            c90 = default, c91 = default, ca0 = default, ca1 = default, cb0 = default, cb1 = default;
        for (int r = 0; Sse.IsSupported && r < R.N; r++) // the tile of C, read or written after the loop: from L3 or memory when C outgrows L2
        {
            float* row = c + (long)r * ldc;
            Sse.Prefetch0(row);
            if (W.Count == 16) Sse.Prefetch0(row + 16);
            Sse.Prefetch0(row + 2 * W.Count - 1); // a row not 64-byte aligned spans one line more
        }
        nint l1 = (nint)(lda * sizeof(float)), l2 = 2 * l1;
        float* a0 = a, a3 = a + 3 * lda, a6 = a + 6 * lda, a9 = a + 9 * lda;
        for (int k = 0; k < kc; k++, a0 += ks, a3 += ks, a6 += ks, a9 += ks, b += bs)
        {
            var b0 = W.Load(b);
            var b1 = W.Load(b + W.Count);
            Fma2<TV, W>(ref c00, ref c01, *a0, b0, b1);
            if (R.N > 1) Fma2<TV, W>(ref c10, ref c11, At(a0, l1), b0, b1);
            if (R.N > 2) Fma2<TV, W>(ref c20, ref c21, At(a0, l2), b0, b1);
            if (R.N > 3) Fma2<TV, W>(ref c30, ref c31, *a3, b0, b1);
            if (R.N > 4) Fma2<TV, W>(ref c40, ref c41, At(a3, l1), b0, b1);
            if (R.N > 5) Fma2<TV, W>(ref c50, ref c51, At(a3, l2), b0, b1);
            if (R.N > 6) Fma2<TV, W>(ref c60, ref c61, *a6, b0, b1);
            if (R.N > 7) Fma2<TV, W>(ref c70, ref c71, At(a6, l1), b0, b1);
            if (R.N > 8) Fma2<TV, W>(ref c80, ref c81, At(a6, l2), b0, b1);
            if (R.N > 9) Fma2<TV, W>(ref c90, ref c91, *a9, b0, b1);
            if (R.N > 10) Fma2<TV, W>(ref ca0, ref ca1, At(a9, l1), b0, b1);
            if (R.N > 11) Fma2<TV, W>(ref cb0, ref cb1, At(a9, l2), b0, b1);
        }
        Store2<TV, W>(c, c00, c01, alpha, beta);
        if (R.N > 1) Store2<TV, W>(c += ldc, c10, c11, alpha, beta);
        if (R.N > 2) Store2<TV, W>(c += ldc, c20, c21, alpha, beta);
        if (R.N > 3) Store2<TV, W>(c += ldc, c30, c31, alpha, beta);
        if (R.N > 4) Store2<TV, W>(c += ldc, c40, c41, alpha, beta);
        if (R.N > 5) Store2<TV, W>(c += ldc, c50, c51, alpha, beta);
        if (R.N > 6) Store2<TV, W>(c += ldc, c60, c61, alpha, beta);
        if (R.N > 7) Store2<TV, W>(c += ldc, c70, c71, alpha, beta);
        if (R.N > 8) Store2<TV, W>(c += ldc, c80, c81, alpha, beta);
        if (R.N > 9) Store2<TV, W>(c += ldc, c90, c91, alpha, beta);
        if (R.N > 10) Store2<TV, W>(c += ldc, ca0, ca1, alpha, beta);
        if (R.N > 11) Store2<TV, W>(c += ldc, cb0, cb1, alpha, beta);
    }

    /// <summary>Scalar 4×4 tile, for CPUs without SIMD acceleration: its first <paramref name="rows"/> rows. a: the rows × kc,
    /// element (r, k) at a[r·lda + k·ks]; b: panel [kc][4], rows bs floats apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel4x4(int rows, int kc, float* a, long lda, long ks, float* b, long bs, float* c, int ldc, float alpha, float beta)
    {
        float* t = stackalloc float[16];
        for (int i = 0; i < 16; i++) t[i] = 0f;
        for (int k = 0; k < kc; k++, b += bs)
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < 4; j++)
                    t[r * 4 + j] = MathF.FusedMultiplyAdd(a[r * lda + k * ks], b[j], t[r * 4 + j]);
        StorePartial(t, 4, c, ldc, alpha, beta, rows, 4);
    }
}

/// <summary>
/// What <see cref="CpuGemm.Gemm"/> writes from each completed block h of C while it is in L1, after any bias: nothing
/// (default), <see cref="Gelu"/> y = GELU(h), or <see cref="ScaleShift"/> y = h·scale + shift per column (SSF at a
/// Linear site). y has C's row stride and may be C itself.
/// </summary>
public readonly unsafe struct GemmEpilogue
{
    /// <summary>Where the epilogue writes (null: no epilogue).</summary>
    public float* Y { get; private init; }

    /// <summary>Scale [N] of a scale-shift epilogue (null: GELU).</summary>
    public float* Scale { get; private init; }

    /// <summary>Shift [N] of a scale-shift epilogue.</summary>
    public float* Shift { get; private init; }

    /// <summary>y = GELU(h), or, with <paramref name="inputPrecision"/> bf16 or fp16, GELU of h rounded to it (as
    /// autocast's GELU reads a Linear's 16-bit output).</summary>
    public static GemmEpilogue Gelu(float* y, Precision inputPrecision = Precision.FP32) => new() { Y = y, InputPrecision = inputPrecision };

    /// <summary>The format h is rounded to before the epilogue's GELU or scale-shift reads it (FP32: not rounded).</summary>
    public Precision InputPrecision { get; private init; }

    /// <summary>This epilogue, which also writes h to <paramref name="h"/> in 16 bits (<paramref name="precision"/>, bf16
    /// or fp16; rows ldy apart, as y's) before it writes y: a Linear's output kept for the backward of the op after it
    /// (GELU's slope, SSF's dscale) as autocast keeps it.</summary>
    public GemmEpilogue KeepingPacked(ushort* h, Precision precision) => this with { Packed = h, PackedPrecision = precision };

    /// <summary>Where the epilogue also writes h in 16 bits (null: it does not).</summary>
    public ushort* Packed { get; private init; }

    /// <summary>This epilogue, which also writes y to <paramref name="y"/> in 16 bits (<paramref name="precision"/>, bf16
    /// or fp16; rows ldy apart) once its float32 row is written: an output that only products read, which round it so.</summary>
    public GemmEpilogue WritingPacked(ushort* y, Precision precision) => this with { PackedY = y, PackedPrecision = precision };

    /// <summary>Where the epilogue also writes y in 16 bits (null: it does not).</summary>
    public ushort* PackedY { get; private init; }

    /// <summary>This epilogue (none, or a scale-shift), which then adds <paramref name="residual"/> (C's shape and row
    /// stride) to what it writes: C = residual + C after any bias, or y = residual + y after the scale-shift (a Linear
    /// layer whose output joins a residual stream). Not with <see cref="WritingPacked"/>: the sum is float32.</summary>
    public GemmEpilogue AddingResidual(float* residual) => this with { Residual = residual };

    /// <summary>What the epilogue adds last (null: nothing).</summary>
    public float* Residual { get; private init; }

    /// <summary>The 16-bit format of <see cref="Packed"/> and <see cref="PackedY"/>.</summary>
    public Precision PackedPrecision { get; private init; }

    /// <summary>Whether GELU follows the scale-shift.</summary>
    public bool GeluAfter { get; private init; }

    /// <summary>y[r, j] = h[r, j]·scale[j] + shift[j], the multiply and the add rounded apart (as a separate scale-shift
    /// pass computes it); with <paramref name="inputPrecision"/> bf16 or fp16, of h rounded to it (as autocast's
    /// x·scale + shift reads a Linear's 16-bit output).</summary>
    public static GemmEpilogue ScaleShift(float* y, float* scale, float* shift, Precision inputPrecision = Precision.FP32) =>
        new() { Y = y, Scale = scale, Shift = shift, InputPrecision = inputPrecision };

    /// <summary>y[r, j] = GELU(h[r, j]·scale[j] + shift[j]), bit for bit a scale-shift pass and then a GELU pass; h
    /// rounded first as in <see cref="ScaleShift"/>.</summary>
    public static GemmEpilogue ScaleShiftGelu(float* y, float* scale, float* shift, Precision inputPrecision = Precision.FP32) =>
        new() { Y = y, Scale = scale, Shift = shift, InputPrecision = inputPrecision, GeluAfter = true };
}
