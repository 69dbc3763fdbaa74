using System.Runtime.CompilerServices;
using System.Numerics;

namespace Engine.Kernels.Cpu;

/// <summary>
/// The CPU backend: SIMD (<see cref="Vector{T}"/>, explicit 512/256/scalar dispatch in the GEMM) on a persistent
/// thread pool. Split by op family, one file each, named as its Ops and cuda/ namesakes (CpuKernels.Norm.cs, Ops/Norm.cs,
/// cuda/norm.cu); this file holds GEMM (the Linear family; cuBLAS on CUDA) and helpers the families share.
/// Deterministic: every parallel split depends on the problem size only.
/// </summary>
public sealed unsafe partial class CpuKernels : IKernels
{
    /// <summary>Elements per task for memory-bound elementwise kernels.</summary>
    const long ElementGrain = 1 << 15;

    /// <summary>Optional GEMM provider (OpenBLAS when asked for); null uses <see cref="CpuGemm"/>.</summary>
    public OpenBlas? Blas { get; init; }

    /// <inheritdoc/>
    public string Name => Blas == null ? "cpu" : "cpu-openblas";

    /// <inheritdoc/>
    /// <remarks>Below fp32 our GEMM runs even when <see cref="Blas"/> is set (it rounds the operands as it packs them).</remarks>
    public Precision GemmPrecision { get; set; }

    OpenBlas? Fp32Blas => GemmPrecision == Precision.FP32 ? Blas : null;

    /// <inheritdoc/>
    /// <remarks>False: a packed operand is widened into scratch before our GEMM reads it.</remarks>
    public bool ReadsPackedGemmOperands => false;

    /// <inheritdoc/>
    /// <remarks>Our GEMM widens a packed A that is not transposed strip by strip as it copies it; another packed operand
    /// is widened into scratch first (exact), then our GEMM rounds it again, which leaves its values as they are.</remarks>
    public void Gemm(bool transA, bool transB, int M, int N, int K, float alpha, GemmOperand A, int lda, GemmOperand B, int ldb,
        float beta, float* C, int ldc)
    {
        A.CheckFor(GemmPrecision, "Gemm");
        B.CheckFor(GemmPrecision, "Gemm");
        if (A.IsPacked && !transA)
        {
            using var wide = Widened(B, GemmOperand.Span(transB ? N : K, transB ? K : N, ldb, 0, 1), out float* bValues);
            CpuGemm.Gemm(false, transB, M, N, K, alpha, null, lda, bValues, ldb, beta, C, ldc, null, GemmPrecision, packedA: A.Halves);
            return;
        }
        using var wideA = Widened(A, GemmOperand.Span(transA ? K : M, transA ? M : K, lda, 0, 1), out float* a);
        using var wideB = Widened(B, GemmOperand.Span(transB ? N : K, transB ? K : N, ldb, 0, 1), out float* b);
        if (Fp32Blas is { } blas) blas.Sgemm(transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, C, ldc);
        else CpuGemm.Gemm(transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, C, ldc, null, GemmPrecision);
    }

    /// <summary>The float32 values of <paramref name="x"/>'s first <paramref name="span"/> elements in
    /// <paramref name="values"/>: x itself, or (packed) a widened copy in the returned buffer, which the caller disposes.</summary>
    NativeBuffer? Widened(GemmOperand x, long span, out float* values)
    {
        if (!x.IsPacked)
        {
            values = x.Floats;
            return null;
        }
        var wide = new NativeBuffer(span * sizeof(float));
        values = (float*)wide.Pointer;
        UnpackLowPrecision(values, x.Halves, span, GemmPrecision);
        return wide;
    }

