using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Engine.Kernels.Cpu;

namespace Engine.Kernels.Cuda;

/// <summary>
/// The emulated CUDA device: every cuda/*.cu built with g++ against cuda/emu/cuemu.h into a native library whose
/// <c>cuemu_launch</c> looks like cuLaunchKernel (blocks shared among as many worker threads as the CPU kernels use,
/// <see cref="CpuParallel.Threads"/>; a block's threads as fibers). Host memory
/// stands in for device memory and the CPU GEMM for cuBLAS; everything else is the real kernel code. The library is
/// built once per source version into <see cref="CacheFolder"/>.
/// </summary>
public sealed unsafe class EmulatedRuntime : CudaRuntime
{
    /// <summary>The g++ flags the library is built with. Hidden visibility: only the launcher's entry points are
    /// exported, so two builds loaded in one process (another source version, a test's probe kernels) never bind to
    /// each other's inline variables. -O3 rather than -O2: the kernels' per-thread loops run about a quarter faster
    /// for 3 s more of build, with the same floating-point results (neither contracts nor reorders arithmetic).</summary>
    public const string CompilerFlags = "-std=c++20 -O3 -pthread -shared -fPIC -fvisibility=hidden -D__CUEMU__";

    /// <summary>g++ flags added to <see cref="CompilerFlags"/> from the environment variable <c>PEFT_CUEMU_CXXFLAGS</c>
    /// (part of the library's cache key): <c>tools/sanitize-emulator.sh</c> sets <c>-fsanitize=address</c> (every
    /// kernel's read or write outside its buffers is reported with the file and line) or <c>-fsanitize=undefined</c>.</summary>
    public static string ExtraCompilerFlags => Environment.GetEnvironmentVariable("PEFT_CUEMU_CXXFLAGS")?.Trim() ?? "";
    static readonly object BuildGate = new();

    readonly IntPtr _library;
    readonly delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, uint, int, void**, long*, int, byte*, int, int> _launch;
    readonly delegate* unmanaged<int, void> _setWorkers;
    readonly Dictionary<string, byte[]> _names = new();
    int _workers; // the worker count the library was last given

    EmulatedRuntime(string libraryPath, int multiprocessors)
    {
        LibraryPath = libraryPath;
        MultiprocessorCount = multiprocessors;
        _library = NativeLibrary.Load(libraryPath);
        _launch = (delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, uint, int, void**, long*, int, byte*, int, int>)
            NativeLibrary.GetExport(_library, "cuemu_launch");
        _setWorkers = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(_library, "cuemu_set_workers");
        var count = (delegate* unmanaged<int>)NativeLibrary.GetExport(_library, "cuemu_kernel_count");
        var name = (delegate* unmanaged<int, byte*>)NativeLibrary.GetExport(_library, "cuemu_kernel_name");
        for (int i = 0; i < count(); i++)
        {
            string kernel = Marshal.PtrToStringUTF8((IntPtr)name(i))!;
            _names[kernel] = Encoding.UTF8.GetBytes(kernel + "\0");
        }
    }

    /// <summary>The built library.</summary>
    public string LibraryPath { get; }

    /// <summary>The order this runtime's launches run threads and blocks in (ascending by default). Each order hides the
    /// data races the other shows (cuda/emu/cuemu.h): a kernel whose threads share values without the barriers it
    /// needs computes wrong results in one of the two, so its conformance case fails there (<c>peft selftest --device
    /// emulated-cuda --thread-order descending</c>); a race-free kernel gives the same bits in both.</summary>
    public EmulatedThreadOrder ThreadOrder { get; set; }

    /// <summary>The largest grid y and z this device accepts: a GPU's 65535 unless a test lowers it, so that small shapes
    /// take the paths only large ones take on a GPU (the fused attention's launches in chunks of images).</summary>
    public int GridLimit { get; set; } = 65535;

    /// <inheritdoc/>
    public override int MaxGridYZ => GridLimit;

    /// <summary>The blocks per multiprocessor that grid-stride kernels are sized to (<see cref="CudaRuntime.ResidentBlocks"/>):
    /// <see cref="CudaRuntime.DefaultResidentBlocks"/> for every kernel unless a test lowers it, so that the kernels
    /// run on the smaller grids a GPU gives those that use many registers.</summary>
    public int ResidentBlocksPerMultiprocessor { get; set; } = DefaultResidentBlocks;

