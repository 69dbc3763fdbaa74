using System.Runtime.InteropServices;
using System.Text;
using static Engine.Kernels.Cuda.CudaDriver;

namespace Engine.Kernels.Cuda;

/// <summary>
/// A real GPU: the device's primary context (shared with cuBLAS), one stream on which every copy, kernel and GEMM
/// is queued, kernel modules compiled by NVRTC for the device's exact architecture (PTX for the newest supported
/// one when NVRTC is older than the GPU; the driver JIT-compiles it) and cached on disk (<see cref="KernelCache"/>),
/// every family compiled ahead on background threads when the device opens and loaded on first use. Every call is
/// checked (<see cref="CudaException"/>).
/// </summary>
public sealed unsafe class DriverRuntime : CudaRuntime
{
    [ThreadStatic] static IntPtr _currentContext;

    readonly int _device;
    readonly IntPtr _context, _stream;
    readonly CuBlas _blas;
    readonly ulong _blasWorkspace; // CuBlas.WorkspaceBytes, cuBLAS's and cuBLASLt's
    readonly Dictionary<string, IntPtr> _modules = new();
    readonly KernelImages _images;
    readonly Dictionary<CudaKernel, IntPtr> _functions = new();
    readonly Dictionary<(CudaKernel, int), int> _residentBlocks = new();
    readonly object _gate = new();
    bool _disposed;