    /// <inheritdoc/>
    /// <remarks>Packed operands as in <see cref="Gemm"/>.</remarks>
    public void GemmStridedBatched(bool transA, bool transB, int M, int N, int K, float alpha, GemmOperand A, int lda, long strideA,
        GemmOperand B, int ldb, long strideB, float beta, float* C, int ldc, long strideC, int batch)
    {
        A.CheckFor(GemmPrecision, "GemmStridedBatched");
        B.CheckFor(GemmPrecision, "GemmStridedBatched");
        using var wideA = Widened(A, GemmOperand.Span(transA ? K : M, transA ? M : K, lda, strideA, batch), out float* a);
        using var wideB = Widened(B, GemmOperand.Span(transB ? N : K, transB ? K : N, ldb, strideB, batch), out float* b);
        if (Fp32Blas is { } blas)
        {
            for (int i = 0; i < batch; i++)
                blas.Sgemm(transA, transB, M, N, K, alpha, a + i * strideA, lda, b + i * strideB, ldb, beta, C + i * strideC, ldc);
        }
        else CpuGemm.GemmStridedBatched(transA, transB, M, N, K, alpha, a, lda, strideA, b, ldb, strideB, beta, C, ldc, strideC, batch, GemmPrecision);
    }

    /// <summary>A frozen weight: how many floats, how often frozen, and its panels once a product packed them.</summary>
    sealed class FrozenWeight(long count)
    {
        public readonly long Count = count;
        public int Freezes = 1;
        public CpuGemm.PackedB? Packed;
    }

    readonly Dictionary<nint, FrozenWeight> _frozen = [];

    /// <inheritdoc/>
    /// <remarks>Our GEMM packs the weight at its first product after this and reads the panels from then on; with
    /// <see cref="Blas"/> (fp32) nothing is packed.</remarks>
    public bool FreezeWeight(float* w, long count)
    {
        lock (_frozen)
        {
            if (_frozen.TryGetValue((nint)w, out var f))
            {
                if (f.Count != count) throw new ArgumentException($"the weight at 0x{(nint)w:x} is frozen as {f.Count} floats, not {count}", nameof(count));
                f.Freezes++;
            }
            else _frozen[(nint)w] = new FrozenWeight(count);
        }
        return Fp32Blas == null;
    }

    /// <inheritdoc/>
    public bool ThawWeight(float* w)
    {
        lock (_frozen)
        {
            if (!_frozen.TryGetValue((nint)w, out var f)) return false;
            if (--f.Freezes == 0)
            {
                _frozen.Remove((nint)w);
                f.Packed?.Dispose();
            }
            return true;
        }
    }

    /// <summary>Bytes held by packed copies of frozen weights (<see cref="FreezeWeight"/>).</summary>
    public long PackedWeightBytes
    {
        get
        {
            lock (_frozen) return _frozen.Values.Sum(f => f.Packed?.Bytes ?? 0);
        }
    }

    /// <summary>The panels of a frozen weight w [N, K] for this product, packed now if it has none yet (or none for the
    /// micro-kernel and precision in use); null when w is not frozen as N·K floats.</summary>
    CpuGemm.PackedB? PackedWeight(float* w, int N, int K)
    {
        lock (_frozen)
        {
            if (_frozen.Count == 0 || !_frozen.TryGetValue((nint)w, out var f) || f.Count != (long)N * K) return null;
            if (f.Packed is { } packed && packed.Fits(true, K, N, GemmPrecision)) return packed;
            f.Packed?.Dispose();
            return f.Packed = CpuGemm.PackedB.Pack(true, w, K, K, N, GemmPrecision);
        }
    }

    /// <inheritdoc/>
    /// <remarks>Our GEMM reads x's 16-bit copy when there is one, widening each strip as it copies it (the values
    /// rounding x gives, from half the bytes); OpenBLAS (fp32 only) reads float32. A 16-bit y is packed from the float32
    /// one after the product (the CPU keeps qkv in float32, so no model asks for it here).</remarks>
    public void LinearForward(float* y, ushort* yPacked, float* x, ushort* xPacked, float* w, float* bias, float* residual, int rows, int N, int K)
    {
        if (yPacked != null)
        {
            if (residual != null) throw new ArgumentException("LinearForward: a residual sum is float32, not written in 16 bits", nameof(yPacked));
            LinearForward(y, null, x, xPacked, w, bias, null, rows, N, K);
            PackLowPrecision(yPacked, y, (long)rows * N, GemmPrecision.SixteenBitsFor("LinearForward"));
            return;
        }
        var epilogue = residual == null ? default : default(GemmEpilogue).AddingResidual(residual);
        if (Fp32Blas is not { } blas)
        {
            CpuGemm.Gemm(false, true, rows, N, K, 1f, xPacked != null ? null : x, K, w, K, 0f, y, N, bias, GemmPrecision, epilogue, PackedWeight(w, N, K), xPacked);
            return;
        }
        using var wide = WideInput(ref x, xPacked, (long)rows * K);
        blas.Sgemm(false, true, rows, N, K, 1f, x, K, w, K, 0f, y, N);
        if (residual != null)
        {
            var body = new EpilogueRowBody { Epilogue = epilogue, H = y, Bias = bias, Cols = N };
            CpuParallel.For(rows, ref body);
        }
        else if (bias != null) AddBias(y, y, bias, rows, N);
    }