    /// <inheritdoc/>
    public override int ResidentBlocks(CudaKernel kernel, int threadsPerBlock) => ResidentBlocksPerMultiprocessor;

    /// <summary>The kernels the library exports, by name.</summary>
    public IReadOnlyCollection<string> KernelNames => _names.Keys;

    /// <summary>Builds (or reuses) the emulator library and loads it; false with the reason when g++ is missing or
    /// the build fails. The kernels size their grids for <paramref name="multiprocessors"/> (see
    /// <see cref="MultiprocessorCount"/>).</summary>
    public static bool TryCreate(out EmulatedRuntime? runtime, out string reason, int multiprocessors = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(multiprocessors, 1);
        runtime = null;
        try
        {
            long? capacity = CapacityFromEnvironment();
            runtime = new EmulatedRuntime(Build(), multiprocessors) { MemoryCapacity = capacity };
            string fault = Environment.GetEnvironmentVariable(FaultVariable)?.Trim() ?? "";
            if (fault.Length > 0)
            {
                bool skips = fault.EndsWith(":skip", StringComparison.Ordinal);
                string kernel = skips ? fault[..^":skip".Length] : fault;
                if (!runtime._names.ContainsKey(kernel))
                    throw new InvalidOperationException($"{FaultVariable}='{fault}' names no kernel of this device (KERNEL or KERNEL:skip, " +
                        "KERNEL a __global__ function in cuda/*.cu, e.g. gelu_forward)");
                (runtime.FaultingKernel, runtime.FaultingKernelSkips) = (kernel, skips);
            }
            reason = "";
            return true;
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or DllNotFoundException)
        {
            reason = e.Message;
            return false;
        }
    }

    /// <summary>Writes the sources to a folder keyed by their hash and runs g++ once; returns the library path.</summary>
    static string Build()
    {
        var files = KernelSources.Files;
        string flags = $"{CompilerFlags} {ExtraCompilerFlags}".Trim();
        // A library built with ASan aborts the process when it loads unless ASan's runtime was loaded first.
        if (flags.Contains("-fsanitize=address") && !(Environment.GetEnvironmentVariable("LD_PRELOAD") ?? "").Contains("libasan"))
            throw new InvalidOperationException("PEFT_CUEMU_CXXFLAGS builds the emulated CUDA device with -fsanitize=address, which needs " +
                "LD_PRELOAD=$(g++ -print-file-name=libasan.so) (tools/sanitize-emulator.sh sets both)");
        string key = KernelSources.Hash(files.SelectMany(f => new[] { f.Key, f.Value }).Append(flags));
        string dir = Path.Combine(CacheFolder.For("cuemu"), key[..16]);
        string library = Path.Combine(dir, "libcuemu.so");
        lock (BuildGate)
        {
            if (File.Exists(library)) return library;
            Directory.CreateDirectory(Path.Combine(dir, "emu"));
            foreach (var (name, text) in files) File.WriteAllText(Path.Combine(dir, name), text);
            // One translation unit: every family, then the launcher with the list of kernels to register.
            var unity = new StringBuilder();
            foreach (var file in KernelSources.KernelFiles) unity.AppendLine($"#include \"{file}\"");
            unity.Append("#define CUEMU_KERNEL_LIST(X)");
            foreach (var kernel in KernelSources.FileOfKernel.Keys) unity.Append($" X({kernel})");
            unity.AppendLine().AppendLine("#include \"emu/launcher.h\"");
            File.WriteAllText(Path.Combine(dir, "all.cpp"), unity.ToString());

            string temporary = library + $".{Environment.ProcessId}.tmp";
            var start = new ProcessStartInfo("g++", $"{flags} -I. all.cpp -o {Path.GetFileName(temporary)}")
            {
                WorkingDirectory = dir,
                RedirectStandardError = true,
            };
            Process process;
            try
            {
                process = Process.Start(start)!;
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new InvalidOperationException($"the emulated CUDA device needs g++ (C++20) to build cuda/*.cu: {e.Message}", e);
            }
            string errors = process.StandardError.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
                throw new InvalidOperationException($"g++ failed to build the emulated CUDA device in {dir}:\n{errors}");
            File.Move(temporary, library, overwrite: true);
            return library;
        }
    }

