using System.Runtime.CompilerServices;

namespace Engine.Kernels.Cpu;

/// <summary>A unit of parallel work: <see cref="Run"/> is called once per task index.</summary>
public interface IParallelBody
{
    /// <summary>Runs task <paramref name="index"/>.</summary>
    void Run(int index);
}

/// <summary>
/// A persistent pool of worker threads with an allocation-free parallel-for over struct bodies.
/// Tasks are handed out dynamically, but every kernel splits its work into chunks that depend only on the
/// problem size, so results are bitwise identical whatever the thread count.
/// Nested calls (from inside a task) and calls while another thread uses the pool run inline.
/// Idle workers spin for <see cref="SpinMicroseconds"/> before they block: a blocked thread takes tens to hundreds of
/// microseconds to wake (more under a hypervisor), longer than a small GEMM's share, and a forward issues its
/// kernels back to back.
/// </summary>
public static unsafe class CpuParallel
{
    static readonly object Gate = new();
    static readonly int WorkerCount = Math.Max(0, Environment.ProcessorCount - 1);
    static Thread[]? _workers;
    static int _threads = Environment.ProcessorCount;

    // The current job; written under Gate before the generation bump.
    static delegate*<void*, int, void> _fn;
    static void* _ctx;
    static int _count, _next, _active;
    static volatile int _generation;
    static volatile int _pendingWorkers;
    [ThreadStatic] static bool _insideTask;

    /// <summary>How long an idle worker watches for the next job before it blocks.</summary>
    public const int SpinMicroseconds = 200;
    static readonly long SpinTicks = System.Diagnostics.Stopwatch.Frequency * SpinMicroseconds / 1_000_000;

    /// <summary>Threads used by kernels (1 .. processor count). Default: all processors.</summary>
    public static int Threads
    {
        get => _threads;
        set => _threads = value < 1 ? throw new ArgumentOutOfRangeException(nameof(Threads), value, "must be at least 1")
            : Math.Min(value, Environment.ProcessorCount);
    }

    /// <summary>Runs body.Run(i) for every i in [0, count) and returns when all are done.</summary>
    public static void For<T>(int count, ref T body) where T : struct, IParallelBody
    {
        if (count <= 0) return;
        int participants = Math.Min(_threads, count);
        if (participants <= 1 || _insideTask || !Monitor.TryEnter(Gate))
        {
            for (int i = 0; i < count; i++) body.Run(i);
            return;
        }
        try
        {
            EnsureWorkers();
            _fn = &Invoke<T>;
            _ctx = Unsafe.AsPointer(ref body);
            _count = count;
            _next = 0;
            _active = participants - 1;
            _pendingWorkers = participants - 1;
            lock (_workers!)
            {
                _generation++;
                Monitor.PulseAll(_workers);
            }
            _insideTask = true;
            try { Drain(); }
            finally
            {
                _insideTask = false;
                // Workers read `body` through _ctx on this stack frame: never leave before they finish.
                var spin = new SpinWait();
                while (_pendingWorkers != 0) spin.SpinOnce(-1);
                _fn = null;
                _ctx = null;
            }
        }
        finally { Monitor.Exit(Gate); }
    }

    static void Invoke<T>(void* ctx, int index) where T : struct, IParallelBody => Unsafe.AsRef<T>(ctx).Run(index);

    static void Drain()
    {
        int i;
        while ((i = Interlocked.Increment(ref _next) - 1) < _count) _fn(_ctx, i);
    }

    static void EnsureWorkers()
    {
        if (_workers != null) return;
        var workers = new Thread[WorkerCount];
        for (int w = 0; w < workers.Length; w++)
        {
            workers[w] = new Thread(WorkerLoop) { IsBackground = true, Name = $"engine-cpu-{w + 1}" };
        }
        _workers = workers;
        foreach (var t in workers) t.Start();
    }

    static void WorkerLoop()
    {
        int seen = 0;
        _insideTask = true;
        while (true)
        {
            long until = System.Diagnostics.Stopwatch.GetTimestamp() + SpinTicks;
            while (_generation == seen && System.Diagnostics.Stopwatch.GetTimestamp() < until) Thread.SpinWait(16);
            if (_generation == seen)
                lock (_workers!)
                {
                    while (_generation == seen) Monitor.Wait(_workers);
                }
            seen = _generation;
            // Only the first `_active` workers to arrive take part in this job.
            if (Interlocked.Decrement(ref _active) < 0) continue;
            try { Drain(); }
            finally { Interlocked.Decrement(ref _pendingWorkers); }
        }
    }
}
