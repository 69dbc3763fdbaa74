using System.Runtime.InteropServices;
using Engine.Kernels;
using Engine.Kernels.Cuda;

namespace Engine;

/// <summary>
/// A CUDA device: tensors live in its memory, every op is a launch of a kernel from cuda/*.cu (cuBLAS for GEMMs).
/// <see cref="TryOpen(out CudaDevice, out string, int, bool)"/> opens a real GPU; <see cref="TryOpenEmulated"/> opens the emulated device, which runs the
/// same kernel sources on CPU threads (host memory, CPU GEMM) so the CUDA path is executed without a GPU.
/// </summary>
public sealed unsafe class CudaDevice : Device, IDisposable
{
    readonly CudaKernels _kernels;

    CudaDevice(CudaRuntime runtime, CudaKernels kernels, bool instrumented)
        : base(instrumented ? new InstrumentedKernels(kernels) { Timer = runtime.CreateKernelTimer() } : kernels)
    {
        Runtime = runtime;
        runtime.Pool = new PoolOnTheRuntime(this);
        _kernels = kernels;
        TunesAttention = runtime is DriverRuntime;
    }

    /// <summary>The runtime underneath (driver or emulator).</summary>
    public CudaRuntime Runtime { get; }

    /// <summary>Opens GPU <paramref name="ordinal"/>; false with the reason (no driver, no GPU, no NVRTC, no cuBLAS).
    /// With <paramref name="instrumented"/> its kernels are an <see cref="InstrumentedKernels"/> whose timer reads GPU
    /// events (per-kernel profiles).</summary>
    public static bool TryOpen(out CudaDevice? device, out string reason, int ordinal = 0, bool instrumented = false)
    {
        device = null;
        if (!DriverRuntime.TryCreate(ordinal, out var runtime, out reason)) return false;
        device = new CudaDevice(runtime!, new CudaKernels(runtime!), instrumented);
        return true;
    }

    /// <summary>Opens the emulated CUDA device (building it with g++ on first use); false with the reason. With
    /// <paramref name="instrumented"/>, as for <see cref="TryOpen(out CudaDevice, out string, int, bool)"/>; its kernels
    /// size their grids for <paramref name="multiprocessors"/> (<see cref="EmulatedRuntime.MultiprocessorCount"/>).</summary>
    public static bool TryOpenEmulated(out CudaDevice? device, out string reason, bool instrumented = false, int multiprocessors = 1)
    {
        device = null;
        if (!EmulatedRuntime.TryCreate(out var runtime, out reason, multiprocessors)) return false;
        device = new CudaDevice(runtime!, new CudaKernels(runtime!), instrumented);
        return true;
    }

    /// <summary>Opens a CUDA backend by its command-line name: <c>cuda</c> (GPU 0), <c>cuda:N</c> (GPU N, as the driver
    /// counts them; <c>CUDA_VISIBLE_DEVICES</c> applies) or <c>emulated-cuda</c>; false with the reason when it is not
    /// available here.</summary>
    /// <exception cref="ArgumentException">The name is none of these.</exception>
    public static bool TryOpen(string name, out CudaDevice? device, out string reason, bool instrumented = false)
    {
        if (name == "emulated-cuda") return TryOpenEmulated(out device, out reason, instrumented);
        if (GpuOrdinal(name) is int ordinal) return TryOpen(out device, out reason, ordinal, instrumented);
        throw new ArgumentException($"unknown CUDA backend '{name}' (cuda, cuda:N or emulated-cuda)", nameof(name));
    }

    /// <summary>The GPU a device name asks for: 0 for <c>cuda</c>, N for <c>cuda:N</c>; null for any name not
    /// <c>cuda</c> or <c>cuda:</c>....</summary>
    /// <exception cref="ArgumentException"><c>cuda:</c> is followed by something other than a GPU's index.</exception>
    public static int? GpuOrdinal(string name)
    {
        if (name == "cuda") return 0;
        if (!name.StartsWith("cuda:", StringComparison.Ordinal)) return null;
        string index = name["cuda:".Length..];
        return int.TryParse(index, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int ordinal)
            ? ordinal
            : throw new ArgumentException($"device '{name}': cuda:N takes a GPU's index, a whole number from 0");
    }

    /// <inheritdoc/>
    public override DeviceMemory Allocate(long bytes) => new CudaMemory(Runtime, bytes);

    /// <inheritdoc/>
    internal override void Unwritten(DeviceMemory memory)
    {
        if (Runtime is EmulatedRuntime) EmulatedRuntime.Poison((ulong)memory.Pointer, memory.Bytes);
    }

