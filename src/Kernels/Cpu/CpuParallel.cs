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
/// microseconds to wake (milliseconds under a busy hypervisor), longer than a small GEMM's share, and a forward issues
/// its kernels back to back. The calling thread never waits for a worker that has not woken: once every task is taken it
/// closes the job and returns as soon as the workers inside it are done.
/// </summary>
public static unsafe class CpuParallel
{
    static readonly object Gate = new();
    static readonly int WorkerCount = Math.Max(0, Environment.ProcessorCount - 1);
    static Thread[]? _workers;
    static int _threads = Environment.ProcessorCount;

    // The current job; written under Gate before the generation bump. _seats: workers that may still join it;
    // _entered: workers inside a job (or checking whether they may join one); _closed: the last job that takes no one.
    static delegate*<void*, int, void> _fn;
    static void* _ctx;
    static int _count, _next, _seats, _entered, _closed;
    static volatile int _generation;
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

    /// <summary>The threads a parallel loop started here would get: 1 inside a task (nested loops run inline), else
    /// <see cref="Threads"/>. A kernel called from a task plans its work for one thread instead of cutting it into
    /// parts that would run one after the other anyway.</summary>
    internal static int ThreadsHere => _insideTask ? 1 : _threads;

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
            _seats = participants - 1;
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
                // Every task is taken. Close the job, so a worker still waking up stays out of it, then wait for those
                // inside: they read `body` through _ctx on this stack frame. (The exchange is a full fence: a worker
                // either is counted in _entered here or sees the job closed.)
                Interlocked.Exchange(ref _closed, _generation);
                var spin = new SpinWait();
                while (Volatile.Read(ref _entered) != 0) spin.SpinOnce(-1);
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
            Interlocked.Increment(ref _entered);
            // A job closed before this worker woke (generations wrap: compare by difference) or one with no seat left
            // goes on without it.
            if (Volatile.Read(ref _closed) - seen >= 0 || Interlocked.Decrement(ref _seats) < 0)
            {
                Interlocked.Decrement(ref _entered);
                continue;
            }
            try { Drain(); }
            finally { Interlocked.Decrement(ref _entered); }
        }
    }
}