    DriverRuntime(int device)
    {
        _device = device;
        Check(cuDevicePrimaryCtxRetain(out _context, device), "cuDevicePrimaryCtxRetain");
        MakeCurrent();
        Check(cuStreamCreate(out _stream, 0), "cuStreamCreate");
        _blasWorkspace = Allocate(CuBlas.WorkspaceBytes);
        _blas = new CuBlas(_stream, _blasWorkspace);
        var name = stackalloc byte[256];
        Check(cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        DeviceName = Marshal.PtrToStringUTF8((IntPtr)name)!;
        ComputeCapability = (GetAttribute(DeviceAttribute.ComputeCapabilityMajor), GetAttribute(DeviceAttribute.ComputeCapabilityMinor));
        MultiprocessorCount = GetAttribute(DeviceAttribute.MultiprocessorCount);
        MaxGridYZ = Math.Min(GetAttribute(DeviceAttribute.MaxGridDimY), GetAttribute(DeviceAttribute.MaxGridDimZ));
        Check(cuDeviceTotalMem_v2(out nuint memory, device), "cuDeviceTotalMem_v2");
        TotalMemory = (long)memory;
        Check(cuDriverGetVersion(out int driver), "cuDriverGetVersion");
        DriverVersion = (driver / 1000, driver % 1000 / 10);
        int arch = ComputeCapability.Major * 10 + ComputeCapability.Minor;
        var supported = Nvrtc.SupportedArchitectures;
        KernelTarget = supported.Contains(arch) ? $"sm_{arch}" : $"compute_{supported.Where(a => a <= arch).DefaultIfEmpty(supported.Max()).Max()}";
        // Every family at once, so a first run waits for the slowest (attention.cu, ~12 s of NVRTC for sm_90 on a
        // 2-core VM) rather than for their sum (~26 s); from the disk cache after the first run.
        string target = KernelTarget;
        _images = new KernelImages(KernelSources.KernelFiles, file => KernelCache.GetOrCompile(file, target).Image);
    }

    /// <summary>
    /// Opens GPU <paramref name="ordinal"/>, or returns false with the reason: no driver (libcuda.so.1 missing),
    /// no usable GPU (cuInit fails: no device, or the link stub), no GPU (count 0), no NVRTC, no cuBLAS.
    /// </summary>
    public static bool TryCreate(int ordinal, out DriverRuntime? runtime, out string reason)
    {
        runtime = null;
        CudaLibraries.EnsureResolver();
        if (!CudaLibraries.TryLoad("cuda", out _, out reason))
        {
            reason = $"no NVIDIA driver ({reason})";
            return false;
        }
        int result = cuInit(0);
        if (result != 0)
        {
            reason = $"no usable GPU: cuInit returned {result} ({Describe(result)})";
            return false;
        }
        Check(cuDeviceGetCount(out int count), "cuDeviceGetCount");
        if (ordinal >= count)
        {
            reason = count == 0 ? "no GPU: the driver reports no CUDA devices" : $"no GPU {ordinal}: the driver reports {count}";
            return false;
        }
        if (!Nvrtc.IsAvailable(out var nvrtc))
        {
            reason = $"no NVRTC ({nvrtc})";
            return false;
        }
        if (!CuBlas.IsAvailable(out var blas))
        {
            reason = $"no cuBLAS ({blas})";
            return false;
        }
        Check(cuDeviceGet(out int device, ordinal), "cuDeviceGet");
        runtime = new DriverRuntime(device);
        return true;
    }

    /// <summary>The GPU's name, e.g. "NVIDIA H100 80GB HBM3".</summary>
    public string DeviceName { get; }

    /// <summary>Compute capability (major, minor).</summary>
    public (int Major, int Minor) ComputeCapability { get; }

    /// <summary>Device memory in bytes.</summary>
    public long TotalMemory { get; }

    /// <summary>The driver's CUDA version (e.g. 12, 4).</summary>
    public (int Major, int Minor) DriverVersion { get; }

    /// <summary>What NVRTC compiles for: "sm_XY" (a cubin for this GPU) or "compute_XY" (PTX fallback).</summary>
    public string KernelTarget { get; }

    /// <inheritdoc/>
    public override string Name => "cuda";

    /// <inheritdoc/>
    public override string Description
    {
        get
        {
            var (nvMajor, nvMinor) = Nvrtc.Version;
            return $"GPU {_device}: {DeviceName}, compute capability {ComputeCapability.Major}.{ComputeCapability.Minor}, {MultiprocessorCount} SMs, " +
                   $"{TotalMemory / (1L << 30)} GiB, driver CUDA {DriverVersion.Major}.{DriverVersion.Minor}, NVRTC {nvMajor}.{nvMinor} → {KernelTarget}";
        }
    }

    /// <inheritdoc/>
    public override int MultiprocessorCount { get; }

    /// <inheritdoc/>
    public override int MaxGridYZ { get; }

    int GetAttribute(DeviceAttribute attribute)
    {
        Check(cuDeviceGetAttribute(out int value, attribute, _device), "cuDeviceGetAttribute");
        return value;
    }

    /// <summary>Makes the primary context current on the calling thread (once per thread).</summary>
    void MakeCurrent()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_currentContext == _context) return;
        Check(cuCtxSetCurrent(_context), "cuCtxSetCurrent");
        _currentContext = _context;
    }

    /// <inheritdoc/>
    protected override ulong AllocateCore(long bytes)
    {
        MakeCurrent();
        Check(cuMemAlloc_v2(out ulong address, (nuint)Math.Max(bytes, 1)), $"cuMemAlloc_v2 ({bytes} bytes)");
        return address;
    }

    /// <inheritdoc/>
    public override (long Free, long Total)? MemoryInfo()
    {
        MakeCurrent();
        Check(cuMemGetInfo_v2(out nuint free, out nuint total), "cuMemGetInfo_v2");
        return ((long)free, (long)total);
    }

    /// <inheritdoc/>
    protected override void FreeCore(ulong address)
    {
        RefuseWhileCapturing("freeing device memory");
        MakeCurrent();
        Check(cuMemFree_v2(address), "cuMemFree_v2");
    }

    /// <inheritdoc/>
    public override void CopyToDevice(ulong dst, void* src, long bytes)
    {
        RefuseWhileCapturing("a copy from host memory");
        MakeCurrent();
        Check(cuMemcpyHtoDAsync_v2(dst, src, (nuint)bytes, _stream), "cuMemcpyHtoDAsync_v2");
        Synchronize(); // the caller may reuse its (pageable) buffer as soon as we return
    }

    /// <inheritdoc/>
    public override void CopyToHost(void* dst, ulong src, long bytes)
    {
        RefuseWhileCapturing("a copy to host memory");
        MakeCurrent();
        Check(cuMemcpyDtoHAsync_v2(dst, src, (nuint)bytes, _stream), "cuMemcpyDtoHAsync_v2");
        Synchronize();
    }

    /// <inheritdoc/>
    public override void CopyDeviceToDevice(ulong dst, ulong src, long bytes)
    {
        MakeCurrent();
        Check(cuMemcpyDtoDAsync_v2(dst, src, (nuint)bytes, _stream), "cuMemcpyDtoDAsync_v2");
    }

    /// <summary>Page-locked host memory of <paramref name="bytes"/> (fast, truly asynchronous copies); free with
    /// <see cref="FreePinned"/>.</summary>
    public IntPtr AllocatePinned(long bytes)
    {
        MakeCurrent();
        Check(cuMemAllocHost_v2(out var host, (nuint)bytes), "cuMemAllocHost_v2");
        return host;
    }

    /// <summary>Frees memory from <see cref="AllocatePinned"/>.</summary>
    public void FreePinned(IntPtr host)
    {
        MakeCurrent();
        Check(cuMemFreeHost(host), "cuMemFreeHost");
    }

    /// <inheritdoc/>
    public override void Synchronize()
    {
        RefuseWhileCapturing("waiting for the device");
        MakeCurrent();
        Check(cuStreamSynchronize(_stream), "cuStreamSynchronize");
    }

    /// <summary>Runs <paramref name="work"/> (which queues on this stream) <paramref name="repeats"/> times between two
    /// recorded events; returns the mean milliseconds per repeat measured on the GPU.</summary>
    public override double TimeMilliseconds(Action work, int repeats)
    {
        RefuseWhileCapturing("timing");
        MakeCurrent();
        Check(cuEventCreate(out var start, 0), "cuEventCreate");
        Check(cuEventCreate(out var end, 0), "cuEventCreate");
        try
        {
            Check(cuEventRecord(start, _stream), "cuEventRecord");
            for (int i = 0; i < repeats; i++) work();
            Check(cuEventRecord(end, _stream), "cuEventRecord");
            Check(cuEventSynchronize(end), "cuEventSynchronize");
            return ElapsedMilliseconds(start, end) / repeats;
        }
        finally
        {
            cuEventDestroy_v2(start);
            cuEventDestroy_v2(end);
        }
    }

    /// <inheritdoc/>
    public override IKernelTimer CreateKernelTimer() => _timer ??= new EventTimer(this);

    EventTimer? _timer;

    /// <summary>Two events recorded on the stream around one call; the second is waited for.</summary>
    sealed class EventTimer : IKernelTimer
    {
        readonly DriverRuntime _runtime;
        readonly IntPtr _start, _end;

        public EventTimer(DriverRuntime runtime)
        {
            _runtime = runtime;
            runtime.MakeCurrent();
            Check(cuEventCreate(out _start, 0), "cuEventCreate");
            Check(cuEventCreate(out _end, 0), "cuEventCreate");
        }

        public void Start()
        {
            _runtime.RefuseWhileCapturing("timing a kernel");
            _runtime.MakeCurrent();
            Check(cuEventRecord(_start, _runtime._stream), "cuEventRecord");
        }

        public double Stop()
        {
            Check(cuEventRecord(_end, _runtime._stream), "cuEventRecord");
            Check(cuEventSynchronize(_end), "cuEventSynchronize");
            return ElapsedMilliseconds(_start, _end) / 1e3;
        }

        public void Destroy()
        {
            cuEventDestroy_v2(_start);
            cuEventDestroy_v2(_end);
        }
    }

    /// <inheritdoc/>
    protected override void Launch(CudaKernel kernel, Dim3 grid, Dim3 block, void** args, long* sizes, int count)
    {
        MakeCurrent();
        int result = cuLaunchKernel(Function(kernel), grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, 0, _stream, args, null);
        if (result != 0) Check(result, kernel.ToString()); // the name formatted only for the error, not at every launch
    }

    /// <summary>The driver's occupancy for this kernel's registers and static shared memory at this block size, asked
    /// once per kernel and size.</summary>
    public override int ResidentBlocks(CudaKernel kernel, int threadsPerBlock)
    {
        MakeCurrent();
        var function = Function(kernel);
        lock (_gate)
        {
            if (_residentBlocks.TryGetValue((kernel, threadsPerBlock), out int blocks)) return blocks;
            Check(cuOccupancyMaxActiveBlocksPerMultiprocessor(out blocks, function, threadsPerBlock, 0),
                $"cuOccupancyMaxActiveBlocksPerMultiprocessor ({kernel}, {threadsPerBlock} threads)");
            return _residentBlocks[(kernel, threadsPerBlock)] = Math.Max(1, blocks);
        }
    }

    /// <summary>The function handle of <paramref name="kernel"/>, loading its family's module on first use.</summary>
    IntPtr Function(CudaKernel kernel)
    {
        lock (_gate)
        {
            if (_functions.TryGetValue(kernel, out var function)) return function;
            string file = kernel.File;
            if (!KernelSources.FileOfKernel.TryGetValue(kernel.Name, out var defined) || defined != file)
                throw new InvalidOperationException($"no kernel named '{kernel.Name}' in cuda/{file}" + (defined == null ? "" : $" (it is in cuda/{defined})"));
            if (!_modules.TryGetValue(file, out var module))
            {
                fixed (byte* p = _images.Image(file)) Check(cuModuleLoadData(out module, p), $"cuModuleLoadData ({file}, {KernelTarget})");
                _modules[file] = module;
            }
            fixed (byte* name = Encoding.UTF8.GetBytes(kernel.Name + "\0"))
                Check(cuModuleGetFunction(out function, module, name), $"cuModuleGetFunction ({kernel})");
            _functions[kernel] = function;
            return function;
        }
    }

    /// <inheritdoc/>
    public override void GemmStridedBatched(bool transA, bool transB, int M, int N, int K, float alpha, GemmOperand A, int lda, long strideA,
        GemmOperand B, int ldb, long strideB, float beta, float* C, int ldc, long strideC, int batch, Precision precision = Precision.FP32)
    {
        MakeCurrent();
        A.CheckFor(precision, "GemmStridedBatched");
        B.CheckFor(precision, "GemmStridedBatched");
        if (precision is Precision.FP32 or Precision.TF32)
        {
            bool timed = StartProduct();
            _blas.GemmStridedBatched(transA, transB, M, N, K, alpha, A.Floats, lda, strideA, B.Floats, ldb, strideB, beta, C, ldc, strideC,
                batch, precision == Precision.TF32);
            if (timed) EndProduct("cuBLAS", precision, transA, transB, M, N, K, batch);
            return;
        }
        long spanA = GemmOperand.Span(transA ? K : M, transA ? M : K, lda, strideA, batch);
        long spanB = GemmOperand.Span(transB ? N : K, transB ? K : N, ldb, strideB, batch);
        var (lowA, lowB) = SixteenBitOperands(A, spanA, B, spanB);
        ConvertOperands(A, lowA, spanA, B, lowB, spanB, precision);
        bool timed16 = StartProduct(); // after the conversions, which WorkProfile times as kernels of their own
        _blas.GemmStridedBatched16(transA, transB, M, N, K, alpha, (void*)lowA, lda, strideA, (void*)lowB, ldb, strideB, beta, C, ldc,
            strideC, batch, precision == Precision.BF16);
        if (timed16) EndProduct("cuBLAS", precision, transA, transB, M, N, K, batch);
    }

    /// <inheritdoc/>
    /// <remarks>cuBLASLt with its bias epilogue (float32 bias; a 16-bit y straight from the accumulators); operands as
    /// for the GEMM: 16-bit ones read as kept, float32 ones converted first under bf16/fp16.</remarks>
    public override bool TryLinearProduct(GemmOperand x, GemmOperand w, float* bias, float* y, ushort* yPacked, int M, int N, int K, Precision precision)
    {
        if (!LinearEpilogues) return false;
        MakeCurrent();
        x.CheckFor(precision, "TryLinearProduct");
        w.CheckFor(precision, "TryLinearProduct");
        bool sixteenBitOutput = yPacked != null;
        if (sixteenBitOutput) precision.SixteenBitsFor("TryLinearProduct");
        void* output = sixteenBitOutput ? yPacked : y;
        _lt ??= new CuBlasLt(_stream, _blasWorkspace);
        bool ran, timed;
        if (precision is Precision.FP32 or Precision.TF32)
        {
            timed = StartProduct();
            ran = _lt.Linear(M, N, K, x.Floats, w.Floats, bias, output, false, precision);
        }
        else
        {
            long spanX = (long)M * K, spanW = (long)N * K;
            var (lowX, lowW) = SixteenBitOperands(x, spanX, w, spanW);
            if (!_lt.Offers(M, N, K, (void*)lowX, (void*)lowW, bias, output, sixteenBitOutput, precision)) return false; // nothing converted for nothing
            ConvertOperands(x, lowX, spanX, w, lowW, spanW, precision);
            timed = StartProduct();
            ran = _lt.Linear(M, N, K, (void*)lowX, (void*)lowW, bias, output, sixteenBitOutput, precision);
        }
        if (timed && ran) EndProduct("cuBLASLt", precision, false, true, M, N, K, 1, LinearEpilogue(bias != null, sixteenBitOutput, precision));
        if (ran) LinearProducts++;
        return ran;
    }

    CuBlasLt? _lt;

    /// <summary>What a Linear product's epilogue adds, for <see cref="CudaRuntime.WorkProfile"/>'s names.</summary>
    static string? LinearEpilogue(bool bias, bool sixteenBitOutput, Precision precision) => (bias, sixteenBitOutput) switch
    {
        (true, true) => $"bias, {precision.Name()} out",
        (true, false) => "bias",
        (false, true) => $"{precision.Name()} out",
        _ => null,
    };

    /// <inheritdoc/>
    /// <remarks>cuBLASLt's: no algorithm, a call it refused, or no handle on this machine.</remarks>
    public override IEnumerable<string> DeclinedLinearProducts => _lt?.Declined ?? [];

    /// <summary>Where a bf16/fp16 product reads its operands: a packed one as it is, a float32 one from the scratch its
    /// conversion (<see cref="ConvertOperands"/>) writes, A's first, B's after (same leading dimensions and strides).</summary>
    (nint A, nint B) SixteenBitOperands(GemmOperand A, long spanA, GemmOperand B, long spanB)
    {
        if (A.IsPacked) spanA = 0;
        if (B.IsPacked) spanB = 0;
        ulong low = spanA + spanB > 0 ? LowPrecisionScratch(2 * (spanA + spanB)) : 0;
        return (A.IsPacked ? (nint)A.Data : (nint)low, B.IsPacked ? (nint)B.Data : (nint)(low + (ulong)(2 * spanA)));
    }

    /// <summary>Queues the conversions of the float32 operands among A and B to <paramref name="precision"/> into
    /// <see cref="SixteenBitOperands"/>'s places.</summary>
    void ConvertOperands(GemmOperand A, nint lowA, long spanA, GemmOperand B, nint lowB, long spanB, Precision precision)
    {
        var convert = precision == Precision.BF16 ? CudaKernelHandles.Precision.ConvertToBf16 : CudaKernelHandles.Precision.ConvertToFp16;
        if (!A.IsPacked) LaunchGridStride(convert, spanA, (void*)lowA, A.Floats, spanA);
        if (!B.IsPacked) LaunchGridStride(convert, spanB, (void*)lowB, B.Floats, spanB);
    }

    ulong _lowScratch;
    long _lowScratchBytes;
    readonly List<ulong> _retiredScratch = []; // outgrown while graphs that use it lived: freed with the runtime

    /// <inheritdoc/>
    protected override void StartCapture()
    {
        MakeCurrent();
        Check(cuStreamBeginCapture_v2(_stream, StreamCaptureMode.Relaxed), "cuStreamBeginCapture_v2");
    }

    /// <inheritdoc/>
    protected override CudaGraph FinishCapture()
    {
        MakeCurrent();
        Check(cuStreamEndCapture(_stream, out var graph), "cuStreamEndCapture");
        try
        {
            Check(cuGraphInstantiateWithFlags(out var exec, graph, 0), "cuGraphInstantiateWithFlags");
            return new DriverGraph(this, graph, exec);
        }
        catch
        {
            cuGraphDestroy(graph);
            throw;
        }
    }

    /// <summary>A captured graph and its executable instance, launched on the runtime's stream.</summary>
    sealed class DriverGraph(DriverRuntime runtime, IntPtr graph, IntPtr exec) : CudaGraph
    {
        protected override void Replay()
        {
            runtime.MakeCurrent();
            Check(cuGraphLaunch(exec, runtime._stream), "cuGraphLaunch");
        }

        protected override void Release()
        {
            if (runtime._disposed) return;
            runtime.MakeCurrent();
            cuStreamSynchronize(runtime._stream); // a replay may still be running
            cuGraphExecDestroy(exec);
            cuGraphDestroy(graph);
        }
    }

    /// <summary>Device scratch of at least <paramref name="bytes"/> for 16-bit GEMM operands, grown as needed (the
    /// stream orders its reuse: the previous GEMM has read it before the next conversion writes it).</summary>
    ulong LowPrecisionScratch(long bytes)
    {
        if (bytes <= _lowScratchBytes) return _lowScratch;
        if (_lowScratch != 0 && (IsCapturing || LiveGraphs > 0)) _retiredScratch.Add(_lowScratch); // a graph may read it
        else if (_lowScratch != 0)
        {
            Synchronize();
            Free(_lowScratch);
        }
        // No scratch until the new one is allocated: when the device is full, the next (smaller) product asks again
        // instead of taking the freed address.
        (_lowScratch, _lowScratchBytes) = (0, 0);
        long size = bytes + bytes / 4;
        _lowScratch = Allocate(size);
        _lowScratchBytes = size;
        return _lowScratch;
    }

    /// <summary>Waits for the stream, then releases cuBLAS, the modules, the stream and the primary context.</summary>
    public override void Dispose()
    {
        if (_disposed) return;
        MakeCurrent();
        cuStreamSynchronize(_stream);
        if (_lowScratch != 0) Free(_lowScratch);
        foreach (var retired in _retiredScratch) Free(retired);
        _timer?.Destroy();
        _lt?.Dispose();
        _blas.Dispose();
        Free(_blasWorkspace);
        foreach (var module in _modules.Values) cuModuleUnload(module);
        cuStreamDestroy_v2(_stream);
        cuDevicePrimaryCtxRelease_v2(_device);
        _disposed = true;
        _currentContext = IntPtr.Zero;
    }
}
