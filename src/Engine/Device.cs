using Engine.Kernels;
using Engine.Kernels.Cpu;

namespace Engine;

/// <summary>
/// A compute device: it owns memory, copies to and from the host, and runs one backend's kernels. Tensors on a
/// device are only touched through explicit host copies, so nothing above this layer assumes host memory.
/// </summary>
public abstract unsafe class Device
{
    /// <summary>Creates a device that runs <paramref name="kernels"/>.</summary>
    protected Device(IKernels kernels)
    {
        Kernels = kernels;
        Pool = new BufferPool(this);
    }

    /// <summary>The default CPU device (our GEMM, all processors).</summary>
    public static CpuDevice Cpu { get; } = new(new CpuKernels());

    /// <summary>Name used on the command line and in tests.</summary>
    public string Name => Kernels.Name;

    /// <summary>The backend's kernels (possibly wrapped, e.g. by <see cref="InstrumentedKernels"/>).</summary>
    public IKernels Kernels { get; }

    /// <summary>Reuses freed buffers by exact size so training steps stop allocating after the first.</summary>
    public BufferPool Pool { get; }

    long _owned, _peak;

    /// <summary>Bytes of live tensor storage: pooled buffers in use plus tensors that own their memory (parameters).</summary>
    public long BytesInUse => Pool.BytesInUse + Interlocked.Read(ref _owned);

    /// <summary>The most <see cref="BytesInUse"/> has been since the device was made or <see cref="ResetPeak"/> (what
    /// PyTorch calls the peak allocated memory; the pool's cached buffers come on top).</summary>
    public long PeakBytesInUse => Interlocked.Read(ref _peak);

    /// <summary>Starts <see cref="PeakBytesInUse"/> again from what is in use now.</summary>
    public void ResetPeak() => Interlocked.Exchange(ref _peak, BytesInUse);

    /// <summary>Counts owned storage coming (positive) or going (negative), and raises the peak.</summary>
    internal void NoteOwned(long bytes)
    {
        Interlocked.Add(ref _owned, bytes);
        NotePeak();
    }

    internal void NotePeak()
    {
        long now = BytesInUse, peak;
        while (now > (peak = Interlocked.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, now, peak) != peak) { }
    }

    /// <summary>Allocates raw device memory (uninitialised).</summary>
    /// <exception cref="DeviceOutOfMemoryException">The device has no room for it (a CUDA device first frees the pool's
    /// cached buffers and tries once more: <see cref="BufferPool.CacheReleases"/>).</exception>
    public abstract DeviceMemory Allocate(long bytes);

    /// <summary>Called on each buffer a new tensor storage takes, fresh or from the pool, before anything writes it.
    /// Nothing happens here; the emulated CUDA device fills it with NaN bytes (<see cref="Engine.Kernels.Cuda.EmulatedRuntime.Poison"/>).</summary>
    internal virtual void Unwritten(DeviceMemory memory) { }

    /// <summary>Copies <paramref name="bytes"/> from host memory to this device.</summary>
    public abstract void CopyFromHost(void* deviceDst, void* hostSrc, long bytes);

    /// <summary>Copies <paramref name="bytes"/> from this device to host memory.</summary>
    public abstract void CopyToHost(void* hostDst, void* deviceSrc, long bytes);

    /// <summary>Whether attention runs fused here unless a call says otherwise (<see cref="Ops.Attention"/>): true where
    /// the fused kernels are the faster path (the CPU; the emulated CUDA device, which keeps them covered).</summary>
    public virtual bool PrefersFusedAttention => true;

    /// <summary>Whether attention with heads of <paramref name="headDim"/> runs fused here for inference (nothing recorded
    /// for backward) unless a call says otherwise: <see cref="PrefersFusedAttention"/>, or where the fused forward runs
    /// on tensor cores.</summary>
    public virtual bool PrefersFusedAttentionForward(int headDim) => PrefersFusedAttention;

    /// <summary>Whether <see cref="Ops.Attention"/> runs fused for this training call (something is recorded for
    /// backward) unless the call says otherwise: <see cref="PrefersFusedAttention"/>, or, on a device that measures it,
    /// the path it measured faster for this shape (<see cref="CudaDevice.TunesAttention"/>).</summary>
    internal virtual bool TrainsAttentionFused(Tensor qkv, int heads, Tensor? bias, Tensor? mask, float scale) => PrefersFusedAttention;

    Action<AttentionChoice>? _attentionChosen;

    /// <summary>Calls <paramref name="report"/> each time this device chooses an attention path for a training shape by
    /// timing both (<see cref="CudaDevice.TunesAttention"/>; once per shape), until the returned handle is disposed: for
    /// a run's log.</summary>
    public IDisposable ReportAttentionChoices(Action<AttentionChoice> report)
    {
        _attentionChosen += report;
        return new Subscription(() => _attentionChosen -= report);
    }

    sealed class Subscription(Action end) : IDisposable
    {
        public void Dispose() => end();
    }

