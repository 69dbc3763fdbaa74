using System.Diagnostics;
using System.Globalization;
using Engine.Kernels;

namespace Engine.Bench;

/// <summary>Where a piece of work spends its time: one instrumented run, split into the GEMMs and the largest other
/// kernels (as shares of the run's wall time).</summary>
internal static class KernelSplit
{
    /// <summary>The Linear layer's kernels: a GEMM with its bias, GELU or scale-shift in the epilogue.</summary>
    public static readonly KernelId[] Linear =
        [KernelId.LinearForward, KernelId.LinearGeluForward, KernelId.LinearScaleShiftForward, KernelId.LinearScaleShiftGeluForward];

    /// <summary>Every kernel whose time counts as GEMM time: the Linear layer's and the plain and batched GEMMs.</summary>
    public static readonly KernelId[] Gemms = [.. Linear, KernelId.Gemm, KernelId.GemmStridedBatched];

    /// <summary>Runs <paramref name="work"/> once with per-kernel timing on and describes the split, e.g.
    /// "GEMM 88 % (281 GFLOP at 160 GFLOP/s; Linear 80 %, other 0 %, batched 8 %); GeluForward 2.2 %, ..." (the GEMM
    /// flops of the kernel calls themselves; products inside fused attention count as its time).</summary>
    public static string Of(InstrumentedKernels kernels, Action work, int others = 3)
    {
        kernels.Reset();
        kernels.Timing = true;
        var clock = Stopwatch.StartNew();
        try { work(); }
        finally { kernels.Timing = false; }
        double total = clock.Elapsed.TotalSeconds;
        double linear = Linear.Sum(k => kernels.Time(k).TotalSeconds);
        double gemm = (kernels.Time(KernelId.Gemm) + kernels.Time(KernelId.GemmStridedBatched)).TotalSeconds + linear;
        var largest = Enum.GetValues<KernelId>().Where(k => !Gemms.Contains(k))
            .Select(k => (Name: k.ToString(), Seconds: kernels.Time(k).TotalSeconds)).Where(k => k.Seconds > 0)
            .OrderByDescending(k => k.Seconds).Take(others);
        var inv = CultureInfo.InvariantCulture;
        // Linear layers (forward, bias and any GELU in the epilogue), other plain GEMMs (backward products), batched
        // (unfused attention).
        return string.Format(inv, "GEMM {0:P0} ({4:F0} GFLOP at {5:F0} GFLOP/s; Linear {1:P0}, other {2:P0}, batched {3:P0}); ", gemm / total,
                   linear / total, kernels.Time(KernelId.Gemm).TotalSeconds / total,
                   kernels.Time(KernelId.GemmStridedBatched).TotalSeconds / total, kernels.Flops / 1e9, kernels.Flops / 1e9 / gemm) +
               string.Join(", ", largest.Select(k => string.Format(inv, "{0} {1:P1}", k.Name, k.Seconds / total)));
    }
}