    /// <inheritdoc/>
    public override string Name => "emulated-cuda";

    /// <inheritdoc/>
    public override string Description => $"emulated CUDA device on CPU threads ({_names.Count} kernels, " +
        (MultiprocessorCount > 1 ? $"grids sized for {MultiprocessorCount} multiprocessors, " : "") +
        (MemoryCapacity is long capacity ? $"{capacity >> 20} MiB of device memory ({MemoryVariable}), " : "") +
        (FaultingKernel is { } fault ? $"{fault} {(FaultingKernelSkips ? "never runs" : "faults on its first launch")} ({FaultVariable}), " : "") +
        $"{LibraryPath})";

    /// <summary>One multiprocessor unless the runtime was created with more: grid-stride kernels then run a few blocks,
    /// which keeps the emulation fast. With a GPU's count (132 for an H200) the kernels take the grids, reduction
    /// partials and column slices they take there, which one multiprocessor never reaches.</summary>
    public override int MultiprocessorCount { get; }

    /// <summary>The device memory this device pretends to have (null: as much as the host gives; the environment
    /// variable <see cref="MemoryVariable"/> sets it for every emulated device a process opens). An allocation past it
    /// fails as cuMemAlloc does on a full GPU (<see cref="CudaDriver.OutOfMemory"/>), so what runs out of memory there
    /// (a pool holding buffers of another batch size, an out-of-memory error in the middle of a step) runs out here
    /// too, and whether a run fits a GPU's memory can be tried without one.</summary>
    public long? MemoryCapacity { get; set; }

    /// <summary>The environment variable that gives emulated devices a memory size: bytes, or a whole number with K, M
    /// or G (powers of 1024), e.g. <c>PEFT_EMULATED_CUDA_MEMORY=24G</c>.</summary>
    public const string MemoryVariable = "PEFT_EMULATED_CUDA_MEMORY";

