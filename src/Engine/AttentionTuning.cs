using System.Globalization;
using Engine.Autograd;
using Engine.Kernels;

namespace Engine;

/// <summary>
/// How a device chose between the fused and the unfused attention for one training shape
/// (<see cref="CudaDevice.TunesAttention"/>): the median milliseconds of one forward and backward on each path, on the
/// layer's own input, and whether the fused path's output and input gradient agreed with the unfused path's.
/// </summary>
/// <param name="Batch">Images (or windows) per call.</param>
/// <param name="Tokens">Tokens per image.</param>
/// <param name="Heads">Attention heads.</param>
/// <param name="HeadDim">Values per head.</param>
/// <param name="Precision">The GEMMs' operand format the step ran under.</param>
/// <param name="FusedMs">Median milliseconds of the fused forward and backward.</param>
/// <param name="UnfusedMs">Median milliseconds of the unfused forward and backward.</param>
/// <param name="Fused">The path chosen: fused when it agreed and took no longer.</param>
/// <param name="Disagreement">Why the fused path was not trusted (its result left the format's bound of the unfused
/// one), or null when it agreed.</param>
public sealed record AttentionChoice(int Batch, int Tokens, int Heads, int HeadDim, Precision Precision, double FusedMs, double UnfusedMs,
    bool Fused, string? Disagreement)
{
    /// <summary>One line for a log: the shape, the path chosen and both timings.</summary>
    public override string ToString() => string.Format(CultureInfo.InvariantCulture,
        "attention {0}×{1}×{2}×{3} {4}: {5} (forward and backward: fused {6:F3} ms, unfused {7:F3} ms){8}", Batch, Tokens, Heads, HeadDim,
        Precision.Name(), Fused ? "fused" : "unfused", FusedMs, UnfusedMs, Disagreement == null ? "" : $"; the fused path was not used: {Disagreement}");
}

/// <summary>
/// Times the fused and the unfused attention for one training shape and checks that they agree, as
/// <see cref="CudaDevice.TunesAttention"/> does the first time it trains that shape. The layer's input is copied and
/// both paths run forward and backward on it (the upstream gradient is the unfused output); nothing of the caller's
/// tape or gradients is touched.
/// </summary>
internal static unsafe class AttentionTuning
{
    const int Repeats = 3;

    /// <summary>How far the fused output and input gradient may be from the unfused ones, in units of the format's
    /// roundoff times the largest unfused value: both round their operands to 16 bits at different points (P, dS, the
    /// output), so they differ by a few roundoffs; a wrong tile, lane or row differs by the values themselves.</summary>
    internal const double BoundInRoundoffs = 8;

    /// <summary>Measures both paths for <paramref name="qkv"/>'s shape (see <see cref="Ops.Attention"/> for the
    /// arguments).</summary>
    internal static AttentionChoice Measure(Device device, Tensor qkv, int heads, Tensor? bias, Tensor? mask, float scale)
    {
        int B = qkv.Shape[0], T = qkv.Shape[1], C = qkv.Shape[2] / 3;
        var k = device.Kernels;
        var precision = k.GemmPrecision;
        // The layer's input as it is (float32, or 16-bit values copied as pairs: q|k|v rows are 3·heads·head dim wide, even).
        using var x = Tensor.Empty(device, qkv.DType, qkv.Shape);
        if (qkv.DType == DType.F32) k.Copy(x.Data, qkv.Data, x.Count, false);
        else k.Copy((float*)x.HalfData, (float*)qkv.HalfData, x.Count / 2, false);
        x.RequiresGrad = true;
        Tensor upstream;
        using (Tape.NoGrad()) upstream = Ops.Attention(x, heads, bias, mask, scale, fused: false);
        using var _ = upstream;
        var tape = new Tape();
        Tensor Step(bool fused)
        {
            using (tape.Record())
            {
                var y = Ops.Attention(x, heads, bias, mask, scale, fused);
                tape.Backward(y, upstream);
                return y;
            }
        }
        // The first call of each path gives the results compared; the timed calls add into one gradient of x.
        (Tensor Y, Tensor Dx, double Ms) Run(bool fused)
        {
            var y = Step(fused);
            var dx = x.Grad!;
            x.SetGrad(null);
            double ms = DeviceBenchmarks.Time(device, Repeats, () => Step(fused).Dispose());
            x.Grad?.Dispose();
            x.SetGrad(null);
            return (y, dx, ms);
        }
        var fusedRun = Run(true);
        var unfusedRun = Run(false);
        try
        {
            string? disagreement = Disagreement("output", fusedRun.Y, unfusedRun.Y, precision) ?? Disagreement("input gradient", fusedRun.Dx, unfusedRun.Dx, precision);
            bool fusedChosen = disagreement == null && fusedRun.Ms <= unfusedRun.Ms;
            return new AttentionChoice(B, T, heads, C / heads, precision, fusedRun.Ms, unfusedRun.Ms, fusedChosen, disagreement);
        }
        finally
        {
            foreach (var t in new[] { fusedRun.Y, fusedRun.Dx, unfusedRun.Y, unfusedRun.Dx }) t.Dispose();
        }
    }

    /// <summary>Null when <paramref name="fused"/> is within <see cref="BoundInRoundoffs"/> roundoffs of
    /// <paramref name="precision"/> times the largest |<paramref name="unfused"/>| of it everywhere, else what differs
    /// and by how much (a NaN or infinity anywhere differs). Reads both through host memory, <paramref name="slice"/>
    /// values at a time.</summary>
    internal static string? Disagreement(string what, Tensor fused, Tensor unfused, Precision precision, int slice = 1 << 20)
    {
        var a = new float[Math.Min(slice, fused.Count)];
        var b = new float[a.Length];
        double largest = 0, gap = 0;
        long worst = 0;
        var device = fused.Device;
        for (long start = 0; start < fused.Count; start += slice)
        {
            int n = (int)Math.Min(slice, fused.Count - start);
            fixed (float* pa = a, pb = b)
            {
                device.CopyToHost(pa, fused.Data + start, n * sizeof(float));
                device.CopyToHost(pb, unfused.Data + start, n * sizeof(float));
            }
            for (int i = 0; i < n; i++)
            {
                double d = Math.Abs((double)a[i] - b[i]);
                if (!double.IsFinite(d))
                    return string.Format(CultureInfo.InvariantCulture, "the {0} holds {1} at {2} (fused {3}, unfused {4})", what,
                        float.IsFinite(b[i]) ? a[i] : b[i], start + i, a[i], b[i]);
                largest = Math.Max(largest, Math.Abs(b[i]));
                if (d > gap)
                {
                    gap = d;
                    worst = start + i;
                }
            }
        }
        double bound = BoundInRoundoffs * precision.UnitRoundoff() * largest;
        return gap <= bound ? null : string.Format(CultureInfo.InvariantCulture,
            "the {0} differs by {1:G3} at {2} (bound {3:G3}: {4} roundoffs of the largest value, {5:G3})", what, gap, worst, bound, BoundInRoundoffs, largest);
    }
}
