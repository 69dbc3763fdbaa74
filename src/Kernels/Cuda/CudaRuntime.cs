namespace Engine.Kernels.Cuda;

/// <summary>
/// What <see cref="CudaKernels"/> needs from a CUDA device: memory, host copies, kernel launches by name, and GEMM.
/// Two implementations: <see cref="DriverRuntime"/> (a real GPU through the driver API, NVRTC and cuBLAS) and
/// <see cref="EmulatedRuntime"/> (the same kernel sources built with g++ and run on CPU threads, host memory, the
/// CPU GEMM). Device addresses are 64-bit integers; the kernel interface carries them as pointers.
/// </summary>
public abstract unsafe class CudaRuntime : IDisposable
{
    /// <summary>Backend name: <c>cuda</c> or <c>emulated-cuda</c>.</summary>
    public abstract string Name { get; }

    /// <summary>One line describing the device (name, compute capability, driver, compiler).</summary>
    public abstract string Description { get; }

    /// <summary>Streaming multiprocessors; grid-stride kernels are sized to a few blocks per multiprocessor.</summary>
    public abstract int MultiprocessorCount { get; }

    /// <summary>The largest grid y and z a launch may use: 65535 on every GPU so far (grid x goes to 2³¹ − 1).</summary>
    public abstract int MaxGridYZ { get; }

    /// <summary>Allocates <paramref name="bytes"/> of device memory (uninitialised): tensors' buffers and the kernels'
    /// scratch alike. When the device is full, the <see cref="Pool"/>'s cached buffers are freed and the allocation is
    /// tried once more, as PyTorch's caching allocator does (not while a graph is captured, which may not free memory).</summary>
    /// <exception cref="DeviceOutOfMemoryException">It still does not fit.</exception>
    public ulong Allocate(long bytes)
    {
        ulong address = AllocateFreeingTheCache(bytes);
        lock (_allocations)
        {
            _allocations.Add(address, bytes);
            _allocated += bytes;
            _peakAllocated = Math.Max(_peakAllocated, _allocated);
        }
        return address;
    }

    ulong AllocateFreeingTheCache(long bytes)
    {
        try
        {
            return AllocateCore(bytes);
        }
        catch (CudaException full) when (full.Code == CudaDriver.OutOfMemory)
        {
            long freed = IsCapturing || Pool == null ? 0 : Pool.ReleaseCached();
            if (freed > 0)
                try
                {
                    return AllocateCore(bytes);
                }
                catch (CudaException again) when (again.Code == CudaDriver.OutOfMemory)
                {
                    full = again;
                }
            throw new DeviceOutOfMemoryException(Name, bytes, Pool?.BytesInUse ?? 0, Pool?.BytesCached ?? 0, freed, MemoryInfoIfKnown(), full);
        }
    }

    /// <summary>Frees memory from <see cref="Allocate"/>. After a kernel fault lost the context
    /// (<see cref="CudaException.LosesContext"/>) its memory is gone with it: the free does nothing and does not throw,
    /// so the disposals that follow a fault never hide the error that reports it.</summary>
    /// <exception cref="InvalidOperationException">The address is not an allocation of this device (freed twice?), or
    /// a graph is being captured.</exception>
    public void Free(ulong address)
    {
        lock (_allocations)
            if (!_allocations.ContainsKey(address))
                throw new InvalidOperationException($"{Name}: freeing 0x{address:x}, which is not an allocation of this device (freed twice?)");
        try
        {
            FreeCore(address);
        }
        catch (CudaException lost) when (lost.LosesContext)
        {
        }
        lock (_allocations)
        {
            _allocated -= _allocations[address];
            _allocations.Remove(address);
        }
    }

    readonly Dictionary<ulong, long> _allocations = new(); // address → bytes
    long _allocated, _peakAllocated;

    /// <summary>Bytes of device memory allocated through <see cref="Allocate"/> and not yet freed: tensors, the pool's
    /// cached buffers and the kernels' scratch (what the device must hold, short of the CUDA context and the libraries'
    /// own memory).</summary>
    public long AllocatedBytes
    {
        get { lock (_allocations) return _allocated; }
    }