    /// <summary>Tells the <see cref="ReportAttentionChoices"/> callers.</summary>
    protected void OnAttentionChosen(AttentionChoice choice) => _attentionChosen?.Invoke(choice);

    /// <summary>Attention calls recorded for backward on this device so far, by the path they took (a measurement's trial
    /// runs not counted): what a benchmark reports a step ran.</summary>
    public (long Fused, long Unfused) TrainedAttentionCalls { get; internal set; }

    internal void CountTrainedAttention(bool fused)
    {
        var (f, u) = TrainedAttentionCalls;
        TrainedAttentionCalls = fused ? (f + 1, u) : (f, u + 1);
    }

    /// <summary>Waits until queued work is done (no-op on the CPU).</summary>
    public virtual void Synchronize() { }

    /// <summary>True while work on this device is being captured into a graph (<see cref="CudaDevice.Capture"/>): ops
    /// whose launch arguments would have to change from one replay to the next refuse to run.</summary>
    public virtual bool IsCapturing => false;

    /// <summary>While capturing: the device address of the seed offset that stochastic ops read (see
    /// <see cref="CudaDevice.SetGraphSeedOffset"/>); null otherwise.</summary>
    internal virtual ulong* GraphSeedOffset => null;

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>A block of device memory; the owner frees it exactly once.</summary>
public abstract unsafe class DeviceMemory : IDisposable
{
    /// <summary>Device address.</summary>
    public abstract void* Pointer { get; }

    /// <summary>Size in bytes.</summary>
    public abstract long Bytes { get; }

    /// <inheritdoc/>
    public abstract void Dispose();
}

/// <summary>The CPU device: 64-byte aligned native memory and <see cref="CpuKernels"/>.</summary>
public sealed unsafe class CpuDevice : Device
{
    /// <summary>Creates a CPU device over the given kernels (e.g. an instrumented or OpenBLAS-backed set).</summary>
    public CpuDevice(IKernels kernels) : base(kernels) { }

    /// <inheritdoc/>
    public override DeviceMemory Allocate(long bytes)
    {
        try
        {
            return new CpuMemory(bytes);
        }
        catch (OutOfMemoryException e)
        {
            throw new DeviceOutOfMemoryException(Name, bytes, BytesInUse, Pool.BytesCached, 0, null, e);
        }
    }

    /// <inheritdoc/>
    public override void CopyFromHost(void* deviceDst, void* hostSrc, long bytes) => Buffer.MemoryCopy(hostSrc, deviceDst, bytes, bytes);

    /// <inheritdoc/>
    public override void CopyToHost(void* hostDst, void* deviceSrc, long bytes) => Buffer.MemoryCopy(deviceSrc, hostDst, bytes, bytes);

    sealed class CpuMemory(long bytes) : DeviceMemory
    {
        readonly NativeBuffer _buffer = new(bytes);
        public override void* Pointer => _buffer.Pointer;
        public override long Bytes => _buffer.Bytes;
        public override void Dispose() => _buffer.Dispose();
    }
}

/// <summary>
/// A size-keyed pool of device buffers. Released storages go back on the stack for their exact (64-byte
/// rounded) size; the same shapes every step mean every later step is served from the pool with no allocation.
/// A <see cref="Reservation"/> keeps the buffers used by a captured graph out of everyone else's hands: its replays
/// write them.
/// </summary>
public sealed class BufferPool
{
    readonly Device _device;
    readonly Dictionary<long, Stack<DeviceMemory>> _free = new();
    readonly Dictionary<DeviceMemory, Reservation> _reserved = new(ReferenceEqualityComparer.Instance);
    Reservation? _renting; // the reservation that rents while a graph is captured
    readonly object _lock = new();

    /// <summary>The buffers one captured graph uses, in use or free: free ones are only rented again while the same
    /// graph is captured; all go back to the pool when it is disposed.</summary>
    internal sealed class Reservation(BufferPool pool) : IDisposable
    {
        internal readonly Dictionary<long, Stack<DeviceMemory>> Free = new();
        internal readonly List<DeviceMemory> Members = [];

        /// <summary>Bytes of device memory the graph keeps.</summary>
        internal long Bytes => Members.Sum(m => m.Bytes);

        /// <summary>Stops renting for the graph (its capture is over); what it holds stays reserved.</summary>
        internal void EndRenting()
        {
            lock (pool._lock)
                if (pool._renting == this) pool._renting = null;
        }

        /// <summary>Gives every buffer back to the pool: free ones to its free lists, ones still in use when released.</summary>
        public void Dispose()
        {
            EndRenting();
            lock (pool._lock)
            {
                foreach (var member in Members) pool._reserved.Remove(member);
                foreach (var (size, stack) in Free)
                {
                    if (!pool._free.TryGetValue(size, out var general)) pool._free[size] = general = new Stack<DeviceMemory>();
                    while (stack.Count > 0) general.Push(stack.Pop());
                }
                Members.Clear();
            }
        }
    }