    /// <inheritdoc/>
    /// <remarks>Our GEMM adds the bias and applies GELU to each tile as it completes, while it is in L1; with OpenBLAS,
    /// one pass after the product. x as in <see cref="LinearForward"/>.</remarks>
    public void LinearGeluForward(float* y, ushort* yPacked, float* h, ushort* hPacked, float* x, ushort* xPacked, float* w, float* bias, int rows, int N, int K)
    {
        float* product = h != null ? h : y;
        var epilogue = Packing(GemmEpilogue.Gelu(y, GemmPrecision is Precision.BF16 or Precision.FP16 ? GemmPrecision : Precision.FP32),
            yPacked, hPacked, "LinearGeluForward");
        if (Fp32Blas is not { } blas)
        {
            CpuGemm.Gemm(false, true, rows, N, K, 1f, xPacked != null ? null : x, K, w, K, 0f, product, N, bias, GemmPrecision, epilogue, PackedWeight(w, N, K), xPacked);
            return;
        }
        using var wide = WideInput(ref x, xPacked, (long)rows * K);
        blas.Sgemm(false, true, rows, N, K, 1f, x, K, w, K, 0f, product, N);
        var body = new EpilogueRowBody { Epilogue = epilogue, H = product, Bias = bias, Cols = N };
        CpuParallel.For(rows, ref body);
    }

    /// <inheritdoc/>
    /// <remarks>Our GEMM applies the scale-shift to each tile as it completes, while it is in L1; with OpenBLAS, one pass
    /// after the product. x as in <see cref="LinearForward"/>.</remarks>
    public void LinearScaleShiftForward(float* y, ushort* yPacked, float* u, ushort* uPacked, float* x, ushort* xPacked, float* w, float* scale, float* shift, float* residual, int rows, int N, int K) =>
        LinearScaleShift(y, yPacked, u, uPacked, x, xPacked, w, scale, shift, residual, rows, N, K, gelu: false);

    /// <inheritdoc/>
    /// <remarks>As <see cref="LinearScaleShiftForward"/>, with GELU after the scale-shift in the same epilogue (or pass).</remarks>
    public void LinearScaleShiftGeluForward(float* y, ushort* yPacked, float* u, ushort* uPacked, float* x, ushort* xPacked, float* w, float* scale, float* shift, int rows, int N, int K) =>
        LinearScaleShift(y, yPacked, u, uPacked, x, xPacked, w, scale, shift, null, rows, N, K, gelu: true);

    void LinearScaleShift(float* y, ushort* yPacked, float* u, ushort* uPacked, float* x, ushort* xPacked, float* w, float* scale, float* shift, float* residual, int rows, int N, int K, bool gelu)
    {
        float* product = u != null ? u : y;
        string kernel = gelu ? "LinearScaleShiftGeluForward" : "LinearScaleShiftForward";
        if (residual != null && yPacked != null) throw new ArgumentException($"{kernel}: a residual sum is float32, not written in 16 bits", nameof(yPacked));
        var input = GemmPrecision is Precision.BF16 or Precision.FP16 ? GemmPrecision : Precision.FP32; // u as the 16-bit product holds it
        var epilogue = Packing(gelu ? GemmEpilogue.ScaleShiftGelu(y, scale, shift, input) : GemmEpilogue.ScaleShift(y, scale, shift, input), yPacked, uPacked, kernel);
        if (residual != null) epilogue = epilogue.AddingResidual(residual);
        if (Fp32Blas is not { } blas)
        {
            CpuGemm.Gemm(false, true, rows, N, K, 1f, xPacked != null ? null : x, K, w, K, 0f, product, N, null, GemmPrecision, epilogue, PackedWeight(w, N, K), xPacked);
            return;
        }
        using var wide = WideInput(ref x, xPacked, (long)rows * K);
        blas.Sgemm(false, true, rows, N, K, 1f, x, K, w, K, 0f, product, N);
        var body = new EpilogueRowBody { Epilogue = epilogue, H = product, Cols = N };
        CpuParallel.For(rows, ref body);
    }