    /// <summary>The most <see cref="AllocatedBytes"/> has been since the runtime was made or
    /// <see cref="ResetPeakAllocated"/> (what PyTorch calls the peak reserved memory).</summary>
    public long PeakAllocatedBytes
    {
        get { lock (_allocations) return _peakAllocated; }
    }

    /// <summary>Starts <see cref="PeakAllocatedBytes"/> again from what is allocated now.</summary>
    public void ResetPeakAllocated()
    {
        lock (_allocations) _peakAllocated = _allocated;
    }

    /// <summary><see cref="MemoryInfo"/>, or null when asking fails too (the out-of-memory error is the one to report).</summary>
    (long Free, long Total)? MemoryInfoIfKnown()
    {
        try
        {
            return MemoryInfo();
        }
        catch (CudaException)
        {
            return null;
        }
    }

    /// <summary>The backend's allocation; a full device throws <see cref="CudaException"/> with
    /// <see cref="CudaDriver.OutOfMemory"/>.</summary>
    protected abstract ulong AllocateCore(long bytes);

    /// <summary>The engine's buffers on this device (its pool), which <see cref="Allocate"/> asks to free its cache when
    /// the device is full and names in the error when that is not enough; null: nothing is cached.</summary>
    public IDeviceMemoryPool? Pool { get; set; }

    /// <summary>The backend's free.</summary>
    protected abstract void FreeCore(ulong address);

    /// <summary>Free and total device memory in bytes, or null where the device has no fixed size (the emulated device
    /// unless <see cref="EmulatedRuntime.MemoryCapacity"/> gives it one).</summary>
    public abstract (long Free, long Total)? MemoryInfo();

    /// <summary>Copies host → device; returns when the host buffer may be reused.</summary>
    public abstract void CopyToDevice(ulong dst, void* src, long bytes);

    /// <summary>Copies device → host after all queued work; returns when the data is in <paramref name="dst"/>.</summary>
    public abstract void CopyToHost(void* dst, ulong src, long bytes);

    /// <summary>Queues a device-to-device copy (the bandwidth yardstick of the benchmarks).</summary>
    public abstract void CopyDeviceToDevice(ulong dst, ulong src, long bytes);

    /// <summary>Waits for all queued work.</summary>
    public abstract void Synchronize();

    /// <summary>Whether the CUDA context is lost (<see cref="CudaException.LosesContext"/>), found by waiting for the
    /// device: after a failure whose own error does not say, such as a cuBLAS status that a faulted kernel caused.
    /// <paramref name="error"/> is the driver's error when it is; other failures of the wait are not this question's.</summary>
    public bool ContextLost(out CudaException? error)
    {
        error = null;
        if (IsCapturing) return false; // a wait is refused during a capture; the capture's own failure says enough
        try
        {
            Synchronize();
        }
        catch (CudaException e) when (e.LosesContext)
        {
            error = e;
        }
        return error != null;
    }

    // ---------------------------------------------------------------- graphs

    /// <summary>True between <see cref="BeginCapture"/> and <see cref="EndCapture"/>: launches, GEMMs and device-to-device
    /// copies are recorded, not run, and host copies and waits are refused.</summary>
    public bool IsCapturing { get; private set; }

    /// <summary>Graphs made by <see cref="EndCapture"/> and not yet disposed (device scratch they may read is kept).</summary>
    protected int LiveGraphs { get; private set; }

    /// <summary>Starts recording the work queued from now on (a CUDA stream capture in relaxed mode on a GPU: device
    /// memory may still be allocated, nothing may be freed or read back).</summary>
    public void BeginCapture()
    {
        if (IsCapturing) throw new InvalidOperationException($"{Name}: a capture is already under way");
        StartCapture();
        IsCapturing = true;
    }

    /// <summary>Ends the recording and returns the graph of everything queued since <see cref="BeginCapture"/>; nothing
    /// of it has run yet. Dispose the graph to release it.</summary>
    public CudaGraph EndCapture()
    {
        if (!IsCapturing) throw new InvalidOperationException($"{Name}: no capture is under way");
        IsCapturing = false;
        var graph = FinishCapture();
        LiveGraphs++;
        graph.Disposed += () => LiveGraphs--;
        return graph;
    }