    /// <inheritdoc/>
    public override void CopyFromHost(void* deviceDst, void* hostSrc, long bytes) => Runtime.CopyToDevice((ulong)deviceDst, hostSrc, bytes);

    /// <inheritdoc/>
    public override void CopyToHost(void* hostDst, void* deviceSrc, long bytes) => Runtime.CopyToHost(hostDst, (ulong)deviceSrc, bytes);

    /// <inheritdoc/>
    public override void Synchronize() => Runtime.Synchronize();

    /// <summary>False on a GPU: the fused attention kernels run on plain FMA units, while the unfused path's batched
    /// products run on cuBLAS (tensor cores in TF32, bf16 and fp16). On an H200, ViT-B/16 at batch 32 in bf16, the fused
    /// forward and backward took 82 of a 115 ms step (<c>peft bench --train-step --profile</c>). Where the fused kernels
    /// run on tensor cores, training measures both paths instead (<see cref="TunesAttention"/>). True on the emulated
    /// device, so CI keeps running the fused kernels.</summary>
    public override bool PrefersFusedAttention => Runtime is not DriverRuntime;

    /// <summary>Whether training picks the attention path by measuring it: the first time attention is trained at a
    /// shape (batch, tokens, heads, head dim, GEMM format, bias, mask) where the fused kernels run on tensor cores and
    /// keep 16 bits (<see cref="CudaKernels.FusedAttentionKeepsSixteenBits"/>: head dim 64 or 32 under bf16 or fp16 GEMMs,
    /// compute capability 8.0 and newer, no bias gradient), both paths run forward and backward on that layer's input
    /// (two warm-ups, then the median of three), and the fused one is kept for the shape
    /// when it takes no longer and its output and input gradient agree with the unfused path's within the format's
    /// bound; the fused path also keeps fewer bytes for backward. Each choice is raised once
    /// (<see cref="Device.ReportAttentionChoices"/>) and listed in <see cref="AttentionChoices"/>. Other shapes follow
    /// <see cref="PrefersFusedAttention"/>, and so does a shape first met while a graph is captured (nothing may be
    /// measured then). True on a GPU; false on the emulated device unless a test sets it. Calls that name a path, and
    /// <see cref="Ops.DefaultAttentionPath"/> set to one, are not measured. The choice depends on timings, so two runs
    /// may take different paths; name the path where runs must match bit for bit.</summary>
    public bool TunesAttention { get; set; }

    readonly Dictionary<(int B, int T, int Heads, int HeadDim, Precision Precision, bool Bias, int Windows), AttentionChoice> _attentionChoices = new();

    /// <summary>The attention paths chosen by measurement so far (<see cref="TunesAttention"/>), one per shape.</summary>
    public IReadOnlyList<AttentionChoice> AttentionChoices
    {
        get
        {
            lock (_attentionChoices) return [.. _attentionChoices.Values];
        }
    }

    /// <summary>Forgets the measured choices, so each shape is measured again when next trained.</summary>
    public void ForgetAttentionChoices()
    {
        lock (_attentionChoices) _attentionChoices.Clear();
    }

    /// <inheritdoc/>
    internal override bool TrainsAttentionFused(Tensor qkv, int heads, Tensor? bias, Tensor? mask, float scale)
    {
        int headDim = qkv.Shape[2] / 3 / heads;
        if (!TunesAttention || !_kernels.FusedAttentionKeepsSixteenBits(headDim, bias is { RequiresGrad: true })) return PrefersFusedAttention;
        var key = (qkv.Shape[0], qkv.Shape[1], heads, headDim, Kernels.GemmPrecision, bias != null, mask?.Shape[0] ?? 0);
        lock (_attentionChoices)
            if (_attentionChoices.TryGetValue(key, out var known)) return known.Fused;
        if (IsCapturing) return PrefersFusedAttention;
        var calls = TrainedAttentionCalls;
        AttentionChoice choice;
        try { choice = AttentionTuning.Measure(this, qkv, heads, bias, mask, scale); }
        finally { TrainedAttentionCalls = calls; } // the trials are not the run's calls
        lock (_attentionChoices) _attentionChoices[key] = choice;
        OnAttentionChosen(choice);
        return choice.Fused;
    }

    /// <summary>Also true on a GPU (compute capability 8.0 and newer) for head dim 64 or 32 under bf16 or fp16 GEMMs, where the
    /// fused forward runs on tensor cores (<see cref="CudaKernels.UsesTensorCoreAttention"/>).</summary>
    public override bool PrefersFusedAttentionForward(int headDim) => PrefersFusedAttention || _kernels.UsesTensorCoreAttention(headDim);