    /// <summary>A fused Linear's epilogue, also writing its kept output (h or u) and y in 16 bits where asked.</summary>
    GemmEpilogue Packing(GemmEpilogue epilogue, ushort* yPacked, ushort* keptPacked, string kernel)
    {
        if (keptPacked != null) epilogue = epilogue.KeepingPacked(keptPacked, GemmPrecision.SixteenBitsFor(kernel));
        if (yPacked != null) epilogue = epilogue.WritingPacked(yPacked, GemmPrecision.SixteenBitsFor(kernel));
        return epilogue;
    }

    /// <summary>For OpenBLAS, which reads float32 only: x, or (null, the input given in 16 bits) a widened copy of its
    /// <paramref name="n"/> values, returned for the caller to dispose.</summary>
    NativeBuffer? WideInput(ref float* x, ushort* xPacked, long n) => x != null ? null : Widened(GemmOperand.Packed(xPacked), n, out x);

    // One row of a fused Linear's epilogue after an OpenBLAS product: h += bias, then y (GELU, scale-shift) from h.
    struct EpilogueRowBody : IParallelBody
    {
        public GemmEpilogue Epilogue;
        public float* H, Bias;
        public int Cols;

        public void Run(int row)
        {
            CpuGemm.EpilogueBlock(Epilogue, (long)row * Cols, Cols, H + (long)row * Cols, Cols, Bias, 1, Cols);
        }
    }

    /// <summary>Rows per partial sum: at most 64 partials, at least 16 rows each; a function of rows only.</summary>
    static int ReductionGrain(long rows) => (int)Math.Max(16, (rows + 63) / 64);

    /// <summary>Scratch for <paramref name="chunks"/> partial rows of <paramref name="width"/> floats.</summary>
    static float* Partials(int chunks, long width) => (float*)ThreadScratch.Get(2, chunks * width * sizeof(float));

    /// <summary>dst[j] += Σ_c partials[c, j], summed in chunk order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SumPartials(float* dst, float* partials, int chunks, long width)
    {
        for (long j = 0; j < width; j++)
        {
            float s = 0f;
            for (int c = 0; c < chunks; c++) s += partials[c * width + j];
            dst[j] += s;
        }
    }

    /// <summary>dst[0..n) = src (or += when accumulating), in vectors: the rows moved are short (a head's 32 or 64
    /// values, a patch's 16 pixels), where a memcpy call costs more than the copy.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void MoveRow(float* dst, float* src, int n, bool accumulate)
    {
        int i = 0;
        for (; i + Vector<float>.Count <= n; i += Vector<float>.Count)
            Vec.Store(dst + i, accumulate ? Vec.Load(dst + i) + Vec.Load(src + i) : Vec.Load(src + i));
        for (; i < n; i++) dst[i] = accumulate ? dst[i] + src[i] : src[i];
    }

    /// <summary>x[i] *= s for i &lt; n, vectorised.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ScaleRow(float* x, float s, int n)
    {
        int i = 0;
        var vs = new Vector<float>(s);
        for (; i + Vector<float>.Count <= n; i += Vector<float>.Count) Vec.Store(x + i, Vec.Load(x + i) * vs);
        for (; i < n; i++) x[i] *= s;
    }
}

/// <summary>Short names for <see cref="Vector{T}"/> loads and stores through pointers.</summary>
internal static unsafe class Vec
{
    public static Vector<float> Load(float* p) => Vector.Load(p);
    public static void Store(float* p, Vector<float> v) => v.Store(p);
}
