using System.Runtime.InteropServices;
using static Engine.Kernels.Cuda.CudaKernelHandles;

namespace Engine.Kernels.Cuda;

/// <summary>
/// The CUDA backend's kernels: every <see cref="IKernels"/> method is a launch of a kernel from cuda/*.cu (a
/// <see cref="CudaKernelHandles"/> handle naming its family file), GEMMs go to the runtime (cuBLAS, or the CPU GEMM on the emulated device). Pointers are device
/// addresses. Launch shapes: elementwise kernels are 1-D grid-stride loops of 256-thread blocks, sized to the
/// device (8 blocks per multiprocessor at most); row kernels give one warp per row; column reductions use
/// (32, 8) blocks over 32 columns each. Launches are queued on the runtime's stream; only the reductions that
/// return a value to the host wait for it.
/// </summary>
public sealed unsafe class CudaKernels : IKernels, IDisposable
{
    const int Threads = 256, BlocksPerMultiprocessor = 8, MaxPartials = 2048;
    const int SparseEntriesPerBlock = 1024; // peft.cu's SPARSE_ENTRIES
    const long ColumnPartialsCapacity = 1 << 20; // floats
    static readonly Dim3 ColumnBlock = new(32, 8);

    readonly CudaRuntime _runtime;
    readonly int _maxBlocks;
    ulong _scratch; // [MaxPartials + 1] doubles: reduction partials, then the result
    ulong _columnPartials; // [ColumnPartialsCapacity] floats (ColumnPartials)

    /// <summary>Kernels running on <paramref name="runtime"/> (not owned).</summary>
    public CudaKernels(CudaRuntime runtime)
    {
        _runtime = runtime;
        _maxBlocks = Math.Clamp(runtime.MultiprocessorCount * BlocksPerMultiprocessor, 1, MaxPartials);
    }

    /// <inheritdoc/>
    public string Name => _runtime.Name;

    // ---------------------------------------------------------------- launch shapes

    /// <summary>A reduction's grid: its partials, one per block, at most <c>_maxBlocks</c> (8 per multiprocessor).</summary>
    int Blocks(long threads) => (int)Math.Clamp((threads + Threads - 1) / Threads, 1, _maxBlocks);

    /// <summary>A grid-stride kernel over <paramref name="n"/> items (nothing to do when n = 0), in one wave of the blocks
    /// the multiprocessors hold (<see cref="CudaRuntime.GridStrideBlocks"/>).</summary>
    void GridStride(CudaKernel kernel, long n, params ReadOnlySpan<KernelArg> args)
    {
        if (n > 0) _runtime.Launch(kernel, _runtime.GridStrideBlocks(kernel, n, Threads), Threads, args);
    }

    /// <summary>A warp-per-row kernel over <paramref name="rows"/> rows, sized as <see cref="GridStride"/>.</summary>
    void WarpPerRow(CudaKernel kernel, long rows, params ReadOnlySpan<KernelArg> args)
    {
        if (rows > 0) _runtime.Launch(kernel, _runtime.GridStrideBlocks(kernel, rows * 32, Threads), Threads, args);
    }

    /// <summary>
    /// How many row slices a column reduction of <paramref name="rows"/> rows into <paramref name="count"/> outputs
    /// (of <paramref name="outputs"/> kinds, e.g. dweight and dbias) over a (ceil(cols/32), gridY) grid is cut into: enough
    /// blocks to fill the device (768 columns make 24 blocks, a fifth of an H200's multiprocessors), at least 16 rows a
    /// slice, and the partials within <see cref="ColumnPartialsCapacity"/>. 1 means no slices (no partials).
    /// </summary>
    int ColumnSlices(int rows, int cols, int gridY, long count, int outputs)
    {
        long blocks = (long)(cols + 31) / 32 * gridY;
        if (blocks == 0 || count == 0) return 1;
        long slices = Math.Min((_maxBlocks + blocks - 1) / blocks, (rows + 15) / 16);
        return (int)Math.Clamp(Math.Min(slices, ColumnPartialsCapacity / (count * outputs)), 1, _runtime.MaxGridYZ);
    }

    /// <summary>Scratch for the partial sums of sliced column reductions: allocated once at its full size, so a captured
    /// graph's launches keep pointing at it; the stream orders one reduction's use after the previous one's.</summary>
    float* ColumnPartials() => (float*)(_columnPartials != 0 ? _columnPartials : _columnPartials = _runtime.Allocate(ColumnPartialsCapacity * sizeof(float)));

    /// <summary>The second stage of one or two sliced column reductions in one launch: output[i] (+)= scale · Σ slices'
    /// partials, and output2 likewise from partials2 (nothing for a null output or an unsliced reduction).</summary>
    void FinishColumnSlices(int slices, float scale, bool accumulate, float* output, float* partials, long count, float* output2 = null,
        float* partials2 = null, long count2 = 0)
    {
        if (slices > 1) SumColumnPartials(slices, scale, accumulate, output, partials, count, output2, partials2, count2);
    }

    /// <summary><c>column_partials_sum</c> into one or two outputs (either may be null), whatever the slices: for kernels
    /// that always write partials.</summary>
    void SumColumnPartials(int slices, float scale, bool accumulate, float* output, float* partials, long count, float* output2, float* partials2,
        long count2)
    {
        if (output == null)
        {
            // The second alone: it takes the first's place.
            output = output2;
            partials = partials2;
            count = count2;
            output2 = null;
        }
        if (output == null) return;
        GridStride(Elementwise.ColumnPartialsSum, count + (output2 != null ? count2 : 0), output, partials, count, output2, partials2, count2, slices,
            scale, accumulate);
    }

    /// <summary>A column reduction over <paramref name="cols"/> columns (× <paramref name="gridY"/> independent sets), its
    /// rows cut into <paramref name="slices"/> (grid z; <see cref="ColumnSlices"/>).</summary>
    void ColumnBlocks(CudaKernel kernel, int cols, int gridY, int slices, params ReadOnlySpan<KernelArg> args)
    {
        if (cols > 0 && gridY > 0) _runtime.Launch(kernel, new Dim3((uint)((cols + 31) / 32), (uint)gridY, (uint)slices), ColumnBlock, args);
    }

    // ---------------------------------------------------------------- GEMM

    /// <inheritdoc/>
    /// <remarks>A float32 operand within a shared weight copy is read from the copy (<see cref="ShareWeightCopies"/>).</remarks>
    public void Gemm(bool transA, bool transB, int M, int N, int K, float alpha, GemmOperand A, int lda, GemmOperand B, int ldb,
        float beta, float* C, int ldc) => GemmStridedBatched(transA, transB, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);

    /// <inheritdoc/>
    /// <remarks>A float32 operand within a shared weight copy is read from the copy (<see cref="ShareWeightCopies"/>).</remarks>
    public void GemmStridedBatched(bool transA, bool transB, int M, int N, int K, float alpha, GemmOperand A, int lda, long strideA,
        GemmOperand B, int ldb, long strideB, float beta, float* C, int ldc, long strideC, int batch) =>
        _runtime.GemmStridedBatched(transA, transB, M, N, K, alpha, Shared(A, GemmOperand.Span(transA ? K : M, transA ? M : K, lda, strideA, batch)),
            lda, strideA, Shared(B, GemmOperand.Span(transB ? N : K, transB ? K : N, ldb, strideB, batch)), ldb, strideB, beta, C, ldc, strideC,
            batch, GemmPrecision);

    /// <inheritdoc/>
    /// <remarks>On a GPU: TF32 through cuBLAS's TF32 compute mode; bf16 and fp16 operands converted to 16-bit storage
    /// (precision.cu), then cuBLAS GemmEx with fp32 accumulation (tensor cores).</remarks>
    public Precision GemmPrecision { get; set; }

    /// <inheritdoc/>
    /// <remarks>True: cuBLAS reads them (the emulated device widens them with the device's own kernel).</remarks>
    public bool ReadsPackedGemmOperands => true;

    /// <inheritdoc/>
    public void RoundToPrecision(float* y, float* x, long n, Precision precision) =>
        GridStride(CudaKernelHandles.Precision.RoundToPrecision, n, y, x, n, (int)precision);