    /// <summary>From now until <see cref="Reservation.EndRenting"/>, every buffer rented is the graph's.</summary>
    internal Reservation Reserve()
    {
        lock (_lock)
        {
            if (_renting != null) throw new InvalidOperationException("a graph is already being captured on this device");
            return _renting = new Reservation(this);
        }
    }

    internal BufferPool(Device device) => _device = device;

    /// <summary>Buffers handed out and not yet returned, in bytes.</summary>
    public long BytesInUse { get; private set; }

    /// <summary>Buffers held for reuse, in bytes.</summary>
    public long BytesCached { get; private set; }

    /// <summary>Requests that had to allocate new device memory.</summary>
    public long Misses { get; private set; }

    /// <summary>Requests served from the pool.</summary>
    public long Hits { get; private set; }

    /// <summary>Times an allocation found a CUDA device full and the pool freed its cached buffers for it to try again
    /// (buffers of sizes that no longer come back: another batch size, an evaluation's shapes).</summary>
    public long CacheReleases { get; private set; }

    internal DeviceMemory Rent(long bytes)
    {
        long size = (bytes + 63) & ~63L;
        Reservation? renting;
        lock (_lock)
        {
            renting = _renting;
            if ((renting != null && renting.Free.TryGetValue(size, out var stack) && stack.Count > 0)
                || (_free.TryGetValue(size, out stack) && stack.Count > 0))
            {
                Hits++;
                BytesInUse += size;
                BytesCached -= size;
                var reused = stack.Pop();
                if (renting != null && _reserved.TryAdd(reused, renting)) renting.Members.Add(reused);
                _device.NotePeak();
                return reused;
            }
        }
        var memory = _device.Allocate(size);
        lock (_lock)
        {
            Misses++;
            BytesInUse += size;
            if (renting != null)
            {
                _reserved.Add(memory, renting);
                renting.Members.Add(memory);
            }
        }
        _device.NotePeak();
        return memory;
    }

    /// <summary>Frees the cached buffers once the device has finished the queued work that may still read them, and
    /// counts it (<see cref="CacheReleases"/>): for an allocation that found the device full. Returns the bytes freed.</summary>
    internal long ReleaseCached()
    {
        _device.Synchronize();
        long freed = Trim();
        if (freed > 0)
            lock (_lock) CacheReleases++;
        return freed;
    }

    internal void Return(DeviceMemory memory)
    {
        lock (_lock)
        {
            BytesInUse -= memory.Bytes;
            BytesCached += memory.Bytes;
            var free = _reserved.TryGetValue(memory, out var reservation) ? reservation.Free : _free;
            if (!free.TryGetValue(memory.Bytes, out var stack)) free[memory.Bytes] = stack = new Stack<DeviceMemory>();
            stack.Push(memory);
        }
    }

    /// <summary>Frees every cached buffer (a live graph's stay: its replays write them); returns the bytes freed.</summary>
    public long Trim()
    {
        long freed = 0;
        lock (_lock)
        {
            foreach (var stack in _free.Values)
                while (stack.Count > 0)
                {
                    var memory = stack.Pop();
                    BytesCached -= memory.Bytes;
                    freed += memory.Bytes;
                    memory.Dispose();
                }
        }
        return freed;
    }
}

/// <summary>
/// Reference-counted device memory shared by a tensor and its views (and retained by the tape while saved for
/// backward). When the last reference goes, pooled memory returns to its pool; owned memory is freed.
/// </summary>
public sealed unsafe class Storage
{
    readonly DeviceMemory _memory;
    readonly bool _pooled;
    int _refs = 1;

    /// <summary>True for memory from the device's pool (activations, temporaries); false for memory a tensor owns
    /// (parameters, leaf gradients, optimizer state).</summary>
    internal bool IsPooled => _pooled;

    internal Storage(Device device, long bytes, bool pooled)
    {
        Device = device;
        _pooled = pooled;
        _memory = pooled ? device.Pool.Rent(bytes) : device.Allocate(bytes);
        device.Unwritten(_memory);
        if (!pooled) device.NoteOwned(_memory.Bytes);
    }

    /// <summary>The owning device.</summary>
    public Device Device { get; }

    /// <summary>Device address of the first byte; throws once released.</summary>
    public void* Pointer => _refs > 0 ? _memory.Pointer : throw new ObjectDisposedException(nameof(Storage), "tensor storage was released");

    /// <summary>How many <see cref="FrozenWeights"/> and <see cref="WeightCopies.Hold"/>s hold this storage; writes
    /// through the engine refuse it while above 0.</summary>
    internal int Frozen;

    /// <summary>True once every reference is released.</summary>
    public bool IsReleased => _refs <= 0;

    internal void Retain()
    {
        if (Interlocked.Increment(ref _refs) <= 1) throw new ObjectDisposedException(nameof(Storage), "retained after release");
    }

    internal void Release()
    {
        int left = Interlocked.Decrement(ref _refs);
        if (left != 0) return;
        if (_pooled) Device.Pool.Return(_memory);
        else
        {
            Device.NoteOwned(-_memory.Bytes);
            _memory.Dispose();
        }
    }
}