    /// <inheritdoc/>
    public override bool IsCapturing => Runtime.IsCapturing;

    Tensor? _graphSeedOffset; // one 64-bit value on the device, made before the first capture

    /// <inheritdoc/>
    internal override ulong* GraphSeedOffset => _graphSeedOffset == null ? null : (ulong*)_graphSeedOffset.Data;

    /// <summary>Sets the value that the dropout and drop-path kernels of captured graphs XOR into their seeds (0 at
    /// first): write a new one before each replay for new masks. Work that was not captured does not read it.</summary>
    public void SetGraphSeedOffset(ulong offset)
    {
        _graphSeedOffset ??= Tensor.PersistentZeros(this, 2);
        _graphSeedOffset.CopyFrom(MemoryMarshal.Cast<ulong, float>(new[] { offset }));
    }

    /// <summary>
    /// Records the device work <paramref name="work"/> queues into a graph without running it; <see cref="DeviceGraph.Replay"/>
    /// then queues all of it with one call. The work must stay on the device: host copies, waits and frees are refused
    /// while it is captured. Every replay uses the same device addresses: inputs are written into the captured input
    /// tensors before a replay, and results read from the captured outputs after it. Dropout and drop path read a seed
    /// offset from the device (<see cref="SetGraphSeedOffset"/>), so replays can draw new masks. The buffers the work
    /// rents from the pool stay the graph's until it is disposed.
    /// </summary>
    /// <exception cref="InvalidOperationException">The work did something a graph cannot replay (the message says what),
    /// or a capture is already under way.</exception>
    public DeviceGraph Capture(Action work)
    {
        if (_graphSeedOffset == null) SetGraphSeedOffset(0);
        var reservation = Pool.Reserve();
        try
        {
            Runtime.BeginCapture();
        }
        catch
        {
            reservation.Dispose();
            throw;
        }
        CudaGraph graph;
        try
        {
            work();
        }
        catch
        {
            reservation.EndRenting();
            try { Runtime.EndCapture().Dispose(); }
            catch (Exception e) when (e is CudaException or InvalidOperationException) { } // the capture is void anyway; report the cause
            reservation.Dispose();
            throw;
        }
        finally
        {
            reservation.EndRenting();
        }
        try
        {
            graph = Runtime.EndCapture();
        }
        catch
        {
            reservation.Dispose();
            throw;
        }
        return new DeviceGraph(graph, reservation);
    }

    /// <summary>Frees pooled buffers and the kernels' scratch, then the runtime.</summary>
    public void Dispose()
    {
        _graphSeedOffset?.Dispose();
        Pool.Trim();
        _kernels.Dispose();
        Runtime.Dispose();
    }

    /// <summary>The pool as the runtime sees it when an allocation finds the device full.</summary>
    sealed class PoolOnTheRuntime(CudaDevice device) : IDeviceMemoryPool
    {
        public long BytesInUse => device.BytesInUse;
        public long BytesCached => device.Pool.BytesCached;
        public long ReleaseCached() => device.Pool.ReleaseCached();
    }

    sealed class CudaMemory(CudaRuntime runtime, long bytes) : DeviceMemory
    {
        ulong _address = runtime.Allocate(bytes);
        public override void* Pointer => _address != 0 ? (void*)_address : throw new ObjectDisposedException(nameof(CudaMemory));
        public override long Bytes => bytes;
        public override void Dispose()
        {
            if (_address != 0) runtime.Free(_address);
            _address = 0;
        }
    }
}

/// <summary>Device work recorded by <see cref="CudaDevice.Capture"/>: one call queues all of it again, with the same
/// kernels, arguments and device addresses.</summary>
public sealed class DeviceGraph : IDisposable
{
    readonly CudaGraph _graph;
    readonly BufferPool.Reservation _buffers;

    internal DeviceGraph(CudaGraph graph, BufferPool.Reservation buffers)
    {
        _graph = graph;
        _buffers = buffers;
        ReservedBytes = buffers.Bytes;
    }

    /// <summary>Bytes of pooled device memory the graph's replays write, kept out of the pool while it lives.</summary>
    public long ReservedBytes { get; }

    /// <summary>Queues one replay (asynchronous on a GPU: read results with a host copy, which waits for it).</summary>
    public void Replay() => _graph.Launch();

    /// <summary>Releases the graph and gives its buffers back to the pool.</summary>
    public void Dispose()
    {
        _graph.Dispose();
        _buffers.Dispose();
    }
}