    /// <inheritdoc/>
    public void PackLowPrecision(ushort* y, float* x, long n, Precision precision) => GridStride(precision switch
    {
        Precision.BF16 => CudaKernelHandles.Precision.ConvertToBf16,
        Precision.FP16 => CudaKernelHandles.Precision.ConvertToFp16,
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "16-bit storage is bf16 or fp16"),
    }, n, y, x, n);

    /// <inheritdoc/>
    public void UnpackLowPrecision(float* y, ushort* x, long n, Precision precision) => GridStride(precision switch
    {
        Precision.BF16 => CudaKernelHandles.Precision.ConvertFromBf16,
        Precision.FP16 => CudaKernelHandles.Precision.ConvertFromFp16,
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "16-bit storage is bf16 or fp16"),
    }, n, y, x, n);

    /// <inheritdoc/>
    /// <remarks>precision.cu's convert_to_16_many, <see cref="TensorsPerLaunch"/> tensors to a launch, each cut into
    /// chunks of <see cref="PackChunk"/> values that the blocks take in turn.</remarks>
    public void PackLowPrecisionMany(ReadOnlySpan<PackTarget> targets, Precision precision)
    {
        int format = (int)precision.SixteenBitsFor("PackLowPrecisionMany");
        PackTargets launch = default;
        for (int first = 0; first < targets.Length; first += TensorsPerLaunch)
        {
            int count = Math.Min(TensorsPerLaunch, targets.Length - first);
            long chunks = 0;
            for (int j = 0; j < count; j++)
            {
                var t = targets[first + j];
                (launch.X[j], launch.Y[j], launch.N[j], launch.FirstChunk[j]) = ((ulong)t.X, (ulong)t.Y, t.Count, chunks);
                chunks += (t.Count + PackChunk - 1) / PackChunk;
            }
            launch.FirstChunk[count] = chunks;
            var kernel = CudaKernelHandles.Precision.ConvertTo16Many;
            if (chunks > 0)
                _runtime.Launch(kernel, _runtime.GridStrideBlocks(kernel, chunks * Threads, Threads), Threads, new KernelArg(&launch, sizeof(PackTargets)),
                    count, format);
        }
    }

    /// <summary>precision.cu's PACK_CHUNK: the values a block of convert_to_16_many converts at a time.</summary>
    const long PackChunk = 4096;

    /// <summary>The C layout of precision.cu's PackTargets.</summary>
    struct PackTargets
    {
        public fixed ulong X[TensorsPerLaunch];
        public fixed ulong Y[TensorsPerLaunch];
        public fixed long N[TensorsPerLaunch];
        public fixed long FirstChunk[TensorsPerLaunch + 1];
    }

    /// <inheritdoc/>
    public bool ShareWeightCopies(ReadOnlySpan<PackTarget> copies, Precision precision)
    {
        if (copies.Length > 0) precision.SixteenBitsFor("ShareWeightCopies");
        var sorted = copies.ToArray();
        Array.Sort(sorted, (a, b) => ((nint)a.X).CompareTo((nint)b.X));
        for (int i = 1; i < sorted.Length; i++)
            if ((nint)sorted[i].X < (nint)(sorted[i - 1].X + sorted[i - 1].Count))
                throw new ArgumentException("ShareWeightCopies: two shared weights overlap", nameof(copies));
        (_weightCopies, _weightCopiesPrecision) = (sorted, precision);
        return true;
    }

    /// <summary>The shared weight copies (<see cref="ShareWeightCopies"/>), in the order of their float32 addresses.</summary>
    PackTarget[] _weightCopies = [];
    Precision _weightCopiesPrecision;

    /// <summary>A product's operand of <paramref name="span"/> values: under the shared copies' bf16 or fp16 GEMMs a
    /// float32 one that lies within a shared weight is the same values of its 16-bit copy (<see cref="ShareWeightCopies"/>);
    /// else itself.</summary>
    GemmOperand Shared(GemmOperand operand, long span)
    {
        if (operand.IsPacked || _weightCopies.Length == 0 || GemmPrecision != _weightCopiesPrecision) return operand;
        float* x = (float*)operand.Data;
        int lo = 0, hi = _weightCopies.Length - 1; // the last copy that starts at or before x
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (_weightCopies[mid].X <= x) lo = mid;
            else hi = mid - 1;
        }
        var copy = _weightCopies[lo];
        long offset = x - copy.X;
        return offset >= 0 && offset + span <= copy.Count ? GemmOperand.Packed(copy.Y + offset) : operand;
    }

    /// <inheritdoc/>
    /// <remarks>cuBLAS reads weights as they are: nothing to keep.</remarks>
    public bool FreezeWeight(float* w, long count) => false;

    /// <inheritdoc/>
    public bool ThawWeight(float* w) => false;

    /// <inheritdoc/>
    /// <remarks>cuBLAS reads xPacked when given (no conversion of x). Without a residual, one cuBLASLt product adds the
    /// bias in its epilogue and writes y or yPacked (<see cref="CudaRuntime.TryLinearProduct"/>); else, or where it
    /// declines, a GEMM into y, then one kernel adds the bias and the residual (or writes yPacked).</remarks>
    public void LinearForward(float* y, ushort* yPacked, float* x, ushort* xPacked, float* w, float* bias, float* residual, int rows, int N, int K)
    {
        if (residual != null && yPacked != null) throw new ArgumentException("LinearForward: a residual sum is float32, not written in 16 bits", nameof(yPacked));
        int format = PackedFormat(yPacked, null, "LinearForward");
        if (residual == null && (bias != null || yPacked != null)
            && _runtime.TryLinearProduct(LinearInput(x, xPacked), Shared(w, (long)N * K), bias, yPacked == null ? y : null, yPacked, rows, N, K, GemmPrecision))
            return;
        Gemm(false, true, rows, N, K, 1f, LinearInput(x, xPacked), K, w, K, 0f, y, N);
        if (bias != null) GridStride(Elementwise.AddBias, (long)rows * N, y, yPacked, format, y, bias, residual, rows, N);
        else if (residual != null) Add(y, residual, y, (long)rows * N);
        else if (yPacked != null) PackLowPrecision(yPacked, y, (long)rows * N, GemmPrecision);
    }

    /// <inheritdoc/>
    /// <remarks>Where h is kept only in 16 bits (training under bf16/fp16), one cuBLASLt product writes hPacked with the
    /// bias added in its epilogue (<see cref="CudaRuntime.TryLinearProduct"/>), then GELU reads it (the same values:
    /// GELU reads h rounded either way). Else, or where it declines, cuBLAS writes x·Wᵀ into h (or y), then one kernel
    /// adds the bias and applies GELU.</remarks>
    public void LinearGeluForward(float* y, ushort* yPacked, float* h, ushort* hPacked, float* x, ushort* xPacked, float* w, float* bias, int rows, int N, int K)
    {
        float* product = h != null ? h : y;
        PackedFormat(yPacked, hPacked, "LinearGeluForward");
        if (h == null && hPacked != null && _runtime.TryLinearProduct(LinearInput(x, xPacked), Shared(w, (long)N * K), bias, null, hPacked, rows, N, K, GemmPrecision))
        {
            GeluForward(yPacked == null ? y : null, yPacked, GemmOperand.Packed(hPacked), (long)rows * N);
            return;
        }
        int format = GemmPrecision is Precision.BF16 or Precision.FP16 ? (int)GemmPrecision : (int)Precision.FP32; // GELU reads h rounded to it
        Gemm(false, true, rows, N, K, 1f, LinearInput(x, xPacked), K, w, K, 0f, product, N);
        GridStride(Activations.BiasGeluForward, (long)rows * N, y, yPacked, h, hPacked, format, product, bias, rows, N);
    }

    /// <inheritdoc/>
    /// <remarks>Where u is kept only in 16 bits (training under bf16/fp16), cuBLASLt writes it so
    /// (<see cref="CudaRuntime.TryLinearProduct"/>) and the scale-shift kernel reads it to write y (adding the residual);
    /// else, or where it declines, cuBLAS writes x·Wᵀ into u (or y) in float32 and the kernel rounds it as it reads it.</remarks>
    public void LinearScaleShiftForward(float* y, ushort* yPacked, float* u, ushort* uPacked, float* x, ushort* xPacked, float* w, float* scale, float* shift, float* residual, int rows, int N, int K) =>
        LinearScaleShift(y, yPacked, u, uPacked, x, xPacked, w, scale, shift, residual, rows, N, K, gelu: false);

    /// <inheritdoc/>
    /// <remarks>As <see cref="LinearScaleShiftForward"/>, the kernel writing GELU of the scale-shift into y.</remarks>
    public void LinearScaleShiftGeluForward(float* y, ushort* yPacked, float* u, ushort* uPacked, float* x, ushort* xPacked, float* w, float* scale, float* shift, int rows, int N, int K) =>
        LinearScaleShift(y, yPacked, u, uPacked, x, xPacked, w, scale, shift, null, rows, N, K, gelu: true);

    void LinearScaleShift(float* y, ushort* yPacked, float* u, ushort* uPacked, float* x, ushort* xPacked, float* w, float* scale, float* shift, float* residual, int rows, int N, int K, bool gelu)
    {
        string kernel = gelu ? "LinearScaleShiftGeluForward" : "LinearScaleShiftForward";
        if (residual != null && yPacked != null) throw new ArgumentException($"{kernel}: a residual sum is float32, not written in 16 bits", nameof(yPacked));
        int format = PackedFormat(yPacked, uPacked, kernel);
        if (u == null && uPacked != null && _runtime.TryLinearProduct(LinearInput(x, xPacked), Shared(w, (long)N * K), null, null, uPacked, rows, N, K, GemmPrecision))
        {
            GridStride(Norm.ScaleShiftForward, (long)rows * N, y, yPacked, (ushort*)null, format, uPacked, format, 0, scale, shift, residual, rows, N, gelu);
            return;
        }
        float* product = u != null ? u : y;
        Gemm(false, true, rows, N, K, 1f, LinearInput(x, xPacked), K, w, K, 0f, product, N);
        bool rounds = GemmPrecision is Precision.BF16 or Precision.FP16; // the scale-shift reads u as the 16-bit product would hold it
        GridStride(Norm.ScaleShiftForward, (long)rows * N, y, yPacked, uPacked, rounds ? (int)GemmPrecision : format, product, (int)Precision.FP32,
            rounds, scale, shift, residual, rows, N, gelu);
    }

    /// <summary>The kernels' format argument for outputs written in 16 bits (0 when there are none): the GEMMs' 16-bit
    /// precision, else an error naming <paramref name="kernel"/>.</summary>
    int PackedFormat(ushort* a, ushort* b, string kernel) =>
        a == null && b == null ? (int)Precision.FP32 : (int)GemmPrecision.SixteenBitsFor(kernel);

    /// <summary>The kernels' format argument for an operand they read: 0 for float32, else the GEMMs' 16-bit precision.</summary>
    int Format(GemmOperand operand) => operand.IsPacked ? (int)GemmPrecision : (int)Precision.FP32;

    /// <summary>A Linear's input as cuBLAS reads it: the packed copy when there is one (it is what converting x gives).</summary>
    static GemmOperand LinearInput(float* x, ushort* xPacked) => xPacked != null ? GemmOperand.Packed(xPacked) : x;

    // ---------------------------------------------------------------- elementwise and bias (elementwise.cu)

    /// <inheritdoc/>
    public void Fill(float* x, long n, float value) => GridStride(Elementwise.Fill, n, x, n, value);

    /// <inheritdoc/>
    /// <remarks>Tensors of up to <see cref="SharedLaunchMaxCount"/> floats go <see cref="TensorsPerLaunch"/> to a launch
    /// (elementwise.cu's fill_many), larger ones one each.</remarks>
    public void FillMany(ReadOnlySpan<TensorSpan> targets, float value)
    {
        FillTargets launch = default;
        int count = 0;
        long largest = 0;
        for (int i = 0; i < targets.Length; i++)
        {
            var target = targets[i];
            if (target.Count > SharedLaunchMaxCount) Fill(target.Data, target.Count, value);
            else
            {
                launch.X[count] = (ulong)target.Data;
                launch.N[count] = target.Count;
                largest = Math.Max(largest, target.Count);
                count++;
            }
            if (count == TensorsPerLaunch || (i == targets.Length - 1 && count > 0))
            {
                if (largest > 0) _runtime.Launch(Elementwise.FillMany, SharedLaunchGrid(largest, count), Threads, new KernelArg(&launch, sizeof(FillTargets)), value);
                (count, largest) = (0, 0);
            }
        }
    }

    /// <summary>cuda/common.cuh's TENSORS_PER_LAUNCH: the tensors one multi-tensor launch takes.</summary>
    const int TensorsPerLaunch = 32;

    /// <summary>The largest tensor a multi-tensor launch takes (64 Ki floats: at most 64 blocks of a row); a larger one
    /// fills the device by itself.</summary>
    const long SharedLaunchMaxCount = 1 << 16;

    /// <summary>The grid of a multi-tensor launch: a block row per tensor, enough blocks for four values a thread.</summary>
    static Dim3 SharedLaunchGrid(long largest, int tensors) => new((uint)Math.Clamp((largest + 4L * Threads - 1) / (4L * Threads), 1, 64), (uint)tensors);

    /// <summary>The C layout of elementwise.cu's FillTargets.</summary>
    struct FillTargets
    {
        public fixed ulong X[TensorsPerLaunch];
        public fixed long N[TensorsPerLaunch];
    }

    /// <inheritdoc/>
    public void Copy(float* dst, float* src, long n, bool accumulate) => GridStride(Elementwise.Copy, n, dst, src, n, accumulate);

    /// <summary>The C layout of elementwise.cu's StridedLayout (rank, shape[8], strides[8]).</summary>
    [StructLayout(LayoutKind.Sequential)]
    struct StridedLayout
    {
        public int Rank;
        public fixed int Shape[8];
        public fixed long Strides[8];
    }

    /// <inheritdoc/>
    public void CopyStrided(float* dst, float* src, int rank, int* shape, long* srcStrides)
    {
        if (rank is < 1 or > 8) throw new ArgumentOutOfRangeException(nameof(rank), rank, "CopyStrided supports rank 1..8");
        var layout = new StridedLayout { Rank = rank };
        long n = 1;
        for (int d = 0; d < rank; d++)
        {
            layout.Shape[d] = shape[d];
            layout.Strides[d] = srcStrides[d];
            n *= shape[d];
        }
        GridStride(Elementwise.CopyStrided, n, dst, src, n, new KernelArg(&layout, sizeof(StridedLayout)));
    }

    /// <inheritdoc/>
    public void Scale(float* x, long n, float s) => GridStride(Elementwise.Scale, n, x, n, s);

    /// <inheritdoc/>
    public void Add(float* y, float* a, float* b, long n) => GridStride(Elementwise.Add, n, y, a, b, n);

    /// <inheritdoc/>
    public void AddBias(float* y, float* x, float* bias, int rows, int cols) =>
        GridStride(Elementwise.AddBias, (long)rows * cols, y, (ushort*)null, 0, x, bias, (float*)null, rows, cols);

    /// <inheritdoc/>
    public void BiasGrad(float* dbias, float* dy, int rows, int cols) => ColumnSum(dbias, dy, rows, cols, cols, 0, 1, 1f, true);

    /// <summary>out[b, c] (+)= scale · Σ_r in[b·batchStride + r·rowStride + c] for b &lt; batches.</summary>
    void ColumnSum(float* output, float* input, int rows, int cols, long rowStride, long batchStride, int batches, float scale, bool accumulate)
    {
        long count = (long)batches * cols;
        int slices = ColumnSlices(rows, cols, batches, count, 1);
        float* partials = slices > 1 ? ColumnPartials() : null;
        ColumnBlocks(Elementwise.ColumnSumStrided, cols, batches, slices, output, partials, input, rows, cols, rowStride, batchStride, scale, accumulate);
        FinishColumnSlices(slices, scale, accumulate, output, partials, count);
    }

    // ---------------------------------------------------------------- normalisation and activations

    /// <summary>The widest rows the <c>_768</c> LayerNorm kernels (forward, one-pass backward) take: their lanes hold 24
    /// values of a row rather than 32, in fewer registers, so more blocks fit on a multiprocessor (norm.cu).</summary>
    const int LayerNormNarrowColumns = 768;

    /// <inheritdoc/>
    public void LayerNormForward(float* y, ushort* yPacked, float* mean, float* rstd, float* x, float* weight, float* bias, int rows, int C, float eps) =>
        WarpPerRow(C <= LayerNormNarrowColumns ? Norm.LayernormForward768 : Norm.LayernormForward, rows, y, yPacked,
            PackedFormat(yPacked, null, "LayerNormForward"), mean, rstd, x, weight, bias, rows, C, eps);

    /// <summary>The widest rows (C) <c>layernorm_backward</c> takes in one pass (its lanes keep 32 columns' sums in
    /// registers); wider ones read dy and x once for dx and again for the parameter sums.</summary>
    const int LayerNormOnePassMaxColumns = 1024;

    /// <inheritdoc/>
    /// <remarks>With parameter gradients and C ≤ 1024 one kernel reads dy and x once for dx and its blocks' parameter
    /// sums, and a second adds the blocks' sums in order.</remarks>
    public void LayerNormBackward(float* dx, ushort* dxCopy, float* dweight, float* dbias, float* dy, float* x, float* weight,
        float* mean, float* rstd, int rows, int C, bool accumulate)
    {
        bool paramGrads = dweight != null || dbias != null;
        int format = GemmPrecision.GradientCopyFormat(dx, dxCopy, "LayerNormBackward");
        if (paramGrads && C <= LayerNormOnePassMaxColumns && rows > 0)
        {
            // One pass: each block's rows give their parameter sums, added over the blocks in order.
            int blocks = (int)Math.Clamp(Math.Min((rows + 63L) / 64, Math.Min(_maxBlocks / 4, ColumnPartialsCapacity / (2L * C))), 1, 65535);
            float* sums = ColumnPartials();
            _runtime.Launch(C <= LayerNormNarrowColumns ? Norm.LayernormBackward768 : Norm.LayernormBackward, blocks, Threads, dx, dxCopy, format, sums, dy, x, weight,
                mean, rstd, rows, C, accumulate);
            SumColumnPartials(blocks, 1f, true, dweight, sums, C, dbias, sums + (long)blocks * C, C);
            return;
        }
        if (dx != null) WarpPerRow(Norm.LayernormBackwardInput, rows, dx, dxCopy, format, dy, x, weight, mean, rstd, rows, C, accumulate);
        if (!paramGrads) return;
        int slices = ColumnSlices(rows, C, 1, C, 2);
        float* partials = slices > 1 ? ColumnPartials() : null;
        ColumnBlocks(Norm.LayernormBackwardParams, C, 1, slices, dweight, dbias, partials, dy, x, mean, rstd, rows, C);
        FinishColumnSlices(slices, 1f, true, dweight, partials, C, dbias, partials + (long)slices * C, C);
    }

    /// <inheritdoc/>
    public void GeluForward(float* y, ushort* yPacked, GemmOperand x, long n)
    {
        x.CheckFor(GemmPrecision, "GeluForward");
        GridStride(Activations.GeluForward, n, y, yPacked, GemmPrecision.PackedOutputFormat(y, yPacked, false, "GeluForward"), x.Data,
            Format(x), n);
    }

    /// <inheritdoc/>
    public void GeluBackward(float* dx, ushort* dxCopy, float* dy, GemmOperand x, long n, bool accumulate)
    {
        x.CheckFor(GemmPrecision, "GeluBackward");
        GridStride(Activations.GeluBackward, n, dx, dxCopy, GemmPrecision.OutputOrCopyFormat(dx, dxCopy, accumulate, "GeluBackward"), dy, x.Data,
            Format(x), n, accumulate);
    }

    /// <inheritdoc/>
    /// <remarks>One column reduction (<see cref="BiasGrad"/>'s slices and order) that stores each dh it sums.</remarks>
    public void BiasGeluBackward(ushort* dhPacked, float* dbias, float* dy, GemmOperand h, int rows, int cols)
    {
        h.CheckFor(GemmPrecision, "BiasGeluBackward");
        int format = (int)GemmPrecision.SixteenBitsFor("BiasGeluBackward");
        int slices = ColumnSlices(rows, cols, 1, cols, 1);
        float* partials = slices > 1 ? ColumnPartials() : null;
        ColumnBlocks(Activations.BiasGeluBackward, cols, 1, slices, dhPacked, format, dbias, partials, dy, h.Data,
            Format(h), rows, cols);
        FinishColumnSlices(slices, 1f, true, dbias, partials, cols);
    }

    /// <inheritdoc/>
    public void ReluForward(float* y, float* x, long n) => GridStride(Activations.ReluForward, n, y, x, n);

    /// <inheritdoc/>
    public void ReluBackward(float* dx, float* dy, float* x, long n, bool accumulate) =>
        GridStride(Activations.ReluBackward, n, dx, dy, x, n, accumulate);

    /// <inheritdoc/>
    public void SoftmaxForward(float* y, float* x, int rows, int cols) =>
        WarpPerRow(Softmax.SoftmaxForward, rows, y, (ushort*)null, (int)Precision.FP32, x, (float*)null, (float*)null, (long)rows, cols, rows, 1, 1);

    /// <inheritdoc/>
    public void SoftmaxBackward(float* dx, ushort* dxPacked, float* dy, GemmOperand y, int rows, int cols, bool accumulate)
    {
        y.CheckFor(GemmPrecision, "SoftmaxBackward");
        WarpPerRow(Softmax.SoftmaxBackward, rows, dx, dxPacked, GemmPrecision.PackedOutputFormat(dx, dxPacked, accumulate, "SoftmaxBackward"),
            dy, y.Data, Format(y), (long)rows, cols, accumulate);
    }

    /// <inheritdoc/>
    public void ScaleShiftForward(float* y, float* x, float* scale, float* shift, int rows, int C) =>
        GridStride(Norm.ScaleShiftForward, (long)rows * C, y, (ushort*)null, (ushort*)null, (int)Precision.FP32, x, (int)Precision.FP32, false,
            scale, shift, (float*)null, rows, C, false);

    /// <inheritdoc/>
    public void ScaleShiftBackward(float* dx, ushort* dxPacked, float* dscale, float* dshift, float* dy, GemmOperand x, float* scale, int rows, int C, bool accumulate)
    {
        // One pass over dy when a parameter trains; dx alone (frozen SSF) is a plain elementwise map.
        if (dscale != null || dshift != null) ScaleShiftBackwardPass(dx, dxPacked, dscale, dshift, dy, x, scale, null, rows, C, accumulate);
        else if (dx != null || dxPacked != null)
            GridStride(Norm.ScaleShiftBackwardInput, (long)rows * C, dx, dxPacked, GemmPrecision.PackedOutputFormat(dx, dxPacked, accumulate, "ScaleShiftBackward"),
                dy, scale, rows, C, accumulate);
    }

    /// <inheritdoc/>
    public void ScaleShiftGeluBackward(float* dx, ushort* dxPacked, float* dscale, float* dshift, float* dy, GemmOperand x, float* scale, float* shift, int rows, int C,
        bool accumulate) => ScaleShiftBackwardPass(dx, dxPacked, dscale, dshift, dy, x, scale, shift, rows, C, accumulate);

    /// <inheritdoc/>
    /// <remarks><see cref="TensorsPerLaunch"/> vectors to a launch (norm.cu's scale_shift_many).</remarks>
    public void ScaleShiftMany(ReadOnlySpan<ScaleShiftVector> vectors)
    {
        ScaleShiftVectors launch = default;
        for (int first = 0; first < vectors.Length; first += TensorsPerLaunch)
        {
            int count = Math.Min(TensorsPerLaunch, vectors.Length - first), largest = 0;
            for (int j = 0; j < count; j++)
            {
                var v = vectors[first + j];
                (launch.Y[j], launch.X[j], launch.Scale[j], launch.Shift[j], launch.N[j]) = ((ulong)v.Y, (ulong)v.X, (ulong)v.Scale, (ulong)v.Shift, v.Count);
                largest = Math.Max(largest, v.Count);
            }
            if (largest > 0) _runtime.Launch(Norm.ScaleShiftMany, SharedLaunchGrid(largest, count), Threads, new KernelArg(&launch, sizeof(ScaleShiftVectors)));
        }
    }

    /// <inheritdoc/>
    /// <remarks>Up to <see cref="TensorsPerLaunch"/> vectors to a launch (norm.cu's scale_shift_many_backward), placed by
    /// <see cref="SharedTargetLaunches"/> so that vectors sharing a gradient target add in the span's order.</remarks>
    public void ScaleShiftManyBackward(ReadOnlySpan<ScaleShiftVectorGrad> vectors)
    {
        int[] launchOf = SharedTargetLaunches(vectors, TensorsPerLaunch);
        int launches = launchOf.Length == 0 ? 0 : launchOf.Max() + 1;
        ScaleShiftVectorGrads launch = default;
        for (int l = 0; l < launches; l++)
        {
            int count = 0, largest = 0;
            for (int i = 0; i < vectors.Length; i++)
            {
                if (launchOf[i] != l) continue;
                var v = vectors[i];
                (launch.Dx[count], launch.DScale[count], launch.DShift[count]) = ((ulong)v.Dx, (ulong)v.DScale, (ulong)v.DShift);
                (launch.Dy[count], launch.X[count], launch.Scale[count]) = ((ulong)v.Dy, (ulong)v.X, (ulong)v.Scale);
                (launch.N[count], launch.Accumulate[count]) = (v.Count, v.AccumulateDx ? 1 : 0);
                largest = Math.Max(largest, v.Count);
                count++;
            }
            if (largest > 0)
                _runtime.Launch(Norm.ScaleShiftManyBackward, SharedLaunchGrid(largest, count), Threads, new KernelArg(&launch, sizeof(ScaleShiftVectorGrads)));
        }
    }

    /// <summary>Which launch each vector of <see cref="ScaleShiftManyBackward"/> goes to, at most
    /// <paramref name="perLaunch"/> to a launch, in as few as the order allows: a vector goes after every launch that holds
    /// an earlier vector with one of its gradient targets, so that no two vectors of a launch write one target (a race)
    /// and a target's additions land in the span's order.</summary>
    internal static int[] SharedTargetLaunches(ReadOnlySpan<ScaleShiftVectorGrad> vectors, int perLaunch)
    {
        var launchOf = new int[vectors.Length];
        var sizes = new List<int>();
        var lastLaunch = new Dictionary<nint, int>(); // a target → the last launch that writes it
        for (int i = 0; i < vectors.Length; i++)
        {
            var v = vectors[i];
            nint[] targets = [(nint)v.Dx, (nint)v.DScale, (nint)v.DShift];
            int l = 0;
            foreach (var t in targets)
                if (t != 0 && lastLaunch.TryGetValue(t, out int k)) l = Math.Max(l, k + 1);
            while (l < sizes.Count && sizes[l] == perLaunch) l++;
            if (l == sizes.Count) sizes.Add(0);
            sizes[l]++;
            launchOf[i] = l;
            foreach (var t in targets)
                if (t != 0) lastLaunch[t] = l;
        }
        return launchOf;
    }

    /// <summary>The C layout of norm.cu's ScaleShiftVectors.</summary>
    struct ScaleShiftVectors
    {
        public fixed ulong Y[TensorsPerLaunch], X[TensorsPerLaunch], Scale[TensorsPerLaunch], Shift[TensorsPerLaunch];
        public fixed int N[TensorsPerLaunch];
    }

    /// <summary>The C layout of norm.cu's ScaleShiftVectorGrads.</summary>
    struct ScaleShiftVectorGrads
    {
        public fixed ulong Dx[TensorsPerLaunch], DScale[TensorsPerLaunch], DShift[TensorsPerLaunch], Dy[TensorsPerLaunch], X[TensorsPerLaunch],
            Scale[TensorsPerLaunch];
        public fixed int N[TensorsPerLaunch], Accumulate[TensorsPerLaunch];
    }

    /// <summary>norm.cu's scale_shift_backward over row slices (GELU's backward first when <paramref name="shift"/> is
    /// given), x float32 or 16-bit, dx float32 or (dxPacked) 16-bit.</summary>
    void ScaleShiftBackwardPass(float* dx, ushort* dxPacked, float* dscale, float* dshift, float* dy, GemmOperand x, float* scale, float* shift, int rows, int C,
        bool accumulate)
    {
        string kernel = shift == null ? "ScaleShiftBackward" : "ScaleShiftGeluBackward";
        x.CheckFor(GemmPrecision, kernel);
        int dxFormat = GemmPrecision.PackedOutputFormat(dx, dxPacked, accumulate, kernel);
        int slices = ColumnSlices(rows, C, 1, C, 2);
        float* partials = slices > 1 ? ColumnPartials() : null;
        int format = Format(x);
        ColumnBlocks(Norm.ScaleShiftBackward, C, 1, slices, dx, dxPacked, dxFormat, dscale, dshift, partials, dy, x.Data, format, scale, shift, rows, C,
            shift != null, accumulate);
        FinishColumnSlices(slices, 1f, true, dscale, partials, C, dshift, partials + (long)slices * C, C);
    }

    // ---------------------------------------------------------------- PEFT (peft.cu, norm.cu, loss.cu)

    /// <inheritdoc/>
    public void GatherChannels(float* y, float* x, int* index, int rows, int C, int K, bool accumulate) =>
        GridStride(Peft.GatherChannels, (long)rows * K, y, x, index, rows, C, K, accumulate);

    /// <inheritdoc/>
    public void ScatterAddChannels(float* y, float* x, float* z, float* bias, int* index, int rows, int C, int K)
    {
        if (y != x) Copy(y, x, (long)rows * C, accumulate: false);
        GridStride(Peft.ScatterAddChannels, (long)rows * K, y, x, z, bias, index, rows, C, K);
    }

    /// <inheritdoc/>
    public void AddSelectedEntries(float* dvalues, float* dense, int* index, int N, int K, int k) =>
        GridStride(Peft.AddSelectedEntries, (long)N * k, dvalues, dense, index, N, K, k);

    /// <inheritdoc/>
    /// <remarks>dy and x are read as they come (packed values widened, float32 ones rounded, as they are loaded); whole
    /// rows of x are staged in shared memory for up to 1,024 entries a block.</remarks>
    public void SparseWeightGrad(float* dvalues, GemmOperand dy, GemmOperand x, int* index, int rows, int N, int K, int k)
    {
        x.CheckFor(GemmPrecision, "SparseWeightGrad");
        dy.CheckFor(GemmPrecision, "SparseWeightGrad");
        int count = checked(N * k), groups = (count + SparseEntriesPerBlock - 1) / SparseEntriesPerBlock;
        if (count == 0 || rows == 0) return;
        int slices = ColumnSlices(rows, 32 * groups, 1, count, 1); // as many blocks as a column reduction of `groups` blocks
        float* partials = slices > 1 ? ColumnPartials() : null;
        var kernel = (x.IsPacked, dy.IsPacked) switch
        {
            (false, false) => Peft.SparseWeightGrad,
            (true, false) => Peft.SparseWeightGradX16,
            (false, true) => Peft.SparseWeightGradDy16,
            (true, true) => Peft.SparseWeightGradX16Dy16,
        };
        _runtime.Launch(kernel, new Dim3((uint)groups, 1, (uint)slices), Threads, dvalues, partials, dy.Data, x.Data, (int)GemmPrecision, index, rows, N, K, k);
        FinishColumnSlices(slices, 1f, true, dvalues, partials, count);
    }

    /// <inheritdoc/>
    public void L2NormalizeForward(float* y, float* x, int rows, int C, float eps) =>
        WarpPerRow(Norm.L2NormalizeForward, rows, y, x, rows, C, eps);

    /// <inheritdoc/>
    public void L2NormalizeBackward(float* dx, float* dy, float* x, float* y, int rows, int C, float eps, bool accumulate) =>
        WarpPerRow(Norm.L2NormalizeBackward, rows, dx, dy, x, y, rows, C, eps, accumulate);

    /// <inheritdoc/>
    public void SupConForward(float* loss, float* s, int* labels, int N, float temperature) =>
        _runtime.Launch(Loss.SupconForward, 1, Threads, loss, s, labels, N, temperature);

    /// <inheritdoc/>
    public void SupConBackward(float* ds, float* dloss, float* s, int* labels, int N, float temperature, bool accumulate) =>
        WarpPerRow(Loss.SupconBackward, N, ds, dloss, s, labels, N, temperature, accumulate);

    // ---------------------------------------------------------------- attention pieces (attention.cu, softmax.cu)

    /// <inheritdoc/>
    public void SplitHeads(float* heads, ushort* headsPacked, GemmOperand qkv, int B, int T, int NH, int HD)
    {
        int format = GemmPrecision.PackedOutputFormat(heads, headsPacked, false, "SplitHeads");
        if (qkv.IsPacked && format == 0)
            throw new ArgumentException("SplitHeads: q|k|v in 16 bits are split into 16-bit heads (headsPacked), not float32 ones", nameof(qkv));
        PackedRows(Attention.SplitHeads, (long)B * T, 3 * NH * HD, HD, heads, headsPacked, format, qkv.IsPacked ? (KernelArg)qkv.Halves : qkv.Floats,
            qkv.IsPacked ? format : 0, B, T, NH, HD);
    }

    /// <inheritdoc/>
    public void SplitHeadsBackward(float* dqkv, ushort* dqkvCopy, float* dq, float* dk, float* dv, int B, int T, int NH, int HD, bool accumulate) =>
        PackedRows(Attention.SplitHeadsBackward, (long)B * T, 3 * NH * HD, HD, dqkv, dqkvCopy, GemmPrecision.GradientCopyFormat(dqkv, dqkvCopy, "SplitHeadsBackward"),
            dq, dk, dv, B, T, NH, HD, accumulate);

    /// <inheritdoc/>
    public void MergeHeads(float* y, ushort* yPacked, float* o, int B, int T, int NH, int HD) =>
        PackedRows(Attention.MergeHeads, (long)B * T, NH * HD, HD, y, yPacked, GemmPrecision.PackedOutputFormat(y, yPacked, false, "MergeHeads"),
            o, B, T, NH, HD);

    /// <inheritdoc/>
    public void MergeHeadsBackward(float* dout, ushort* doutPacked, float* dy, int B, int T, int NH, int HD, bool accumulate) =>
        PackedRows(Attention.MergeHeadsBackward, (long)B * T, NH * HD, HD, dout, doutPacked,
            GemmPrecision.PackedOutputFormat(dout, doutPacked, accumulate, "MergeHeadsBackward"), dy, B, T, NH, HD, accumulate);

    /// <summary>A head permute over <paramref name="rows"/> packed rows of <paramref name="width"/> values (attention.cu's
    /// packed_rows): a row's quads (or values, when HD is not a multiple of 4) across x, rounded up to whole warps (at
    /// most 256), and as many rows across y as fill 256 threads.</summary>
    void PackedRows(CudaKernel kernel, long rows, int width, int HD, params ReadOnlySpan<KernelArg> args) =>
        Rows(kernel, rows, HD % 4 == 0 ? width / 4 : width, args);

    /// <summary>A kernel over <paramref name="rows"/> rows of <paramref name="perRow"/> threads' work each: a row across x,
    /// rounded up to whole warps (at most 256), as many rows across y as fill 256 threads, grid-stride over the rest.</summary>
    void Rows(CudaKernel kernel, long rows, int perRow, params ReadOnlySpan<KernelArg> args)
    {
        if (rows == 0 || perRow == 0) return;
        int x = Math.Min(Threads, (perRow + 31) / 32 * 32), y = Threads / x;
        _runtime.Launch(kernel, _runtime.GridStrideBlocks(kernel, rows * x, x * y), new Dim3((uint)x, (uint)y), args);
    }

    /// <summary>Whether <see cref="FusedAttentionForward"/> and <see cref="FusedAttentionBackward"/> run their tensor-core
    /// kernels (mma.sync, head dim 64 as ViT's or 32 as Swin's, bf16 or fp16 operands): on compute capability 8.0 and
    /// newer, and on the emulated device, which runs the same code with each mma done by FMAs on the warp's gathered
    /// fragments (so CI checks it).</summary>
    public bool UsesTensorCoreAttention(int headDim) =>
        headDim is 64 or 32 && GemmPrecision is (Precision.BF16 or Precision.FP16) && _runtime is not DriverRuntime { ComputeCapability.Major: < 8 };

    /// <inheritdoc/>
    /// <remarks>Where the tensor-core kernels run (<see cref="UsesTensorCoreAttention"/>) and no bias trains (the bias
    /// gradient's kernel reads float32).</remarks>
    public bool FusedAttentionKeepsSixteenBits(int headDim, bool bias) => UsesTensorCoreAttention(headDim) && !bias;

    /// <summary>Whether this fused attention call runs the tensor-core kernels: <see cref="UsesTensorCoreAttention"/>, and
    /// the operands they read as float4 16-byte aligned.</summary>
    bool TensorCoreAttention(int HD, float* qkv, float* other) => UsesTensorCoreAttention(HD) && (((ulong)qkv | (ulong)other) & 15) == 0;

    /// <summary>The tensor-core kernels for head dim <paramref name="HD"/> (64 or 32): forward, query side, key side.</summary>
    static (CudaKernel Forward, CudaKernel Dq, CudaKernel Dkdv) TensorCoreAttentionKernels(int HD) => HD == 32
        ? (Attention.FusedAttentionForwardTc32, Attention.FusedAttentionBackwardDqTc32, Attention.FusedAttentionBackwardDkdvTc32)
        : (Attention.FusedAttentionForwardTc, Attention.FusedAttentionBackwardDqTc, Attention.FusedAttentionBackwardDkdvTc);

    /// <summary>The tensor-core kernels' grid: 64 rows (4 warps of 16) of one (image, head) per block.</summary>
    static Dim3 TensorCoreAttentionGrid(int B, int T, int NH) => new((uint)((T + 63) / 64), (uint)(B * NH));

    /// <summary>Fused attention's launch shape (attention.cu): 4 warps per block, each owning
    /// <paramref name="rowsPerWarp"/> rows of one (image, head) per grid row.</summary>
    static (Dim3 Grid, Dim3 Block) FusedAttentionShape(int B, int T, int NH, int rowsPerWarp) =>
        (new Dim3((uint)((T + 4 * rowsPerWarp - 1) / (4 * rowsPerWarp)), (uint)(B * NH)), new Dim3(128));

    /// <summary>Images per fused-attention launch. Its grids give each (image, head) pair a row of blocks, and a grid's y
    /// holds at most <see cref="CudaRuntime.MaxGridYZ"/> rows: Swin-B's windows at batch 256 are 65,536 pairs (256 · 64
    /// windows · 4 heads), so larger batches run in launches of whole images, a multiple of the mask's
    /// <paramref name="windows"/> each (image b reads mask b mod nW, so every launch starts at window 0). The kernels
    /// stay as they are: folding the pairs across y and z inside them cost the tensor-core dK/dV kernel 16 registers at
    /// sm_90 and made it spill at sm_80.</summary>
    int AttentionImagesPerLaunch(int B, int NH, int windows)
    {
        int images = _runtime.MaxGridYZ / NH / windows * windows;
        if (images == 0)
            throw new ArgumentException($"fused attention on {_runtime.Name}: {windows} mask windows × {NH} heads are more (image, head) " +
                $"pairs than a grid's y may hold ({_runtime.MaxGridYZ})");
        return Math.Min(images, B);
    }

    /// <summary><paramref name="p"/> + <paramref name="offset"/> elements, or null.</summary>
    static T* At<T>(T* p, long offset) where T : unmanaged => p == null ? null : p + offset;

    /// <inheritdoc/>
    /// <remarks>Head dim at most 128 (the kernels' shared-memory tiles). Head dim 64 or 32 with bf16 or fp16 GEMMs runs on
    /// tensor cores (<see cref="UsesTensorCoreAttention"/>).</remarks>
    public void FusedAttentionForward(float* y, ushort* yPacked, float* lse, GemmOperand qkv, float* bias, float* mask, int B, int T, int NH, int HD, int nW, float scale)
    {
        CheckFusedHeadDim(HD);
        if (B * T * NH == 0) return;
        GemmPrecision.PackedOutputFormat(y, yPacked, false, "FusedAttentionForward");
        ushort* qkv16 = qkv.IsPacked ? qkv.Halves : null;
        float* qkvFloats = qkv.IsPacked ? null : qkv.Floats;
        if (qkv16 != null && (!UsesTensorCoreAttention(HD) || ((ulong)qkv16 & 15) != 0))
            throw new ArgumentException($"FusedAttentionForward: qkv in 16 bits is read by the tensor-core kernel alone (head dim 64 or 32, bf16 or fp16 GEMMs, " +
                $"16-byte aligned), not head dim {HD} under {GemmPrecision.Name()}", nameof(qkv));
        bool tensorCores = qkv16 != null || TensorCoreAttention(HD, qkvFloats, qkvFloats);
        if (!tensorCores && yPacked != null)
            throw new ArgumentException($"FusedAttentionForward: an output in 16 bits is written by the tensor-core kernel alone (head dim 64 or 32, bf16 or fp16 GEMMs), not head dim {HD} under {GemmPrecision.Name()}", nameof(yPacked));
        int windows = mask == null ? 1 : nW, perLaunch = AttentionImagesPerLaunch(B, NH, windows), C = NH * HD;
        for (int b0 = 0; b0 < B; b0 += perLaunch)
        {
            int n = Math.Min(perLaunch, B - b0);
            long rows = (long)b0 * T, heads = (long)b0 * NH * T; // token rows and (head, token) rows before this launch's images
            if (tensorCores)
                _runtime.Launch(TensorCoreAttentionKernels(HD).Forward, TensorCoreAttentionGrid(n, T, NH), new Dim3(128), At(y, rows * C),
                    At(yPacked, rows * C), lse + heads, At(qkvFloats, rows * 3 * C), At(qkv16, rows * 3 * C), bias, mask, n, T, NH, HD, windows, scale,
                    (int)GemmPrecision);
            else
            {
                var (grid, block) = FusedAttentionShape(n, T, NH, 4);
                _runtime.Launch(Attention.FusedAttentionForward, grid, block, y + rows * C, lse + heads, qkvFloats + rows * 3 * C, bias, mask, n, T, NH,
                    HD, windows, scale, (int)GemmPrecision);
            }
        }
    }

    /// <inheritdoc/>
    /// <remarks>A packed qkv or y only where <see cref="FusedAttentionKeepsSixteenBits"/>: the tensor-core kernels read
    /// them as they are.</remarks>
    public void FusedAttentionBackward(float* dqkv, ushort* dqkvCopy, float* dbias, float* delta, float* dy, GemmOperand y, float* lse, GemmOperand qkv, float* bias,
        float* mask, int B, int T, int NH, int HD, int nW, float scale, bool accumulate)
    {
        CheckFusedHeadDim(HD);
        int copyFormat = GemmPrecision.GradientCopyFormat(dqkv, dqkvCopy, "FusedAttentionBackward");
        if (B * T * NH == 0) return;
        int windows = mask == null ? 1 : nW;
        ushort* qkv16 = qkv.IsPacked ? qkv.Halves : null, y16 = y.IsPacked ? y.Halves : null;
        float* qkvFloats = qkv.IsPacked ? null : qkv.Floats, yFloats = y.IsPacked ? null : y.Floats;
        bool sixteen = qkv16 != null || y16 != null;
        if (sixteen && (!FusedAttentionKeepsSixteenBits(HD, dbias != null) || (((ulong)qkv16 | (ulong)qkvFloats | (ulong)dy) & 15) != 0))
            throw new ArgumentException($"FusedAttentionBackward: qkv or y in 16 bits is read by the tensor-core kernels alone (head dim 64 or 32, bf16 or fp16 " +
                $"GEMMs, no bias gradient, 16-byte aligned), not head dim {HD} under {GemmPrecision.Name()}{(dbias != null ? " with a bias gradient" : "")}",
                qkv16 != null ? nameof(qkv) : nameof(y));
        bool tensorCores = sixteen || TensorCoreAttention(HD, qkvFloats, dy);
        var tc = TensorCoreAttentionKernels(HD);
        int perLaunch = AttentionImagesPerLaunch(B, NH, windows), C = NH * HD;
        for (int b0 = 0; b0 < B; b0 += perLaunch)
        {
            int n = Math.Min(perLaunch, B - b0);
            long rows = (long)b0 * T, heads = (long)b0 * NH * T; // token rows and (head, token) rows before this launch's images
            float* dqkvAt = At(dqkv, rows * 3 * C), deltaAt = delta + heads, dyAt = dy + rows * C, lseAt = lse + heads, qkvAt = At(qkvFloats, rows * 3 * C);
            if (tensorCores)
            {
                var grid = TensorCoreAttentionGrid(n, T, NH);
                ushort* copyAt = At(dqkvCopy, rows * 3 * C), qkv16At = At(qkv16, rows * 3 * C);
                _runtime.Launch(tc.Dq, grid, new Dim3(128), dqkvAt, copyAt, copyFormat, deltaAt, dyAt, At(yFloats, rows * C), At(y16, rows * C), lseAt,
                    qkvAt, qkv16At, bias, mask, n, T, NH, HD, windows, scale, accumulate, (int)GemmPrecision);
                if (dqkv != null)
                    _runtime.Launch(tc.Dkdv, grid, new Dim3(128), dqkvAt, copyAt, copyFormat, deltaAt, dyAt, lseAt, qkvAt, qkv16At, bias, mask, n, T, NH, HD,
                        windows, scale, accumulate, (int)GemmPrecision);
            }
            else
            {
                var (grid, block) = FusedAttentionShape(n, T, NH, 2);
                _runtime.Launch(Attention.FusedAttentionBackwardDq, grid, block, dqkvAt, deltaAt, dyAt, yFloats + rows * C, lseAt, qkvAt, bias, mask, n, T,
                    NH, HD, windows, scale, accumulate, (int)GemmPrecision);
                if (dqkv != null)
                    _runtime.Launch(Attention.FusedAttentionBackwardDkdv, grid, block, dqkvAt, deltaAt, dyAt, lseAt, qkvAt, bias, mask, n, T, NH, HD, windows,
                        scale, accumulate, (int)GemmPrecision);
            }
        }
        // The bias gradient sums every image's delta (all launches above): one warp per (head, query) row, a grid over x.
        if (dbias != null)
            WarpPerRow(Attention.FusedAttentionBackwardBias, (long)NH * T, dbias, delta, dy, lse, qkvFloats, bias, mask, B, T, NH, HD, windows, scale, (int)GemmPrecision);
        if (!tensorCores && dqkvCopy != null) PackLowPrecision(dqkvCopy, dqkv, (long)B * T * 3 * NH * HD, GemmPrecision); // the FMA kernels write float32 only
    }

    static void CheckFusedHeadDim(int HD)
    {
        if (HD > 128) throw new ArgumentOutOfRangeException(nameof(HD), HD, "fused attention on CUDA takes head dims up to 128; use the unfused path");
    }

    /// <inheritdoc/>
    public void AttentionSoftmaxForward(float* p, ushort* pCopy, float* s, float* bias, float* mask, int B, int NH, int T, int nW) =>
        WarpPerRow(Softmax.SoftmaxForward, (long)B * NH * T, p, pCopy, GemmPrecision.OutputOrCopyFormat(p, pCopy, false, "AttentionSoftmaxForward"),
            s, bias, mask, (long)B * NH * T, T, T, NH, mask == null ? 1 : nW);

    // ---------------------------------------------------------------- loss (loss.cu)

    /// <inheritdoc/>
    /// <remarks>A target outside [0, V) cannot throw on the device: it makes the loss NaN.</remarks>
    public void CrossEntropyForward(float* loss, float* logits, int* targets, int B, int V, float smoothing) =>
        _runtime.Launch(Loss.CrossEntropyForward, 1, Threads, loss, logits, targets, B, V, smoothing);

    /// <inheritdoc/>
    public void CrossEntropyBackward(float* dlogits, float* dloss, float* logits, int* targets, int B, int V, float smoothing, bool accumulate) =>
        WarpPerRow(Loss.CrossEntropyBackward, B, dlogits, dloss, logits, targets, B, V, smoothing, accumulate);

    // ---------------------------------------------------------------- convolution and patches (conv.cu, patches.cu)

    /// <inheritdoc/>
    public void DepthwiseConvForward(float* y, float* x, float* w, float* bias, int N, int H, int W, int C, int k, int pad) =>
        DepthwisePositions(Conv.DepthwiseConvForward, (long)N * (H + 2 * pad - k + 1) * (W + 2 * pad - k + 1), C, y, x, w, bias, N, H, W, C, k, pad);

    /// <inheritdoc/>
    /// <remarks>The weight gradient cuts the positions into slices, each a block column's sums of its channels' 7×7 taps
    /// kept in registers (conv.cu), finished by column_partials_sum.</remarks>
    public void DepthwiseConvBackward(float* dx, float* dw, float* dbias, float* dy, float* x, float* w,
        int N, int H, int W, int C, int k, int pad, bool accumulate)
    {
        if (dx != null) DepthwisePositions(Conv.DepthwiseConvBackwardInput, (long)N * H * W, C, dx, dy, w, N, H, W, C, k, pad, accumulate);
        if (dw == null && dbias == null) return;
        int positions = N * (H + 2 * pad - k + 1) * (W + 2 * pad - k + 1), kk = k * k;
        int chunks = (k + DepthwiseRegisterK - 1) / DepthwiseRegisterK, gridY = dw != null ? chunks * chunks : 1;
        int slices = ColumnSlices(positions, C, gridY, (long)C * (kk + 1), 1);
        var partials = ColumnPartials();
        ColumnBlocks(Conv.DepthwiseConvBackwardParams, C, gridY, slices, dw, dbias, partials, dy, x, N, H, W, C, k, pad);
        FinishColumnSlices(slices, 1f, true, dw, partials, (long)C * kk, dbias, partials + (long)slices * C * kk, C);
    }

    /// <summary>conv.cu's DEPTHWISE_REGISTER_K: the weight gradient's blocks each own a window of this many taps squared.</summary>
    const int DepthwiseRegisterK = 7;

    /// <summary>A depthwise kernel over <paramref name="positions"/> output positions of <paramref name="C"/> channels:
    /// (32, 8) blocks, a block column per 32 channels, enough position blocks to fill the device.</summary>
    void DepthwisePositions(CudaKernel kernel, long positions, int C, params ReadOnlySpan<KernelArg> args)
    {
        if (positions == 0 || C == 0) return;
        int columns = (C + 31) / 32;
        long gridY = Math.Clamp(Math.Min((_maxBlocks + columns - 1) / columns, (positions + 7) / 8), 1, _runtime.MaxGridYZ);
        _runtime.Launch(kernel, new Dim3((uint)columns, (uint)gridY), ColumnBlock, args);
    }

    /// <inheritdoc/>
    public void Patchify(float* patches, float* x, int N, int C, int H, int W, int p, bool channelsLast) =>
        Rows(Patches.Patchify, (long)N * (H / p) * (W / p), C * p * p, patches, x, N, C, H, W, p, channelsLast);

    /// <inheritdoc/>
    public void PatchifyBackward(float* dx, float* dpatches, int N, int C, int H, int W, int p, bool channelsLast, bool accumulate) =>
        Rows(Patches.PatchifyBackward, (long)N * (H / p) * (W / p), C * p * p, dx, dpatches, N, C, H, W, p, channelsLast, accumulate);

    // ---------------------------------------------------------------- token ops (tokens.cu)

    /// <inheritdoc/>
    public void PrependToken(float* y, float* x, float* token, int B, int T, int C) =>
        GridStride(Tokens.PrependToken, (long)B * (T + 1) * C, y, x, token, B, T, C);

    /// <inheritdoc/>
    public void PrependTokenBackward(float* dx, float* dtoken, float* dy, int B, int T, int C, bool accumulate)
    {
        if (dx != null) GridStride(Tokens.PrependTokenBackwardInput, (long)B * T * C, dx, dy, B, T, C, accumulate);
        if (dtoken != null) ColumnSum(dtoken, dy, B, C, (long)(T + 1) * C, 0, 1, 1f, true);
    }

    /// <inheritdoc/>
    public void CopyTokens(float* dst, int dstTokens, int dstStart, float* src, int srcTokens, int srcStart, int count, int B, int C, bool accumulate) =>
        GridStride(Tokens.CopyTokens, (long)B * count * C, dst, dstTokens, dstStart, src, srcTokens, srcStart, count, B, C, accumulate);

    /// <inheritdoc/>
    public void TakeToken(float* y, float* x, int B, int T, int C, int index) =>
        GridStride(Tokens.TakeToken, (long)B * C, y, x, B, T, C, index);

    /// <inheritdoc/>
    public void TakeTokenBackward(float* dx, float* dy, int B, int T, int C, int index, bool accumulate) =>
        GridStride(Tokens.TakeTokenBackward, accumulate ? (long)B * C : (long)B * T * C, dx, dy, B, T, C, index, accumulate);

    /// <inheritdoc/>
    public void MeanTokens(float* y, float* x, int B, int T, int C) => ColumnSum(y, x, T, C, C, (long)T * C, B, 1f / T, false);

    /// <inheritdoc/>
    public void MeanTokensBackward(float* dx, float* dy, int B, int T, int C, bool accumulate) =>
        GridStride(Tokens.MeanTokensBackward, (long)B * T * C, dx, dy, B, T, C, accumulate);

    // ---------------------------------------------------------------- Swin (patches.cu)

    /// <inheritdoc/>
    public void WindowPartition(float* windows, float* x, int B, int H, int W, int C, int ws, int shift, bool accumulate) =>
        Rows(Windows.WindowPartition, (long)B * H * W, C, windows, x, B, H, W, C, ws, shift, accumulate);

    /// <inheritdoc/>
    public void WindowReverse(float* x, float* windows, int B, int H, int W, int C, int ws, int shift, bool accumulate) =>
        Rows(Windows.WindowReverse, (long)B * H * W, C, x, windows, B, H, W, C, ws, shift, accumulate);

    /// <inheritdoc/>
    public void PatchMerge(float* y, float* x, int B, int H, int W, int C) =>
        Rows(Patches.PatchMerge, (long)B * (H / 2) * (W / 2) * 4, C, y, x, B, H, W, C);

    /// <inheritdoc/>
    public void PatchMergeBackward(float* dx, float* dy, int B, int H, int W, int C, bool accumulate) =>
        Rows(Patches.PatchMergeBackward, (long)B * (H / 2) * (W / 2) * 4, C, dx, dy, B, H, W, C, accumulate);

    /// <inheritdoc/>
    public void RelativePositionBias(float* bias, float* table, int NH, int ws) =>
        GridStride(Windows.RelativePositionBias, (long)NH * ws * ws * ws * ws, bias, table, NH, ws);

    /// <inheritdoc/>
    public void RelativePositionBiasBackward(float* dtable, float* dbias, int NH, int ws, bool accumulate) =>
        GridStride(Windows.RelativePositionBiasBackward, (long)(2 * ws - 1) * (2 * ws - 1) * NH, dtable, dbias, NH, ws, accumulate);

    // ---------------------------------------------------------------- regularisation (dropout.cu)

    /// <inheritdoc/>
    public void DropPathForward(float* y, float* x, long samples, long perSample, float p, ulong seed, ulong* seedOffset) =>
        GridStride(Dropout.DropSamples, samples * perSample, y, x, (float*)null, samples * perSample, perSample, p, seed, seedOffset, false);

    /// <inheritdoc/>
    public void DropPathAdd(float* y, float* residual, float* x, long samples, long perSample, float p, ulong seed, ulong* seedOffset) =>
        GridStride(Dropout.DropSamples, samples * perSample, y, x, residual, samples * perSample, perSample, p, seed, seedOffset, false);

    /// <inheritdoc/>
    public void DropPathBackward(float* dx, float* dy, long samples, long perSample, float p, ulong seed, ulong* seedOffset, bool accumulate) =>
        GridStride(Dropout.DropSamples, samples * perSample, dx, dy, (float*)null, samples * perSample, perSample, p, seed, seedOffset, accumulate);

    // ---------------------------------------------------------------- optimizer and reductions (optimizer.cu, reductions.cu)

    /// <inheritdoc/>
    public void AdamStep(float* param, float* grad, float* m, float* v, float* mask, long n, float lr, float beta1, float beta2,
        float eps, float weightDecay, int t, bool decoupled, float* stepValues)
    {
        // Bias corrections in float on the host, exactly as the CPU backend computes them.
        float bc1 = 1 - MathF.Pow(beta1, t), bc2Sqrt = MathF.Sqrt(1 - MathF.Pow(beta2, t));
        GridStride(Optimizer.AdamStep, n, param, grad, m, v, mask, n, lr, beta1, beta2, eps, weightDecay, bc1, bc2Sqrt, decoupled, stepValues);
    }

    /// <inheritdoc/>
    /// <remarks>Parameters of up to <see cref="SharedLaunchMaxCount"/> floats go <see cref="TensorsPerLaunch"/> to a launch
    /// (optimizer.cu's adam_step_many), larger ones one each.</remarks>
    public void AdamStepMany(ReadOnlySpan<AdamTensor> tensors, float lr, float beta1, float beta2, float eps, int t, bool decoupled,
        float* stepValues)
    {
        float bc1 = 1 - MathF.Pow(beta1, t), bc2Sqrt = MathF.Sqrt(1 - MathF.Pow(beta2, t));
        AdamTensors launch = default;
        int count = 0;
        long largest = 0;
        for (int i = 0; i < tensors.Length; i++)
        {
            var p = tensors[i];
            if (p.Count > SharedLaunchMaxCount && p.Index != null)
                SparseAdamStep(p.Param, p.Grad, p.M, p.V, p.Index, checked((int)(p.Count / p.PerRow)), p.Columns, p.PerRow, lr, beta1, beta2, eps, p.WeightDecay,
                    t, decoupled, stepValues);
            else if (p.Count > SharedLaunchMaxCount)
                AdamStep(p.Param, p.Grad, p.M, p.V, p.Mask, p.Count, lr, beta1, beta2, eps, p.WeightDecay, t, decoupled, stepValues);
            else
            {
                (launch.Param[count], launch.Grad[count], launch.M[count], launch.V[count]) = ((ulong)p.Param, (ulong)p.Grad, (ulong)p.M, (ulong)p.V);
                (launch.Mask[count], launch.Index[count], launch.PerRow[count], launch.Columns[count]) = ((ulong)p.Mask, (ulong)p.Index, p.PerRow, p.Columns);
                launch.N[count] = p.Count;
                launch.WeightDecay[count] = p.WeightDecay;
                largest = Math.Max(largest, p.Count);
                count++;
            }
            if (count == TensorsPerLaunch || (i == tensors.Length - 1 && count > 0))
            {
                if (largest > 0)
                    _runtime.Launch(Optimizer.AdamStepMany, SharedLaunchGrid(largest, count), Threads, new KernelArg(&launch, sizeof(AdamTensors)),
                        lr, beta1, beta2, eps, bc1, bc2Sqrt, decoupled, stepValues);
                (count, largest) = (0, 0);
            }
        }
    }

    /// <summary>The C layout of optimizer.cu's AdamTensors.</summary>
    struct AdamTensors
    {
        public fixed ulong Param[TensorsPerLaunch], Grad[TensorsPerLaunch], M[TensorsPerLaunch], V[TensorsPerLaunch], Mask[TensorsPerLaunch],
            Index[TensorsPerLaunch];
        public fixed long N[TensorsPerLaunch];
        public fixed float WeightDecay[TensorsPerLaunch];
        public fixed int PerRow[TensorsPerLaunch], Columns[TensorsPerLaunch];
    }

    /// <inheritdoc/>
    public void SparseAdamStep(float* param, float* grad, float* m, float* v, int* index, int N, int K, int k, float lr,
        float beta1, float beta2, float eps, float weightDecay, int t, bool decoupled, float* stepValues)
    {
        float bc1 = 1 - MathF.Pow(beta1, t), bc2Sqrt = MathF.Sqrt(1 - MathF.Pow(beta2, t));
        GridStride(Optimizer.SparseAdamStep, (long)N * k, param, grad, m, v, index, N, K, k, lr, beta1, beta2, eps, weightDecay,
            bc1, bc2Sqrt, decoupled, stepValues);
    }

    /// <inheritdoc/>
    public double SumSquares(float* x, long n) => Reduce(Reductions.SumSquaresPartial, x, n);

    /// <inheritdoc/>
    public long CountNonFinite(float* x, long n) => (long)Reduce(Reductions.CountNonfinitePartial, x, n);

    /// <summary>Two-stage deterministic reduction: per-block partials, one block adds them, the host reads 8 bytes.</summary>
    double Reduce(CudaKernel partialKernel, float* x, long n)
    {
        if (n == 0) return 0;
        if (_scratch == 0) _scratch = _runtime.Allocate((MaxPartials + 1) * sizeof(double));
        double* partials = (double*)_scratch, result = partials + MaxPartials;
        int blocks = Blocks(n);
        _runtime.Launch(partialKernel, blocks, Threads, partials, x, n);
        _runtime.Launch(Reductions.SumPartials, 1, Threads, result, partials, blocks);
        double value;
        _runtime.CopyToHost(&value, (ulong)result, sizeof(double));
        return value;
    }

    /// <summary>Frees the reduction scratch (the runtime is not owned).</summary>
    public void Dispose()
    {
        if (_scratch != 0) _runtime.Free(_scratch);
        if (_columnPartials != 0) _runtime.Free(_columnPartials);
        _scratch = _columnPartials = 0;
    }
}