    /// <summary>Starts the backend's recording.</summary>
    protected abstract void StartCapture();

    /// <summary>Ends the backend's recording (also when the captured work threw: the caller disposes the graph).</summary>
    protected abstract CudaGraph FinishCapture();

    /// <summary>Throws when a capture is under way: <paramref name="what"/> would read or write host memory or wait
    /// for the device, which a replayed graph cannot do.</summary>
    protected void RefuseWhileCapturing(string what)
    {
        if (IsCapturing)
            throw new InvalidOperationException(
                $"{Name}: {what} while a CUDA graph is being captured; the captured work must stay on the device (read results after a replay)");
    }

    /// <summary>Runs <paramref name="work"/> (which queues device work) <paramref name="repeats"/> times and returns the
    /// mean milliseconds per repeat: host clock around a synchronised run here, GPU events on a real device.</summary>
    public virtual double TimeMilliseconds(Action work, int repeats)
    {
        Synchronize();
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        for (int i = 0; i < repeats; i++) work();
        Synchronize();
        return System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds / repeats;
    }

    /// <summary>A timer of single kernel calls (<see cref="InstrumentedKernels.Timer"/>): the host clock between two
    /// waits for the device here, GPU events on a real device.</summary>
    public virtual IKernelTimer CreateKernelTimer() => new HostKernelTimer(this);

    sealed class HostKernelTimer(CudaRuntime runtime) : IKernelTimer
    {
        long _start;

        public void Start()
        {
            runtime.Synchronize();
            _start = System.Diagnostics.Stopwatch.GetTimestamp();
        }

        public double Stop()
        {
            runtime.Synchronize();
            return System.Diagnostics.Stopwatch.GetElapsedTime(_start).TotalSeconds;
        }
    }

    /// <summary>Queues <paramref name="kernel"/> (from <see cref="CudaKernelHandles"/>). args[i] points at argument i,
    /// sizes[i] is its size in bytes.</summary>
    protected abstract void Launch(CudaKernel kernel, Dim3 grid, Dim3 block, void** args, long* sizes, int count);

    /// <summary>Queues kernel <paramref name="kernel"/> with the given arguments; allocates nothing managed. A grid or
    /// block outside CUDA's limits (grid x to 2³¹ − 1, y and z to <see cref="MaxGridYZ"/>; blocks of at most 1024
    /// threads, z at most 64) is refused here, on the emulated device as on a GPU, with the kernel and the shape
    /// named.</summary>
    public void Launch(CudaKernel kernel, Dim3 grid, Dim3 block, params ReadOnlySpan<KernelArg> args)
    {
        CheckLaunchShape(kernel, grid, block);
        void** pointers = stackalloc void*[args.Length];
        long* sizes = stackalloc long[args.Length];
        fixed (KernelArg* first = args)
        {
            for (int i = 0; i < args.Length; i++)
            {
                pointers[i] = first[i].Address(first + i);
                sizes[i] = first[i].Size;
            }
            if (WorkProfile is { } profile)
            {
                profile.Timer.Start();
                Launch(kernel, grid, block, pointers, sizes, args.Length);
                profile.Add(StandIn ? $"{kernel.Name} (emulator only)" : kernel.Name, profile.Timer.Stop(), 0, StandIn);
            }
            else Launch(kernel, grid, block, pointers, sizes, args.Length);
        }
    }

    /// <summary>While set, every kernel launch and library product is timed on its own and added to it by name (what
    /// <c>peft bench --train-step --profile</c> prints as the device's work); null, as it starts: nothing is timed.</summary>
    public DeviceWorkProfile? WorkProfile { get; set; }

    /// <summary>True while the emulated device launches kernels that stand in for a library's own work (which a GPU
    /// does inside the library call): <see cref="WorkProfile"/> marks them "(emulator only)".</summary>
    protected bool StandIn { get; set; }

