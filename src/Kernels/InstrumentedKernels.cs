using System.Diagnostics;

namespace Engine.Kernels;

/// <summary>
/// A decorator over any backend that counts kernel calls and GEMM flops and, when <see cref="Timing"/> is on,
/// accumulates wall time per kernel (the CPU backend is synchronous, so wall time is kernel time). Tests use the
/// counts to prove that frozen weights cost no weight-gradient work; benchmarks use the times.
/// The forwarding methods are generated (InstrumentedKernels.g.cs).
/// </summary>
public sealed partial class InstrumentedKernels : IKernels
{
    readonly long[] _calls = new long[Enum.GetValues<KernelId>().Length];
    readonly long[] _ticks = new long[Enum.GetValues<KernelId>().Length];

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    public InstrumentedKernels(IKernels inner) => Inner = inner;

    /// <summary>The wrapped backend.</summary>
    public IKernels Inner { get; }

    /// <inheritdoc/>
    public string Name => Inner.Name;

    /// <inheritdoc/>
    public unsafe bool FreezeWeight(float* w, long count) => Inner.FreezeWeight(w, count);

    /// <inheritdoc/>
    public unsafe bool ThawWeight(float* w) => Inner.ThawWeight(w);

    /// <inheritdoc/>
    public Precision GemmPrecision
    {
        get => Inner.GemmPrecision;
        set => Inner.GemmPrecision = value;
    }

    /// <summary>Measure wall time per kernel.</summary>
    public bool Timing { get; set; }

    /// <summary>Floating-point operations issued through Gemm and GemmStridedBatched (2·M·N·K per product).</summary>
    public long Flops { get; private set; }

    /// <summary>Number of calls of one kernel since the last <see cref="Reset"/>.</summary>
    public long Calls(KernelId id) => _calls[(int)id];

    /// <summary>Time spent in one kernel since the last <see cref="Reset"/> (zero unless <see cref="Timing"/>).</summary>
    public TimeSpan Time(KernelId id) => Stopwatch.GetElapsedTime(0, _ticks[(int)id]);

    /// <summary>Clears all counters.</summary>
    public void Reset()
    {
        Array.Clear(_calls);
        Array.Clear(_ticks);
        Flops = 0;
    }

    long Begin(KernelId id)
    {
        _calls[(int)id]++;
        return Timing ? Stopwatch.GetTimestamp() : 0;
    }

    void End(KernelId id, long start)
    {
        if (Timing) _ticks[(int)id] += Stopwatch.GetTimestamp() - start;
    }
}