    /// <summary>The size <see cref="MemoryVariable"/> gives, null when it is unset or empty.</summary>
    /// <exception cref="InvalidOperationException">It is not a size; the message quotes it.</exception>
    static long? CapacityFromEnvironment()
    {
        string text = Environment.GetEnvironmentVariable(MemoryVariable)?.Trim() ?? "";
        if (text.Length == 0) return null;
        int shift = char.ToUpperInvariant(text[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, _ => 0 };
        string digits = shift > 0 ? text[..^1] : text;
        if (!long.TryParse(digits, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long value)
            || value <= 0 || value > long.MaxValue >> shift)
            throw new InvalidOperationException($"{MemoryVariable}='{text}' is not a memory size (bytes, or a whole number with K, M or G, e.g. 24G)");
        return value << shift;
    }

    /// <summary>The environment variable that names a kernel whose first launch faults (<see cref="FaultingKernel"/>)
    /// on every emulated device a process opens, e.g. <c>PEFT_EMULATED_CUDA_FAULT=sparse_weight_grad</c>; with
    /// <c>:skip</c> after the name the kernel never runs instead (<see cref="FaultingKernelSkips"/>).</summary>
    public const string FaultVariable = "PEFT_EMULATED_CUDA_FAULT";

    /// <summary>A kernel (its name in cuda/*.cu) whose first launch faults as a kernel that reads an illegal address
    /// does on a GPU: it does not run, the launch itself returns, and the call after it and every call from then on
    /// fail with CUDA_ERROR_ILLEGAL_ADDRESS (<see cref="CudaException.LosesContext"/>). This rehearses, without a GPU,
    /// what a faulting kernel does to a run: the case, step or row that met it, and what a new process can still do
    /// (the GPU kit's reruns). Null: no kernel faults.</summary>
    public string? FaultingKernel { get; set; }

    /// <summary>With <see cref="FaultingKernel"/>: the kernel does not run at any launch, and the context stays usable:
    /// its outputs keep what they held (NaN in fresh and pooled buffers here, <see cref="Poison"/>), as a kernel that
    /// computes nothing on some GPU leaves them. This rehearses a kernel that is wrong rather than faulting: the case
    /// that fails, the loss that diverges.</summary>
    public bool FaultingKernelSkips { get; set; }

    string? _faulted; // the kernel that faulted; every call from then on fails

    /// <summary>Throws the sticky error of a faulted kernel, naming <paramref name="call"/>, as the driver does.</summary>
    void ThrowIfFaulted(string call)
    {
        if (_faulted != null) throw Faulted(call);
    }

    /// <summary>Throws the sticky error for a launch of <paramref name="kernel"/> (its call named only then: launches
    /// allocate nothing managed).</summary>
    void ThrowIfFaulted(CudaKernel kernel)
    {
        if (_faulted != null) throw Faulted($"cuLaunchKernel ({kernel.Name})");
    }

    CudaException Faulted(string call) => new(call, CudaDriver.IllegalAddress,
        $"CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered (emulated: {FaultVariable}={_faulted})");

    /// <summary>Allocates host memory filled by <see cref="Poison"/>.</summary>
    protected override ulong AllocateCore(long bytes)
    {
        ThrowIfFaulted("cuMemAlloc_v2");
        if (AllocatedBytes + bytes > (MemoryCapacity ?? long.MaxValue))
            throw new CudaException($"cuMemAlloc_v2 ({bytes} bytes)", CudaDriver.OutOfMemory, "CUDA_ERROR_OUT_OF_MEMORY: out of memory");
        long size = Math.Max(bytes, 64);
        ulong address = (ulong)NativeMemory.AlignedAlloc((nuint)size, 256);
        Poison(address, size);
        return address;
    }

    /// <inheritdoc/>
    public override (long Free, long Total)? MemoryInfo() =>
        MemoryCapacity is long capacity ? (Math.Max(capacity - AllocatedBytes, 0), capacity) : null;

    /// <summary>Fills <paramref name="bytes"/> at <paramref name="address"/> with 0xFF: NaN in fp32, bf16 and fp16, -1
    /// in integers. Memory a GPU hands out holds whatever it held, often zeros or values a previous step left in the
    /// same buffer, which can hide a kernel that reads what nothing wrote; on the emulated device fresh allocations and
    /// every tensor's buffer (fresh or from the pool) start as NaN, so such a read fails its checks.</summary>
    public static void Poison(ulong address, long bytes) => NativeMemory.Fill((void*)address, (nuint)bytes, 0xFF);

    /// <inheritdoc/>
    protected override void FreeCore(ulong address)
    {
        RefuseWhileCapturing("freeing device memory");
        ThrowIfFaulted("cuMemFree_v2");
        NativeMemory.AlignedFree((void*)address);
    }

    /// <inheritdoc/>
    public override void CopyToDevice(ulong dst, void* src, long bytes)
    {
        RefuseWhileCapturing("a copy from host memory");
        ThrowIfFaulted("cuMemcpyHtoDAsync_v2");
        Buffer.MemoryCopy(src, (void*)dst, bytes, bytes);
    }

    /// <inheritdoc/>
    public override void CopyToHost(void* dst, ulong src, long bytes)
    {
        RefuseWhileCapturing("a copy to host memory");
        ThrowIfFaulted("cuMemcpyDtoHAsync_v2");
        Buffer.MemoryCopy((void*)src, dst, bytes, bytes);
    }

    /// <inheritdoc/>
    public override void CopyDeviceToDevice(ulong dst, ulong src, long bytes)
    {
        ThrowIfFaulted("cuMemcpyDtoDAsync_v2");
        if (_recording != null) _recording.Add(() => Buffer.MemoryCopy((void*)src, (void*)dst, bytes, bytes));
        else Buffer.MemoryCopy((void*)src, (void*)dst, bytes, bytes);
    }

    /// <inheritdoc/>
    public override void Synchronize()
    {
        RefuseWhileCapturing("waiting for the device");
        ThrowIfFaulted("cuStreamSynchronize");
    }

    List<Action>? _recording; // the work queued during a capture, in order

    /// <inheritdoc/>
    protected override void StartCapture() => _recording = [];

    /// <inheritdoc/>
    protected override CudaGraph FinishCapture()
    {
        var graph = new RecordedGraph([.. _recording!]);
        _recording = null;
        return graph;
    }

    /// <summary>A capture on the emulated device: the recorded launches, GEMMs and copies, run in order by each replay
    /// (the emulated stream is synchronous, so a replay returns when it is done).</summary>
    sealed class RecordedGraph(Action[] work) : CudaGraph
    {
        protected override void Replay()
        {
            foreach (var step in work) step();
        }

        protected override void Release() { }
    }

    /// <inheritdoc/>
    protected override void Launch(CudaKernel kernel, Dim3 grid, Dim3 block, void** args, long* sizes, int count)
    {
        if (!_names.TryGetValue(kernel.Name, out var name))
            throw new InvalidOperationException($"emulated CUDA device: no kernel named '{kernel.Name}' (expected in cuda/{kernel.File})");
        ThrowIfFaulted(kernel);
        if (_recording != null)
        {
            _recording.Add(RecordLaunch(kernel, grid, block, args, sizes, count));
            return;
        }
        Run(kernel, name, grid, block, args, sizes, count);
    }

    /// <summary>A launch kept for replay: the argument values are copied now, as cuLaunchKernel copies them into a
    /// captured kernel node.</summary>
    Action RecordLaunch(CudaKernel kernel, Dim3 grid, Dim3 block, void** args, long* sizes, int count)
    {
        var argSizes = new long[count];
        var values = new byte[Math.Max(1, Enumerable.Range(0, count).Sum(i => (int)sizes[i]))];
        for (int i = 0, offset = 0; i < count; offset += (int)sizes[i], i++)
        {
            argSizes[i] = sizes[i];
            new ReadOnlySpan<byte>(args[i], (int)sizes[i]).CopyTo(values.AsSpan(offset));
        }
        byte[] name = _names[kernel.Name];
        return () =>
        {
            void** pointers = stackalloc void*[count];
            fixed (byte* first = values)
            fixed (long* s = argSizes)
            {
                for (int i = 0, offset = 0; i < count; offset += (int)s[i], i++) pointers[i] = first + offset;
                Run(kernel, name, grid, block, pointers, s, count);
            }
        };
    }

    void Run(CudaKernel kernel, byte[] name, Dim3 grid, Dim3 block, void** args, long* sizes, int count)
    {
        ThrowIfFaulted(kernel);
        if (kernel.Name == FaultingKernel)
        {
            if (!FaultingKernelSkips) _faulted = kernel.Name; // the launch returns, as an asynchronous fault lets it on a GPU
            return;
        }
        if (_workers != CpuParallel.Threads) _setWorkers(_workers = CpuParallel.Threads); // blocks run on the engine's CPU threads
        byte* error = stackalloc byte[512];
        int result;
        fixed (byte* n = name)
            result = _launch(n, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, 0, ThreadOrder == EmulatedThreadOrder.Descending ? 1 : 0,
                args, sizes, count, error, 512);
        if (result != 0)
            throw new InvalidOperationException($"emulated launch of {kernel} failed: {Marshal.PtrToStringUTF8((IntPtr)error)}");
    }

    /// <inheritdoc/>
    /// <remarks>The CPU GEMM; below fp32 the operands are first rounded by precision.cu's kernel (so the device's own
    /// conversions are what every low-precision GEMM here checks), then multiplied in fp32.</remarks>
    public override void GemmStridedBatched(bool transA, bool transB, int M, int N, int K, float alpha, GemmOperand A, int lda, long strideA,
        GemmOperand B, int ldb, long strideB, float beta, float* C, int ldc, long strideC, int batch, Precision precision = Precision.FP32)
    {
        A.CheckFor(precision, "GemmStridedBatched");
        B.CheckFor(precision, "GemmStridedBatched");
        ThrowIfFaulted("cublasGemmStridedBatchedEx");
        if (_recording != null)
        {
            nint pc = (nint)C; // a lambda cannot capture pointers
            _recording.Add(() => GemmStridedBatched(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta,
                (float*)pc, ldc, strideC, batch, precision));
            return;
        }
        if (precision == Precision.FP32)
        {
            bool timed = StartProduct();
            CpuGemm.GemmStridedBatched(transA, transB, M, N, K, alpha, A.Floats, lda, strideA, B.Floats, ldb, strideB, beta, C, ldc, strideC, batch);
            if (timed) EndProduct("CPU GEMM", precision, transA, transB, M, N, K, batch);
            return;
        }
        using var a = Rounded(A, GemmOperand.Span(transA ? K : M, transA ? M : K, lda, strideA, batch), precision);
        using var b = Rounded(B, GemmOperand.Span(transB ? N : K, transB ? K : N, ldb, strideB, batch), precision);
        bool timedRounded = StartProduct(); // after the roundings, which WorkProfile times as kernels of their own
        CpuGemm.GemmStridedBatched(transA, transB, M, N, K, alpha, (float*)a.Pointer, lda, strideA, (float*)b.Pointer, ldb, strideB,
            beta, C, ldc, strideC, batch);
        if (timedRounded) EndProduct("CPU GEMM", precision, transA, transB, M, N, K, batch);
    }

    /// <inheritdoc/>
    /// <remarks>Emulates cuBLASLt's bias epilogue: the product as <see cref="GemmStridedBatched"/> computes it, held in
    /// host memory (never in y when y is 16-bit), then elementwise.cu's bias kernel sums and rounds it into y once, as
    /// the epilogue does from its accumulators.</remarks>
    public override bool TryLinearProduct(GemmOperand x, GemmOperand w, float* bias, float* y, ushort* yPacked, int M, int N, int K, Precision precision)
    {
        if (!LinearEpilogues) return false;
        ThrowIfFaulted("cublasLtMatmul");
        if (_recording != null)
        {
            nint pb = (nint)bias, py = (nint)y, pp = (nint)yPacked; // a lambda cannot capture pointers
            _recording.Add(() => TryLinearProduct(x, w, (float*)pb, (float*)py, (ushort*)pp, M, N, K, precision));
            return true;
        }
        LinearProducts++;
        int format = yPacked == null ? (int)Precision.FP32 : (int)precision.SixteenBitsFor("TryLinearProduct");
        using var scratch = yPacked == null ? null : new NativeBuffer((long)M * N * sizeof(float));
        float* product = scratch == null ? y : (float*)scratch.Pointer;
        GemmStridedBatched(false, true, M, N, K, 1f, x, K, 0, w, K, 0, 0f, product, N, 0, 1, precision);
        long n = (long)M * N;
        StandIn = true; // cuBLASLt's epilogue
        try
        {
            if (bias != null) LaunchGridStride(CudaKernelHandles.Elementwise.AddBias, n, y, yPacked, format, product, bias, (float*)null, M, N);
            else if (yPacked != null)
                LaunchGridStride(precision == Precision.BF16 ? CudaKernelHandles.Precision.ConvertToBf16 : CudaKernelHandles.Precision.ConvertToFp16,
                    n, yPacked, product, n);
        }
        finally
        {
            StandIn = false;
        }
        return true;
    }

    /// <summary>An operand's first <paramref name="span"/> values rounded to <paramref name="precision"/> by precision.cu's
    /// kernels (a packed one widened by them), so the device's own conversions are what every low-precision GEMM here
    /// checks.</summary>
    NativeBuffer Rounded(GemmOperand x, long span, Precision precision)
    {
        var wide = new NativeBuffer(span * sizeof(float));
        if (!x.IsPacked) LaunchGridStride(CudaKernelHandles.Precision.RoundToPrecision, span, (float*)wide.Pointer, x.Floats, span, (int)precision);
        else
        {
            StandIn = true; // cuBLAS reads a 16-bit operand as it is
            try
            {
                LaunchGridStride(precision == Precision.BF16 ? CudaKernelHandles.Precision.ConvertFromBf16 : CudaKernelHandles.Precision.ConvertFromFp16,
                    span, (float*)wide.Pointer, x.Halves, span);
            }
            finally
            {
                StandIn = false;
            }
        }
        return wide;
    }

    /// <summary>The library stays loaded for the process (its worker threads are parked in it).</summary>
    public override void Dispose() { }
}

/// <summary>The order in which the emulated device runs a launch's threads (each until its next barrier) and blocks.</summary>
public enum EmulatedThreadOrder
{
    /// <summary>Lowest thread rank and first block first: the order kernels have always run in here.</summary>
    Ascending,

    /// <summary>Highest thread rank and last block first.</summary>
    Descending,
}