    /// <summary>Starts timing a library product for <see cref="WorkProfile"/>; false (nothing started) when it is null.
    /// A true answer must be followed by <see cref="EndProduct"/> once the product is queued.</summary>
    protected bool StartProduct()
    {
        if (WorkProfile is not { } profile) return false;
        profile.Timer.Start();
        return true;
    }

    /// <summary>Adds the product <see cref="StartProduct"/> timed to <see cref="WorkProfile"/>, named by its library,
    /// precision, transposes (N or T for A, then B, as the row-major call gives them), shape and batch, and what its
    /// epilogue adds (null: nothing).</summary>
    protected void EndProduct(string library, Precision precision, bool transA, bool transB, int M, int N, int K, int batch = 1, string? epilogue = null)
    {
        var profile = WorkProfile!;
        double seconds = profile.Timer.Stop();
        string name = $"{library} {precision.Name()} {(transA ? 'T' : 'N')}{(transB ? 'T' : 'N')} {M}×{N}×{K}" + (batch > 1 ? $" ×{batch}" : "") +
                      (epilogue == null ? "" : $", {epilogue}");
        profile.Add(name, seconds, 2.0 * M * N * K * batch);
    }

    void CheckLaunchShape(CudaKernel kernel, Dim3 grid, Dim3 block)
    {
        ulong threads = (ulong)block.X * block.Y * block.Z;
        bool gridFits = grid.X is >= 1 and <= int.MaxValue && grid.Y >= 1 && grid.Y <= MaxGridYZ && grid.Z >= 1 && grid.Z <= MaxGridYZ;
        bool blockFits = threads is >= 1 and <= 1024 && block.Z <= 64;
        if (!gridFits || !blockFits)
            throw new ArgumentException($"{Name}: kernel {kernel} launched with grid ({grid.X}, {grid.Y}, {grid.Z}) and block ({block.X}, " +
                $"{block.Y}, {block.Z}), outside CUDA's limits (grid x 1 to 2³¹ − 1, y and z 1 to {MaxGridYZ}; 1 to 1024 threads a block, z at most 64)");
    }

    /// <summary>Row-major GEMM, same contract as <see cref="IKernels.Gemm"/>, operands in <paramref name="precision"/>.</summary>
    public void Gemm(bool transA, bool transB, int M, int N, int K, float alpha, GemmOperand A, int lda, GemmOperand B, int ldb,
        float beta, float* C, int ldc, Precision precision = Precision.FP32) =>
        GemmStridedBatched(transA, transB, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1, precision);

    /// <summary>Row-major strided batched GEMM, same contract as <see cref="IKernels.GemmStridedBatched"/>, operands in
    /// <paramref name="precision"/> (rounded to it, fp32 accumulation and results); a packed operand (bf16 or fp16 only)
    /// is read as it is.</summary>
    public abstract void GemmStridedBatched(bool transA, bool transB, int M, int N, int K, float alpha, GemmOperand A, int lda, long strideA,
        GemmOperand B, int ldb, long strideB, float beta, float* C, int ldc, long strideC, int batch, Precision precision = Precision.FP32);

    /// <summary>Whether <see cref="TryLinearProduct"/> may run (true unless turned off, to compare against the GEMM and
    /// its bias pass).</summary>
    public bool LinearEpilogues { get; set; } = true;

    /// <summary>
    /// A Linear layer's product in one call, the bias added in the GEMM's epilogue: row-major y[M, N] = x[M, K]·w[N, K]ᵀ
    /// (+ bias[N] when not null), fp32 accumulation, operands as <see cref="GemmStridedBatched"/> takes them, written into
    /// <paramref name="y"/> in float32 or, when <paramref name="yPacked"/> is given (y null), in the 16-bit
    /// <paramref name="precision"/> straight from the accumulators: the values of the GEMM then a bias pass (sum in
    /// float32, rounded once), without the float32 product written and read again. Returns false, queueing nothing, when
    /// <see cref="LinearEpilogues"/> is off or the device offers no such product for these operands (the caller runs
    /// the GEMM and its own bias pass).
    /// </summary>
    public abstract bool TryLinearProduct(GemmOperand x, GemmOperand w, float* bias, float* y, ushort* yPacked, int M, int N, int K, Precision precision);

