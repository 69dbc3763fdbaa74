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
    public bool ReadsPackedGemmOperands => Inner.ReadsPackedGemmOperands;

    /// <inheritdoc/>
    public unsafe bool FreezeWeight(float* w, long count) => Inner.FreezeWeight(w, count);

    /// <inheritdoc/>
    public unsafe bool ThawWeight(float* w) => Inner.ThawWeight(w);

    /// <inheritdoc/>
    public bool ShareWeightCopies(ReadOnlySpan<PackTarget> copies, Precision precision) => Inner.ShareWeightCopies(copies, precision);

    /// <inheritdoc/>
    public bool FusedAttentionKeepsSixteenBits(int headDim, bool bias) => Inner.FusedAttentionKeepsSixteenBits(headDim, bias);

    /// <inheritdoc/>
    public Precision GemmPrecision
    {
        get => Inner.GemmPrecision;
        set => Inner.GemmPrecision = value;
    }

    /// <summary>Measure time per kernel: wall time on the host, or the device's own time with <see cref="Timer"/>.</summary>
    public bool Timing { get; set; }

    /// <summary>Times each call on the device while <see cref="Timing"/> is on (null: the host clock, right for the
    /// synchronous CPU backend). Each call then waits for the device, so a timed step runs slower than an untimed one.</summary>
    public IKernelTimer? Timer { get; set; }

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
        if (!Timing) return 0;
        if (Timer == null) return Stopwatch.GetTimestamp();
        Timer.Start();
        return 0;
    }

    void End(KernelId id, long start)
    {
        if (!Timing) return;
        _ticks[(int)id] += Timer == null ? Stopwatch.GetTimestamp() - start : (long)(Timer.Stop() * Stopwatch.Frequency);
    }
}