    /// <summary>Linear products <see cref="TryLinearProduct"/> has run (queued; on the emulated device, replays of
    /// captured ones too): whether the epilogue ran at all.</summary>
    public long LinearProducts { get; protected set; }

    /// <summary>The Linear products the device declined (<see cref="TryLinearProduct"/> returned false with the
    /// epilogues on), one line each, "M×N×K ..." then the reason.</summary>
    public virtual IEnumerable<string> DeclinedLinearProducts => [];

    /// <summary>Why the device declined an M×N×K Linear product, or null when it declined none of that shape.</summary>
    public string? DeclinedLinearProduct(int M, int N, int K) =>
        DeclinedLinearProducts.FirstOrDefault(d => d.StartsWith($"{M}×{N}×{K} ", StringComparison.Ordinal));

    /// <summary>A 1-D grid-stride launch of 256-thread blocks over <paramref name="n"/> items.</summary>
    protected void LaunchGridStride(CudaKernel kernel, long n, params ReadOnlySpan<KernelArg> args)
    {
        if (n > 0) Launch(kernel, GridStrideBlocks(kernel, n, 256), 256, args);
    }

    /// <summary>The base answer of <see cref="ResidentBlocks"/>: as many 256-thread blocks as a multiprocessor's 2048
    /// threads hold, for kernels of at most 32 registers a thread.</summary>
    public const int DefaultResidentBlocks = 8;

    /// <summary>How many blocks of <paramref name="threadsPerBlock"/> threads of <paramref name="kernel"/> one
    /// multiprocessor runs at once, as its registers and shared memory allow (at least 1). The base answer is
    /// <see cref="DefaultResidentBlocks"/>; a GPU asks its driver.</summary>
    public virtual int ResidentBlocks(CudaKernel kernel, int threadsPerBlock) => DefaultResidentBlocks;

    /// <summary>The grid of a kernel whose blocks stride over <paramref name="threads"/> threads' work: one block per
    /// <paramref name="threadsPerBlock"/> threads, at most one wave of the blocks the multiprocessors hold at once
    /// (<see cref="ResidentBlocks"/>). More would run as a second, partly empty wave: 8 blocks per multiprocessor of a
    /// kernel of 48 registers a thread, which fits 5, ran as 5 and then 3.
    /// Elementwise and row kernels only: what they compute does not depend on the grid.</summary>
    public int GridStrideBlocks(CudaKernel kernel, long threads, int threadsPerBlock)
    {
        long wave = (long)Math.Max(1, MultiprocessorCount) * Math.Max(1, ResidentBlocks(kernel, threadsPerBlock));
        return (int)Math.Clamp((threads + threadsPerBlock - 1) / threadsPerBlock, 1, wave);
    }

    /// <inheritdoc/>
    public abstract void Dispose();
}

/// <summary>Work recorded by <see cref="CudaRuntime.BeginCapture"/> … <see cref="CudaRuntime.EndCapture"/>, replayed as a
/// whole with one call: the same kernels, arguments and device addresses every time (a CUDA graph on a GPU).</summary>
public abstract class CudaGraph : IDisposable
{
    bool _disposed;

    /// <summary>Queues one replay of the recorded work on the runtime's stream.</summary>
    public void Launch()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Replay();
    }

    /// <summary>Queues the recorded work.</summary>
    protected abstract void Replay();

    /// <summary>Releases the backend's graph.</summary>
    protected abstract void Release();

    internal event Action? Disposed;

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Release();
        Disposed?.Invoke();
    }
}

/// <summary>What the engine holds on a device, for <see cref="CudaRuntime.Allocate"/>.</summary>
public interface IDeviceMemoryPool
{
    /// <summary>Bytes of tensor storage in use.</summary>
    long BytesInUse { get; }

    /// <summary>Bytes of free buffers kept for reuse.</summary>
    long BytesCached { get; }

    /// <summary>Frees the cached buffers once the queued work that may still read them is done; returns the bytes freed.</summary>
    long ReleaseCached();
}
