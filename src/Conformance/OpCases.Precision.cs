using Engine.Kernels;

namespace Engine.Conformance;

// The Precision family's cases (mixed precision: cuda/precision.cu, CpuKernels.Precision.cs, the GEMMs' operand
// rounding): rounding bit for bit against an independent reference, and each low-precision GEMM against a double
// reference over the rounded operands.
public static partial class OpCases
{
    /// <summary>Values that probe every rounding rule: ties both ways, carries into the exponent, the fp16 overflow
    /// threshold (65504 is the largest half, 65520 the first value that rounds to ∞), half subnormals, signed zeros,
    /// infinities and NaN; then random values over the whole exponent range.</summary>
    static float[] RoundingProbes()
    {
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, 1.00390625f, 1.005859375f, 1.0009765625f, 1.00146484375f, 65504f, 65519.99f, 65520f, -65520f,
            3.4028235e38f, -3.4028235e38f, 3.3961775e38f, float.PositiveInfinity, float.NegativeInfinity, float.NaN,
            MathF.Pow(2, -14), MathF.Pow(2, -24), MathF.Pow(2, -25), 1.5f * MathF.Pow(2, -25), 3 * MathF.Pow(2, -25),
            MathF.Pow(2, -15) * 1.5f, 1e-45f, 1.1754942e-38f, 6.1e-5f, 0.1f, 1f / 3, 2f / 3,
        };
        for (int i = 0; i < 4000; i++)
        {
            double sign = CounterRng.Uniform(71, (ulong)i) < 0.5 ? -1 : 1;
            double exponent = -40 + 80 * CounterRng.Uniform(72, (ulong)i);
            values.Add((float)(sign * Math.Pow(2, exponent) * (1 + CounterRng.Uniform(73, (ulong)i))));
        }
        return [.. values];
    }

    /// <summary>The independent reference: x rounded to the format's significant bits (8 or 11; to nearest, ties to
    /// even) in double arithmetic, with each format's subnormals; fp16 overflows to ∞ above 65504.</summary>
    static float RoundReference(float x, Precision precision)
    {
        if (precision == Precision.FP32 || float.IsNaN(x) || float.IsInfinity(x) || x == 0) return x;
        int bits = precision == Precision.BF16 ? 8 : 11;
        // Below the smallest normal (2⁻¹⁴ for fp16, 2⁻¹²⁶ for tf32 and bf16) the quantum stops shrinking: subnormals.
        int exponent = Math.Max(Math.ILogB((double)x), precision == Precision.FP16 ? -14 : -126);
        double quantum = Math.Pow(2, exponent - (bits - 1));
        double r = Math.Round(x / quantum, MidpointRounding.ToEven) * quantum;
        if (precision == Precision.FP16 && Math.Abs(r) > 65504) return r > 0 ? float.PositiveInfinity : float.NegativeInfinity;
        return r == 0 ? (x < 0 ? -0f : 0f) : (float)r; // (float) of 2¹²⁸ is ∞, the correct overflow for tf32 and bf16
    }

    static void RoundToPrecision(Device dev)
    {
        var probes = RoundingProbes();
        foreach (var precision in Enum.GetValues<Precision>())
        {
            using var x = Tensor.FromArray(dev, probes, probes.Length);
            using var y = Tensor.Zeros(dev, probes.Length);
            unsafe { dev.Kernels.RoundToPrecision(y.Data, x.Data, probes.Length, precision); }
            var got = y.ToArray();
            for (int i = 0; i < probes.Length; i++)
            {
                float want = RoundReference(probes[i], precision);
                bool same = float.IsNaN(want) ? float.IsNaN(got[i]) : BitConverter.SingleToInt32Bits(got[i]) == BitConverter.SingleToInt32Bits(want);
                if (!same)
                    throw new ConformanceException($"RoundToPrecision {precision.Name()}: {probes[i]:G9} gave {got[i]:G9}, want {want:G9}");
            }
        }
    }

    /// <summary>16-bit storage (activations saved for backward): packing then widening gives exactly the rounded value
    /// (<see cref="RoundReference"/>) for every probe, and the bf16 bits are the rounded float's high half.</summary>
    static unsafe void PackLowPrecision(Device dev)
    {
        var probes = RoundingProbes();
        foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
        {
            using var x = Tensor.FromArray(dev, probes, probes.Length);
            using var packed = Tensor.Empty(dev, precision == Precision.BF16 ? DType.BF16 : DType.F16, probes.Length);
            using var y = Tensor.Zeros(dev, probes.Length);
            dev.Kernels.PackLowPrecision(packed.HalfData, x.Data, probes.Length, precision);
            dev.Kernels.UnpackLowPrecision(y.Data, packed.HalfData, probes.Length, precision);
            var got = y.ToArray();
            for (int i = 0; i < probes.Length; i++)
            {
                float want = RoundReference(probes[i], precision);
                bool same = float.IsNaN(want) ? float.IsNaN(got[i]) : BitConverter.SingleToInt32Bits(got[i]) == BitConverter.SingleToInt32Bits(want);
                if (!same) throw new ConformanceException($"PackLowPrecision {precision.Name()}: {probes[i]:G9} came back as {got[i]:G9}, want {want:G9}");
            }
            // From and to addresses inside the tensors (a GEMM operand that starts at a column): the same bits.
            dev.Kernels.Fill(y.Data, probes.Length, 0f);
            dev.Kernels.PackLowPrecision(packed.HalfData + 3, x.Data + 1, probes.Length - 5, precision);
            dev.Kernels.UnpackLowPrecision(y.Data + 1, packed.HalfData + 3, probes.Length - 5, precision);
            var shifted = y.ToArray();
            for (int i = 1; i < probes.Length - 4; i++)
                if (BitConverter.SingleToInt32Bits(shifted[i]) != BitConverter.SingleToInt32Bits(got[i]) && !(float.IsNaN(shifted[i]) && float.IsNaN(got[i])))
                    throw new ConformanceException($"PackLowPrecision {precision.Name()} at unaligned addresses: {probes[i]:G9} came back as {shifted[i]:G9}, want {got[i]:G9}");
        }
    }

    /// <summary><see cref="IKernels.PackLowPrecisionMany"/>: every target bit for bit <see cref="IKernels.PackLowPrecision"/>
    /// of it, over 40 targets (two launches on a GPU) whose sizes sit around the GPU kernel's 4,096-value chunks and its
    /// quads, at aligned and unaligned addresses, in bf16 and fp16; the values between the targets stay as they were.</summary>
    static unsafe void PackLowPrecisionMany(Device dev)
    {
        int[] sizes = [0, 1, 3, 4095, 4096, 4097, 3 * 4096 + 5, 70_001];
        const int count = 40;
        var probes = RoundingProbes();
        var k = dev.Kernels;
        var (xAt, yAt, lengths) = (new long[count], new long[count], new long[count]);
        long xTotal = 0, yTotal = 0;
        for (int i = 0; i < count; i++)
        {
            lengths[i] = sizes[i % sizes.Length];
            (xAt[i], yAt[i]) = (xTotal + i % 3, yTotal + i % 5);
            (xTotal, yTotal) = ((xAt[i] + lengths[i] + 7) / 4 * 4, (yAt[i] + lengths[i] + 7) / 4 * 4);
        }
        using var x = Tensor.FromArray(dev, [.. Enumerable.Range(0, (int)xTotal).Select(i => probes[i * 7 % probes.Length])], (int)xTotal);
        using var before = Tensor.FromArray(dev, [.. Enumerable.Range(0, (int)yTotal).Select(i => -1.25f - i % 11)], (int)yTotal);
        foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
        {
            var dtype = precision == Precision.BF16 ? DType.BF16 : DType.F16;
            float[] Packed(bool many)
            {
                using var y = Tensor.Empty(dev, dtype, (int)yTotal);
                using var wide = Tensor.Empty(dev, DType.F32, (int)yTotal);
                k.PackLowPrecision(y.HalfData, before.Data, yTotal, precision);
                var targets = Enumerable.Range(0, count).Select(i => new PackTarget(y.HalfData + yAt[i], x.Data + xAt[i], lengths[i])).ToArray();
                if (many) k.PackLowPrecisionMany(targets, precision);
                else foreach (var t in targets) k.PackLowPrecision(t.Y, t.X, t.Count, precision);
                k.UnpackLowPrecision(wide.Data, y.HalfData, yTotal, precision);
                return wide.ToArray();
            }
            float[] got = Packed(many: true), want = Packed(many: false);
            for (int i = 0; i < got.Length; i++)
                if (BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(want[i]))
                {
                    int target = Array.FindLastIndex(yAt, at => at <= i);
                    string where = target >= 0 && i < yAt[target] + lengths[target] ? $"value {i - yAt[target]} of target {target} ({lengths[target]} values)" : "between targets";
                    throw new ConformanceException($"PackLowPrecisionMany {precision.Name()}: {where} is {got[i]:G9}, PackLowPrecision gives {want[i]:G9}");
                }
        }
    }

    /// <summary>
    /// <see cref="WeightCopies"/> (<see cref="IKernels.ShareWeightCopies"/>): under bf16 and fp16 GEMMs a small MLP with
    /// SSF (LinearGelu, then a Linear joining a residual, then LinearScaleShift) gives the same outputs and gradients bit
    /// for bit with its weights' copies held as without. Where the backend reads the copies, a product really reads them:
    /// with another weight's values shared as a weight's copy, a Linear and a product from an interior row of the weight
    /// give what that other weight gives, and nothing once the sharing ends or in the other 16-bit format. While held,
    /// the weights refuse writes.
    /// </summary>
    static unsafe void ShareWeightCopies(Device dev)
    {
        const int rows = 21, C = 24, H = 40;
        float[] Values(ulong seed, int n) => [.. Enumerable.Range(0, n).Select(i => (float)(CounterRng.Uniform(seed, (ulong)i) * 2 - 1))];
        static bool Same(float[] a, float[] b) => a.Length == b.Length && a.Zip(b).All(p => BitConverter.SingleToInt32Bits(p.First) == BitConverter.SingleToInt32Bits(p.Second));
        var k = dev.Kernels;
        var previous = k.GemmPrecision;
        try
        {
            foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
            {
                k.GemmPrecision = precision;
                using var x = Tensor.FromArray(dev, Values(31, rows * C), rows, C);
                using var w1 = Tensor.FromArray(dev, Values(32, H * C), H, C);
                using var b1 = Tensor.FromArray(dev, Values(33, H), H);
                using var w2 = Tensor.FromArray(dev, Values(34, C * H), C, H);
                using var b2 = Tensor.FromArray(dev, Values(35, C), C);
                using var w3 = Tensor.FromArray(dev, Values(36, C * C), C, C);
                using var scale = Tensor.FromArray(dev, Values(37, C), C);
                using var shift = Tensor.FromArray(dev, Values(38, C), C);
                using var upstream = Tensor.FromArray(dev, Values(39, rows * C), rows, C);
                Tensor[] leaves = [x, w1, b1, w2, b2, w3, scale, shift];
                float[][] Run(bool held)
                {
                    foreach (var t in leaves)
                    {
                        t.RequiresGrad = true;
                        t.DropGrad();
                    }
                    using var copies = new WeightCopies(leaves);
                    var tape = new Autograd.Tape();
                    float[] output;
                    using (held ? copies.Hold() : null)
                    {
                        if (held && copies.Bytes > 0)
                            try
                            {
                                w1.CopyFrom(Values(32, H * C));
                                throw new ConformanceException("ShareWeightCopies: a weight took a write while its copy was held");
                            }
                            catch (InvalidOperationException e) when (e.Message.Contains("WeightCopies")) { }
                        using (tape.Record())
                        {
                            using var h = Ops.LinearGelu(x, w1, b1);
                            using var r = Ops.Linear(h, w2, b2, residual: x);
                            using var y = Ops.LinearScaleShift(r, w3, scale, shift);
                            output = y.ToArray();
                            tape.Backward(y, upstream);
                        }
                    }
                    return [output, .. leaves.Select(t => t.Grad!.ToArray())];
                }
                var plain = Run(held: false);
                var shared = Run(held: true);
                string[] names = ["y", "dx", "dw1", "db1", "dw2", "db2", "dw3", "dscale", "dshift"];
                for (int t = 0; t < names.Length; t++)
                    if (!Same(shared[t], plain[t]))
                        throw new ConformanceException($"ShareWeightCopies {precision.Name()}: {names[t]} differs with the weights' copies held");
                foreach (var t in leaves) t.RequiresGrad = false;

                // Another weight's values shared as w1's copy: what the products read.
                using var other = Tensor.FromArray(dev, Values(40, H * C), H, C);
                using var otherPacked = Tensor.Empty(dev, precision == Precision.BF16 ? DType.BF16 : DType.F16, H, C);
                k.PackLowPrecision(otherPacked.HalfData, other.Data, other.Count, precision);
                using var viaOther = Ops.Linear(x, other);
                using var rowsOut = Tensor.Empty(dev, DType.F32, rows, H - 3);
                using var rowsViaOther = Tensor.Empty(dev, DType.F32, rows, H - 3);
                k.Gemm(false, true, rows, H - 3, C, 1f, x.Data, C, other.Data + 3 * C, C, 0f, rowsViaOther.Data, H - 3);
                if (k.ShareWeightCopies([new PackTarget(otherPacked.HalfData, w1.Data, w1.Count)], precision))
                {
                    float[] read, readRows, readInOther;
                    var otherPrecision = precision == Precision.BF16 ? Precision.FP16 : Precision.BF16;
                    try
                    {
                        using var y = Ops.Linear(x, w1);
                        read = y.ToArray();
                        k.Gemm(false, true, rows, H - 3, C, 1f, x.Data, C, w1.Data + 3 * C, C, 0f, rowsOut.Data, H - 3);
                        readRows = rowsOut.ToArray();
                        k.GemmPrecision = otherPrecision; // copies in the other 16-bit format must not be read
                        using var inOther = Ops.Linear(x, w1);
                        readInOther = inOther.ToArray();
                    }
                    finally
                    {
                        k.GemmPrecision = precision;
                        k.ShareWeightCopies([], Precision.FP32);
                    }
                    k.GemmPrecision = otherPrecision;
                    using (var own = Ops.Linear(x, w1))
                        if (!Same(readInOther, own.ToArray()))
                            throw new ConformanceException($"ShareWeightCopies {precision.Name()}: a product in {otherPrecision.Name()} read copies made in {precision.Name()}");
                    k.GemmPrecision = precision;
                    if (!Same(read, viaOther.ToArray()))
                        throw new ConformanceException($"ShareWeightCopies {precision.Name()}: a Linear did not read the shared copy of its weight");
                    if (!Same(readRows, rowsViaOther.ToArray()))
                        throw new ConformanceException($"ShareWeightCopies {precision.Name()}: a product from row 3 of a shared weight did not read its copy from row 3");
                }
                using var after = Ops.Linear(x, w1);
                if (Same(after.ToArray(), viaOther.ToArray()))
                    throw new ConformanceException($"ShareWeightCopies {precision.Name()}: a product still read the copy after the sharing ended");
            }
        }
        finally
        {
            k.GemmPrecision = previous;
        }
    }

    /// <summary>Under bf16 and fp16 GEMMs a Linear and LoRA keep their weight gradients' GEMM operands in 16 bits: every
    /// GEMM-made gradient is bit for bit the one float32 copies give, and the tape keeps fewer bytes. A Linear whose
    /// weight trains selected entries keeps x in 16 bits too: its selected entries' gradient is the sum over the rounded
    /// dy and inputs, bit for bit the same with float32 saves (against a double sum of them, tight enough that float32
    /// operands would fail it). (The unfused attention's
    /// 16-bit saves: <see cref="AttentionInGemmPrecision"/>.)</summary>
    static void SavedGemmOperandsInGemmPrecision(Device dev)
    {
        const int rows = 23, N = 19, K = 37, r = 3;
        float[] Values(ulong seed, int n) => [.. Enumerable.Range(0, n).Select(i => (float)(CounterRng.Uniform(seed, (ulong)i) * 2 - 1))];
        var k = dev.Kernels;
        var previous = (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision);
        try
        {
            foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
            {
                (float[][] Grads, long Saved) Run(bool sixteen)
                {
                    k.GemmPrecision = precision;
                    Ops.SaveGemmOperandsInGemmPrecision = sixteen;
                    using var x = Tensor.FromArray(dev, Values(91, rows * K), rows, K);
                    using var w = Tensor.FromArray(dev, Values(92, N * K), N, K);
                    using var w2 = Tensor.FromArray(dev, Values(93, N * K), N, K);
                    using var a = Tensor.FromArray(dev, Values(94, r * K), r, K);
                    using var b = Tensor.FromArray(dev, Values(95, N * r), N, r);
                    using var index = Tensor.FromArray(dev, [.. Enumerable.Range(0, N * 2).Select(e => (e * 5 + e / 2) % K)], N, 2);
                    using var upstream = Tensor.FromArray(dev, Values(96, rows * N), rows, N);
                    x.RequiresGrad = w.RequiresGrad = w2.RequiresGrad = a.RequiresGrad = b.RequiresGrad = true;
                    w2.Trainability = Trainability.Selected(index);
                    var tape = new Autograd.Tape();
                    long saved;
                    using (tape.Record())
                    {
                        using var y = Ops.Linear(x, w);
                        using var y2 = Ops.Linear(x, w2);
                        using var sum = Ops.Add(y, y2);
                        using var z = Ops.Lora(sum, x, a, b, 0.5f);
                        saved = tape.SavedBytes;
                        tape.Backward(z, upstream);
                    }
                    return ([x.Grad!.ToArray(), w.Grad!.ToArray(), a.Grad!.ToArray(), b.Grad!.ToArray(), w2.Grad!.ToArray()], saved);
                }
                var wide = Run(sixteen: false);
                var narrow = Run(sixteen: true);
                string[] names = ["dx", "dW", "dA", "dB", "dW (selected entries)"];
                for (int t = 0; t < names.Length; t++)
                    for (int i = 0; i < wide.Grads[t].Length; i++)
                        if (BitConverter.SingleToInt32Bits(wide.Grads[t][i]) != BitConverter.SingleToInt32Bits(narrow.Grads[t][i]))
                            throw new ConformanceException($"SavedGemmOperandsInGemmPrecision {precision.Name()}: {names[t]}[{i}] is {narrow.Grads[t][i]:G9} with 16-bit saves, {wide.Grads[t][i]:G9} with float32");
                // The selected entries: dvalues[o, j] = Σ_r dy16[r, o]·x16[r, index[o, j]], dy = the upstream gradient (z = y +
                // y2 + LoRA), both rounded as the dense product rounds them (so float32 and 16-bit saves agree, above).
                float[] xs = Values(91, rows * K), dy = Values(96, rows * N), sparse = narrow.Grads[4];
                for (int o = 0; o < N; o++)
                    for (int j = 0; j < 2; j++)
                    {
                        int e = o * 2 + j, column = (e * 5 + e / 2) % K;
                        double want = 0, scale = 0;
                        for (int row = 0; row < rows; row++)
                        {
                            double term = (double)RoundReference(dy[row * N + o], precision) * RoundReference(xs[row * K + column], precision);
                            want += term;
                            scale += Math.Abs(term);
                        }
                        if (Math.Abs(sparse[e] - want) > 4e-6 * scale)
                            throw new ConformanceException($"SavedGemmOperandsInGemmPrecision {precision.Name()}: dW (selected entries)[{e}] is {sparse[e]:G9} with 16-bit saves, want {want:G9} (the sum over 16-bit dy and inputs)");
                    }
                // x is kept in 16 bits by the dense Linear, the sparse one and LoRA, and x·Aᵀ once.
                long expected = wide.Saved - 2L * (3 * rows * K + rows * r);
                if (narrow.Saved != expected)
                    throw new ConformanceException($"SavedGemmOperandsInGemmPrecision {precision.Name()}: the tape kept {narrow.Saved} bytes with 16-bit saves, expected {expected} ({wide.Saved} with float32)");
            }
        }
        finally
        {
            (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision) = previous;
        }
    }

    /// <summary>Under bf16 and fp16 GEMMs the fused Linear ops keep the output their backward reads in 16 bits
    /// (LinearGelu's pre-activation h, SSF's bias-free product u at a Linear site, with or without GELU after it). Each
    /// forward kernel writes exactly PackLowPrecision of the float32 value it writes otherwise, with the same y (LinearGelu's
    /// GELU reads h rounded, so y is GELU of the kept values widened, and GeluForward from the 16-bit values gives y
    /// again, in float32 and rounded to 16 bits: fc2's input computed again in its backward); GELU's
    /// and SSF's backward kernels from the 16-bit values give bit for bit what they give from the widened copy; the tape
    /// keeps 2 bytes fewer per kept value; and the gradients move from those of float32 saves by no more than the
    /// rounding of the kept value allows: the format's unit roundoff u relative to it, through GELU's curvature
    /// (|GELU''| ≤ 0.8) and SSF's dscale = Σ g·u, and, where dx's product rounds its operand to 16 bits, one more step of
    /// that rounding (u·|operand| per term). GELU's backward writes the 16-bit copy of dx that the products read exactly
    /// as dx rounded, beside the same dx.</summary>
    static unsafe void LinearOutputsInGemmPrecision(Device dev)
    {
        const int rows = 29, N = 21, K = 19;
        float[] Values(ulong seed, int n, float scale) => [.. Enumerable.Range(0, n).Select(i => (float)(CounterRng.Uniform(seed, (ulong)i) * 2 - 1) * scale)];
        static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
        var k = dev.Kernels;
        var previous = (k.GemmPrecision, Ops.SaveLinearOutputsInGemmPrecision);
        string[] ops = ["LinearGelu", "LinearScaleShift", "LinearScaleShiftGelu"];
        using var oneProduct = OneGemmPerLinear(dev); // h in float32 and in 16 bits from one GEMM
        try
        {
            foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
            {
                k.GemmPrecision = precision;
                var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
                double ur = precision.UnitRoundoff();
                float[] xs = Values(101, rows * K, 1f), ws = Values(102, N * K, 0.5f), bs = Values(103, N, 0.5f), dys = Values(104, rows * N, 1f);
                float[] scales = Values(106, N, 1.5f), shifts = Values(107, N, 0.5f);
                using var x = Tensor.FromArray(dev, xs, rows, K);
                using var w = Tensor.FromArray(dev, ws, N, K);
                using var b = Tensor.FromArray(dev, bs, N);
                using var scale = Tensor.FromArray(dev, scales, N);
                using var shift = Tensor.FromArray(dev, shifts, N);
                using var dy = Tensor.FromArray(dev, dys, rows, N);
                for (int op = 0; op < ops.Length; op++)
                {
                    string name = $"LinearOutputsInGemmPrecision {precision.Name()} {ops[op]}";
                    void Forward(float* y, float* kept, ushort* keptPacked)
                    {
                        if (op == 0) k.LinearGeluForward(y, null, kept, keptPacked, x.Data, null, w.Data, b.Data, rows, N, K);
                        else if (op == 1) k.LinearScaleShiftForward(y, null, kept, keptPacked, x.Data, null, w.Data, scale.Data, shift.Data, null, rows, N, K);
                        else k.LinearScaleShiftGeluForward(y, null, kept, keptPacked, x.Data, null, w.Data, scale.Data, shift.Data, rows, N, K);
                    }

                    // The forward kernel: the kept values and y.
                    using var y = Tensor.Zeros(dev, rows, N);
                    using var yPacked = Tensor.Zeros(dev, rows, N);
                    using var wideKept = Tensor.Zeros(dev, rows, N);
                    using var packed = Tensor.Empty(dev, half, rows, N);
                    using var rounded = Tensor.Empty(dev, half, rows, N);
                    Forward(y.Data, wideKept.Data, null);
                    Forward(yPacked.Data, null, packed.HalfData);
                    k.PackLowPrecision(rounded.HalfData, wideKept.Data, rows * N, precision);
                    using var kept = Tensor.Zeros(dev, rows, N);
                    using var want = Tensor.Zeros(dev, rows, N);
                    k.UnpackLowPrecision(kept.Data, packed.HalfData, rows * N, precision);
                    k.UnpackLowPrecision(want.Data, rounded.HalfData, rows * N, precision);
                    float[] ys = y.ToArray(), ysPacked = yPacked.ToArray(), keptValues = kept.ToArray(), wantValues = want.ToArray(), us = wideKept.ToArray();
                    for (int i = 0; i < rows * N; i++)
                    {
                        if (!Same(ys[i], ysPacked[i])) throw new ConformanceException($"{name}: y[{i}] is {ysPacked[i]:G9} when its input is kept in 16 bits, {ys[i]:G9} otherwise");
                        if (!Same(keptValues[i], wantValues[i])) throw new ConformanceException($"{name}: the kept value [{i}] is {keptValues[i]:G9}, want {wantValues[i]:G9} ({us[i]:G9} packed)");
                    }

                    if (op == 0)
                    {
                        // GELU reads h rounded (as autocast's GELU reads the Linear's 16-bit output): y is GELU of the kept
                        // values widened, bit for bit, and GeluForward from the 16-bit values gives y again, in float32 and
                        // rounded to 16 bits (fc2's input, computed again in its backward).
                        using var fromWidened = Tensor.Zeros(dev, rows, N);
                        using var fromPacked = Tensor.Zeros(dev, rows, N);
                        using var packedY = Tensor.Empty(dev, half, rows, N);
                        using var packedYWide = Tensor.Zeros(dev, rows, N);
                        k.GeluForward(fromWidened.Data, null, kept.Data, rows * N);
                        k.GeluForward(fromPacked.Data, null, GemmOperand.Packed(packed.HalfData), rows * N);
                        k.GeluForward(null, packedY.HalfData, GemmOperand.Packed(packed.HalfData), rows * N);
                        k.UnpackLowPrecision(packedYWide.Data, packedY.HalfData, rows * N, precision);
                        float[] widened = fromWidened.ToArray(), again = fromPacked.ToArray(), againRounded = packedYWide.ToArray();
                        for (int i = 0; i < rows * N; i++)
                        {
                            if (!Same(ys[i], widened[i])) throw new ConformanceException($"{name}: y[{i}] is {ys[i]:G9}, GELU of the rounded pre-activation {keptValues[i]:G9} is {widened[i]:G9}");
                            if (!Same(again[i], ys[i])) throw new ConformanceException($"{name}: GeluForward from the 16-bit pre-activation gave [{i}] = {again[i]:G9}, the forward {ys[i]:G9}");
                            if (!Same(againRounded[i], RoundReference(ys[i], precision)))
                                throw new ConformanceException($"{name}: GeluForward into 16 bits gave [{i}] = {againRounded[i]:G9}, want {RoundReference(ys[i], precision):G9} ({ys[i]:G9} rounded)");
                        }
                    }

                    // The backward kernel from the 16-bit values against their widened copy: every output, bit for bit.
                    foreach (bool accumulate in new[] { false, true })
                    {
                        float[][] Backward(GemmOperand from)
                        {
                            using var dx = Tensor.FromArray(dev, Values(105, rows * N, 1f), rows, N);
                            using var dscale = Tensor.FromArray(dev, Values(108, N, 1f), N);
                            using var dshift = Tensor.FromArray(dev, Values(109, N, 1f), N);
                            if (op == 0) k.GeluBackward(dx.Data, null, dy.Data, from, rows * N, accumulate);
                            else if (op == 1) k.ScaleShiftBackward(dx.Data, null, dscale.Data, dshift.Data, dy.Data, from, scale.Data, rows, N, accumulate);
                            else k.ScaleShiftGeluBackward(dx.Data, null, dscale.Data, dshift.Data, dy.Data, from, scale.Data, shift.Data, rows, N, accumulate);
                            return [dx.ToArray(), dscale.ToArray(), dshift.ToArray()];
                        }
                        var fromPacked = Backward(GemmOperand.Packed(packed.HalfData));
                        var fromWide = Backward(kept.Data);
                        string[] outputs = ["dx", "dscale", "dshift"];
                        for (int t = 0; t < outputs.Length; t++)
                            for (int i = 0; i < fromWide[t].Length; i++)
                                if (!Same(fromPacked[t][i], fromWide[t][i]))
                                    throw new ConformanceException($"{name}: the backward kernel{(accumulate ? " (accumulating)" : "")} from 16-bit values gave {outputs[t]}[{i}] = {fromPacked[t][i]:G9}, from their widened copy {fromWide[t][i]:G9}");
                    }
                    if (op == 0)
                    {
                        // GELU's backward with the products' 16-bit copy of dx: dx as without it, the copy exactly dx rounded,
                        // and the same copy when it is the only output.
                        using var withCopy = Tensor.Zeros(dev, rows, N);
                        using var alone = Tensor.Zeros(dev, rows, N);
                        using var copy = Tensor.Empty(dev, half, rows, N);
                        using var copyWide = Tensor.Zeros(dev, rows, N);
                        using var copyAlone = Tensor.Empty(dev, half, rows, N);
                        using var copyAloneWide = Tensor.Zeros(dev, rows, N);
                        k.GeluBackward(withCopy.Data, copy.HalfData, dy.Data, GemmOperand.Packed(packed.HalfData), rows * N, false);
                        k.GeluBackward(alone.Data, null, dy.Data, GemmOperand.Packed(packed.HalfData), rows * N, false);
                        k.GeluBackward(null, copyAlone.HalfData, dy.Data, GemmOperand.Packed(packed.HalfData), rows * N, false); // only the products read dx
                        k.UnpackLowPrecision(copyWide.Data, copy.HalfData, rows * N, precision);
                        k.UnpackLowPrecision(copyAloneWide.Data, copyAlone.HalfData, rows * N, precision);
                        float[] dxs = alone.ToArray(), dxsWithCopy = withCopy.ToArray(), copies = copyWide.ToArray(), copiesAlone = copyAloneWide.ToArray();
                        for (int i = 0; i < rows * N; i++)
                        {
                            if (!Same(dxs[i], dxsWithCopy[i])) throw new ConformanceException($"{name}: GeluBackward's dx[{i}] is {dxsWithCopy[i]:G9} beside a 16-bit copy, {dxs[i]:G9} alone");
                            if (!Same(copies[i], RoundReference(dxs[i], precision)))
                                throw new ConformanceException($"{name}: GeluBackward's 16-bit copy [{i}] is {copies[i]:G9}, want {RoundReference(dxs[i], precision):G9} ({dxs[i]:G9} rounded)");
                            if (!Same(copiesAlone[i], copies[i]))
                                throw new ConformanceException($"{name}: GeluBackward writing dx in 16 bits alone gave [{i}] = {copiesAlone[i]:G9}, beside float32 dx {copies[i]:G9}");
                        }
                    }

                    // The op: what the tape keeps, and the gradients against float32 saves. SSF's weight is frozen (as in
                    // SSF), so only the kept output differs between the two.
                    (float[][] Grads, long Saved) Run(bool sixteen)
                    {
                        Ops.SaveLinearOutputsInGemmPrecision = sixteen;
                        using var xt = Tensor.FromArray(dev, xs, rows, K);
                        using var wt = Tensor.FromArray(dev, ws, N, K);
                        using var bt = Tensor.FromArray(dev, op == 0 ? bs : scales, N);
                        using var st = Tensor.FromArray(dev, shifts, N);
                        xt.RequiresGrad = bt.RequiresGrad = st.RequiresGrad = true;
                        wt.RequiresGrad = op == 0;
                        var tape = new Autograd.Tape();
                        long saved;
                        using (tape.Record())
                        {
                            using var z = op == 0 ? Ops.LinearGelu(xt, wt, bt) : op == 1 ? Ops.LinearScaleShift(xt, wt, bt, st) : Ops.LinearScaleShiftGelu(xt, wt, bt, st);
                            saved = tape.SavedBytes;
                            tape.Backward(z, dy);
                        }
                        return (op == 0 ? [xt.Grad!.ToArray(), wt.Grad!.ToArray(), bt.Grad!.ToArray()] : [xt.Grad!.ToArray(), bt.Grad!.ToArray(), st.Grad!.ToArray()], saved);
                    }
                    var wide = Run(sixteen: false);
                    var narrow = Run(sixteen: true);
                    if (narrow.Saved != wide.Saved - 2L * rows * N)
                        throw new ConformanceException($"{name}: the tape kept {narrow.Saved} bytes with 16-bit outputs, expected {wide.Saved - 2L * rows * N} ({wide.Saved} in float32)");
                    // Per (row, output): g, the gradient into the Linear's output (before SSF's scale), its size and how far
                    // it may move; GELU's slope is below 1.13.
                    double S(int n) => op == 0 ? 1 : Math.Abs(scales[n]);
                    double Moved(int r, int n) => op == 1 ? 0 : Math.Abs(dys[r * N + n]) * 0.8 * ur * Math.Abs(us[r * N + n]) * S(n) * 1.01;
                    double Size(int r, int n) => (op == 1 ? 1 : 1.13) * Math.Abs(dys[r * N + n]);
                    // dx's product reads g·scale rounded to 16 bits: one step of that rounding may differ too (not for plain
                    // SSF, whose g is dy itself).
                    double IntoLinear(int r, int n) => (Moved(r, n) + (op == 1 ? 0 : 2 * ur * Size(r, n))) * S(n);
                    void Within(string grad, int count, Func<int, double> bound, float[] got, float[] reference)
                    {
                        for (int i = 0; i < count; i++)
                            if (Math.Abs(got[i] - reference[i]) > bound(i) + 1e-6 * Math.Abs(reference[i]) + 1e-7)
                                throw new ConformanceException($"{name}: {grad}[{i}] is {got[i]:G9} with 16-bit outputs kept, {reference[i]:G9} with float32; they may differ by {bound(i):G3}");
                    }
                    Within("dx", rows * K, i => Enumerable.Range(0, N).Sum(n => IntoLinear(i / K, n) * Math.Abs(ws[n * K + i % K])), narrow.Grads[0], wide.Grads[0]);
                    if (op == 0)
                    {
                        Within("dW", N * K, i => Enumerable.Range(0, rows).Sum(r => IntoLinear(r, i / K) * Math.Abs(xs[r * K + i % K])), narrow.Grads[1], wide.Grads[1]);
                        Within("db", N, n => Enumerable.Range(0, rows).Sum(r => Moved(r, n)), narrow.Grads[2], wide.Grads[2]);
                    }
                    else
                    {
                        // dscale = Σ g·u: g moves, and u is rounded; dshift = Σ g.
                        Within("dscale", N, n => Enumerable.Range(0, rows).Sum(r => (Moved(r, n) + Size(r, n) * ur) * Math.Abs(us[r * N + n])), narrow.Grads[1], wide.Grads[1]);
                        Within("dshift", N, n => Enumerable.Range(0, rows).Sum(r => Moved(r, n)), narrow.Grads[2], wide.Grads[2]);
                    }
                    int moving = op == 0 ? 2 : 1; // db, or dscale: a sum over rows that must see the rounded values
                    if (narrow.Grads[moving].Zip(wide.Grads[moving]).All(p => Same(p.First, p.Second)))
                        throw new ConformanceException($"{name}: {(op == 0 ? "db" : "dscale")} is bit for bit the float32 saves' one: the backward did not read the 16-bit values");
                }
            }
        }
        finally
        {
            (k.GemmPrecision, Ops.SaveLinearOutputsInGemmPrecision) = previous;
        }
    }

    /// <summary>Under bf16 and fp16 GEMMs, ops told that only Linear products read their output (<c>gemmInput</c>:
    /// LayerNorm, LinearGelu, LinearScaleShiftGelu) write it in that 16-bit format, and the Linear ops read and keep it
    /// as it is; SSF's Linear sites write their product's gradient in 16 bits too. A block of three branches from one
    /// LayerNorm (norm → Linear; norm → LinearGelu → Linear with sparse (GPS) entries; norm → SSF's LinearScaleShiftGelu
    /// → LinearScaleShift with a frozen scale, both with frozen weights) gives, in inference and in training, the same output and every gradient
    /// bit for bit as with float32 outputs, and as with nothing in 16 bits (<c>SaveGemmOperandsInGemmPrecision</c> off):
    /// the products round those values the same way. Each 16-bit output is exactly the float32 one rounded, and the tape
    /// keeps the same bytes. The Linear after LinearGelu computes its input again from the kept 16-bit pre-activation
    /// (<c>RecomputeGeluOutputs</c>): every gradient bit for bit as when it keeps the input, with its bytes fewer kept. A 16-bit input under GEMMs of the other format is refused, and fp32 GEMMs keep float32
    /// outputs.</summary>
    static unsafe void GemmInputsInGemmPrecision(Device dev)
    {
        const int rows = 27, C = 20, N = 36;
        float[] Values(ulong seed, int n, float scale) => [.. Enumerable.Range(0, n).Select(i => (float)(CounterRng.Uniform(seed, (ulong)i) * 2 - 1) * scale)];
        var k = dev.Kernels;
        var previous = (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision, Ops.RecomputeGeluOutputs);
        string[] names = ["dx", "dnorm.weight", "dnorm.bias", "dW1", "db1", "dW2", "db2", "dW3 (selected entries)", "db3", "dscale4", "dshift4"];
        using var oneProduct = OneGemmPerLinear(dev); // outputs in float32 and in 16 bits from one GEMM
        try
        {
            foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
            {
                k.GemmPrecision = precision;
                var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
                string name = $"GemmInputsInGemmPrecision {precision.Name()}";
                // Returns z's values, the gradients (training), the 16-bit outputs widened and their float32 twins, the tape's
                // bytes; sixteenBitSaves false: nothing in 16 bits between the products (the reference for the gradients).
                (float[] Z, float[][] Grads, List<float[]> Outputs, long Saved) Run(bool gemmInput, bool train, bool sixteenBitSaves = true, bool recompute = true)
                {
                    Ops.SaveGemmOperandsInGemmPrecision = sixteenBitSaves;
                    Ops.RecomputeGeluOutputs = recompute;
                    using var made = new CaseTensors(dev);
                    var x = made.Uniform(201, 2f, rows, C);
                    var nw = made.Uniform(202, 1f, C);
                    var nb = made.Uniform(203, 0.5f, C);
                    var w1 = made.Uniform(204, 0.5f, N, C);
                    var b1 = made.Uniform(205, 0.5f, N);
                    var w2 = made.Uniform(206, 0.5f, C, C);
                    var b2 = made.Uniform(207, 0.5f, C);
                    var w3 = made.Uniform(208, 0.5f, N, C);
                    var b3 = made.Uniform(209, 0.5f, N);
                    var w4 = made.Uniform(210, 0.5f, C, C);
                    var s4 = made.Uniform(211, 1.5f, C);
                    var t4 = made.Uniform(212, 0.5f, C);
                    var w5 = made.Uniform(213, 0.5f, N, C);
                    var s5 = made.Uniform(214, 1.5f, N);
                    var t5 = made.Uniform(215, 0.5f, N);
                    var upstream = made.Uniform(216, 1f, rows, N);
                    var index = Tensor.FromArray(dev, [.. Enumerable.Range(0, N * 3).Select(e => (e * 7 + e / 3) % C)], N, 3);
                    made.Own(index);
                    Tensor[] trained = [x, nw, nb, w1, b1, w2, b2, w3, b3, s4, t4]; // s5, t5 frozen: a layer scale (ConvNeXt's γ)
                    foreach (var p in trained) p.RequiresGrad = train;
                    if (train) w3.Trainability = Trainability.Selected(index);
                    var tape = new Autograd.Tape();
                    var outputs = new List<float[]>();
                    void Expect(Tensor output)
                    {
                        var want = gemmInput && sixteenBitSaves ? half : DType.F32;
                        if (output.DType != want) throw new ConformanceException($"{name}: an output written with gemmInput: {gemmInput} is {output.DType}, want {want}");
                        if (output.DType == DType.F32)
                        {
                            outputs.Add(output.ToArray());
                            return;
                        }
                        using var wide = Tensor.Empty(dev, DType.F32, output.Shape);
                        k.UnpackLowPrecision(wide.Data, output.HalfData, output.Count, precision);
                        outputs.Add(wide.ToArray());
                    }
                    long saved = 0;
                    float[] z;
                    using (train ? tape.Record() : (IDisposable?)null)
                    {
                        using var h = Ops.LayerNorm(x, nw, nb, 1e-5f, gemmInput);
                        using var y1 = Ops.Linear(h, w1, b1);
                        using var g = Ops.LinearGelu(h, w2, b2, gemmInput);
                        using var y3 = Ops.Linear(g, w3, b3);
                        using var u = Ops.LinearScaleShiftGelu(h, w4, s4, t4, gemmInput);
                        using var y5 = Ops.LinearScaleShift(u, w5, s5, t5);
                        using var sum = Ops.Add(y1, y3);
                        using var total = Ops.Add(sum, y5);
                        Expect(h);
                        Expect(g);
                        Expect(u);
                        z = total.ToArray();
                        if (train)
                        {
                            saved = tape.SavedBytes;
                            tape.Backward(total, upstream);
                        }
                    }
                    return (z, train ? [.. trained.Select(p => p.Grad!.ToArray())] : [], outputs, saved);
                }

                static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
                foreach (bool train in new[] { false, true })
                {
                    string mode = train ? "training" : "inference";
                    var wide = Run(gemmInput: false, train);
                    var narrow = Run(gemmInput: true, train);
                    for (int i = 0; i < wide.Z.Length; i++)
                        if (!Same(wide.Z[i], narrow.Z[i]))
                            throw new ConformanceException($"{name} ({mode}): z[{i}] is {narrow.Z[i]:G9} with 16-bit outputs, {wide.Z[i]:G9} with float32");
                    string[] outputNames = ["LayerNorm's", "LinearGelu's", "LinearScaleShiftGelu's"];
                    for (int o = 0; o < outputNames.Length; o++)
                        for (int i = 0; i < wide.Outputs[o].Length; i++)
                            if (!Same(narrow.Outputs[o][i], RoundReference(wide.Outputs[o][i], precision)))
                                throw new ConformanceException($"{name} ({mode}): {outputNames[o]} 16-bit output [{i}] is {narrow.Outputs[o][i]:G9}, want {RoundReference(wide.Outputs[o][i], precision):G9} ({wide.Outputs[o][i]:G9} rounded)");
                    if (!train) continue;
                    // The selected entries sum dy and x rounded as the dense product rounds them, whether they come in 16
                    // bits or float32, so they too are bit for bit the same with nothing in 16 bits.
                    var reference = Run(gemmInput: true, train, sixteenBitSaves: false);
                    foreach (var (run, against, what) in new[] { (narrow, wide, "float32 outputs"), (narrow, reference, "nothing in 16 bits") })
                        for (int g = 0; g < names.Length; g++)
                            for (int i = 0; i < against.Grads[g].Length; i++)
                                if (!Same(against.Grads[g][i], run.Grads[g][i]))
                                    throw new ConformanceException($"{name}: {names[g]}[{i}] is {run.Grads[g][i]:G9} with 16-bit outputs, {against.Grads[g][i]:G9} with {what}");
                    if (narrow.Saved != wide.Saved)
                        throw new ConformanceException($"{name}: the tape kept {narrow.Saved} bytes with 16-bit outputs, {wide.Saved} with float32 (the Linears keep the 16-bit inputs themselves instead of 16-bit copies)");
                    // The Linear after LinearGelu (selected entries) computes its input again from the kept 16-bit
                    // pre-activation: every gradient bit for bit as when it keeps its input, and exactly that input's bytes
                    // fewer kept (16-bit, or float32 with nothing in 16 bits).
                    foreach (var (recomputing, sixteen) in new[] { (narrow, true), (reference, false) })
                    {
                        var keeping = Run(gemmInput: true, train, sixteenBitSaves: sixteen, recompute: false);
                        string what = sixteen ? "16-bit outputs" : "nothing in 16 bits";
                        for (int g = 0; g < names.Length; g++)
                            for (int i = 0; i < keeping.Grads[g].Length; i++)
                                if (!Same(keeping.Grads[g][i], recomputing.Grads[g][i]))
                                    throw new ConformanceException($"{name} ({what}): {names[g]}[{i}] is {recomputing.Grads[g][i]:G9} with LinearGelu's output computed again, {keeping.Grads[g][i]:G9} kept");
                        long input = (sixteen ? 2L : 4L) * rows * C;
                        if (keeping.Saved != recomputing.Saved + input)
                            throw new ConformanceException($"{name} ({what}): the tape kept {recomputing.Saved} bytes computing LinearGelu's output again, {keeping.Saved} keeping it; expected {input} fewer");
                    }
                }

                // A 16-bit input the GEMMs do not read as it is: refused, naming the input.
                Ops.SaveGemmOperandsInGemmPrecision = true;
                using (var bad = Tensor.Empty(dev, precision == Precision.BF16 ? DType.F16 : DType.BF16, rows, C))
                using (var w = Tensor.Zeros(dev, N, C))
                {
                    try
                    {
                        Ops.Linear(bad, w).Dispose();
                        throw new ConformanceException($"{name}: Linear took a {bad.DType} input under {precision.Name()} GEMMs");
                    }
                    catch (ArgumentException e) when (e.Message.Contains("input") && e.Message.Contains(bad.DType.ToString())) { }
                }
            }
            foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
            {
                k.GemmPrecision = precision;
                LinearOutputsInGemmPrecision(dev, precision);
            }
            k.GemmPrecision = Precision.FP32;
            using var x32 = Tensor.FromArray(dev, Values(217, rows * C, 1f), rows, C);
            using var normed = Ops.LayerNorm(x32, null, null, 1e-5f, gemmInput: true);
            if (normed.DType != DType.F32) throw new ConformanceException($"GemmInputsInGemmPrecision fp32: LayerNorm wrote {normed.DType} with gemmInput under fp32 GEMMs");
        }
        finally
        {
            (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision, Ops.RecomputeGeluOutputs) = previous;
        }
    }

    /// <summary>Linear and SSF's LinearScaleShift told that only products read their output (<c>gemmInput</c>: a ViT
    /// block's qkv) write it in the GEMMs' 16-bit format: exactly the float32 output rounded, with and without a bias; a
    /// Linear reading it trains every parameter bit for bit as from the float32 output; with a residual it is refused.</summary>
    static unsafe void LinearOutputsInGemmPrecision(Device dev, Precision precision)
    {
        const int rows = 29, C = 24, N = 36, M = 12;
        string name = $"GemmInputsInGemmPrecision {precision.Name()} (Linear outputs)";
        static float[] Values(ulong seed, int n, float scale) => [.. Enumerable.Range(0, n).Select(i => (float)(CounterRng.Uniform(seed, (ulong)i) * 2 - 1) * scale)];
        static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
        var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
        foreach (var (layer, withBias) in new[] { ("Linear", true), ("Linear", false), ("LinearScaleShift", true) })
        {
            string what = $"{name}: {layer}{(withBias ? "" : " without a bias")}";
            (float[] Y, float[][] Grads, DType Type) Run(bool gemmInput)
            {
                using var x = Tensor.FromArray(dev, Values(301, rows * C, 1f), rows, C);
                using var w = Tensor.FromArray(dev, Values(302, N * C, 0.3f), N, C);
                using var b = Tensor.FromArray(dev, Values(303, N, 0.5f), N);
                using var scale = Tensor.FromArray(dev, Values(304, N, 1f), N);
                using var w2 = Tensor.FromArray(dev, Values(305, M * N, 0.3f), M, N);
                using var dz = Tensor.FromArray(dev, Values(306, rows * M, 1f), rows, M);
                Tensor[] trained = layer == "Linear" ? withBias ? [x, w, b, w2] : [x, w, w2] : [x, scale, b, w2];
                foreach (var t in trained) t.RequiresGrad = true;
                var tape = new Autograd.Tape();
                using (tape.Record())
                {
                    using var y = layer == "Linear" ? Ops.Linear(x, w, withBias ? b : null, gemmInput: gemmInput)
                        : Ops.LinearScaleShift(x, w, scale, b, gemmInput: gemmInput);
                    float[] values;
                    if (y.DType == DType.F32) values = y.ToArray();
                    else
                    {
                        using var wide = Tensor.Empty(dev, DType.F32, y.Shape);
                        dev.Kernels.UnpackLowPrecision(wide.Data, y.HalfData, y.Count, precision);
                        values = wide.ToArray();
                    }
                    using var z = Ops.Linear(y, w2); // reads y as its product rounds it
                    tape.Backward(z, dz);
                    return (values, [.. trained.Select(t => t.Grad!.ToArray())], y.DType);
                }
            }
            var wide = Run(false);
            var narrow = Run(true);
            if (wide.Type != DType.F32 || narrow.Type != half)
                throw new ConformanceException($"{what}: wrote {wide.Type} without gemmInput and {narrow.Type} with it (want F32 and {half})");
            for (int i = 0; i < wide.Y.Length; i++)
                if (!Same(narrow.Y[i], RoundReference(wide.Y[i], precision)))
                    throw new ConformanceException($"{what}: the 16-bit output [{i}] is {narrow.Y[i]:G9}, want {RoundReference(wide.Y[i], precision):G9}");
            for (int g = 0; g < wide.Grads.Length; g++)
                for (int i = 0; i < wide.Grads[g].Length; i++)
                    if (!Same(wide.Grads[g][i], narrow.Grads[g][i]))
                        throw new ConformanceException($"{what}: gradient {g}[{i}] is {narrow.Grads[g][i]:G9} with the 16-bit output, {wide.Grads[g][i]:G9} with float32");
        }
        using (var x = Tensor.Zeros(dev, rows, C))
        using (var w = Tensor.Zeros(dev, N, C))
        using (var r = Tensor.Zeros(dev, rows, N))
        {
            try
            {
                Ops.Linear(x, w, null, r, gemmInput: true).Dispose();
                throw new ConformanceException($"{name}: Linear wrote a residual sum in 16 bits");
            }
            catch (ArgumentException e) when (e.Message.Contains("residual")) { }
        }
    }

    /// <summary>A gradient's 16-bit copy, written by the backward kernel that stores the gradient last, for the products of
    /// the Linear layer that made the tensor (<c>Tensor.GradCopy</c>). Kernels: LayerNormBackward (one pass with parameter
    /// sums; two kernels for rows of 1,030 or without them), SplitHeadsBackward (head dims 8 and 3) and
    /// FusedAttentionBackward (head dim 64, tensor cores on CUDA; head dim 8), written and accumulated, leave dx bit for
    /// bit as without the copy, and the copy is dx rounded. Ops: a block's pattern (the norm before qkv, the unfused
    /// attention, a projection joining the stream, a second norm and layer) trains bit for bit as with nothing in 16
    /// bits, with a consumer of the stream whose backward runs before the norm's (the copy is used) and one whose runs
    /// after it (the copy is stale and dropped); so does a norm, a 16-bit qkv and the fused attention at head dim 64.</summary>
    static unsafe void GradientCopies(Device dev)
    {
        var k = dev.Kernels;
        var previous = (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision, Ops.DefaultAttentionPath);
        static float[] Values(ulong seed, long n, float scale) => [.. Enumerable.Range(0, (int)n).Select(i => (float)(CounterRng.Uniform(seed, (ulong)i) * 2 - 1) * scale)];
        using var oneProduct = OneGemmPerLinear(dev); // the runs compared bit for bit write the qkv layer's output in 16 bits or not
        static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
        try
        {
            foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
            {
                k.GemmPrecision = precision;
                var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
                string name = $"GradientCopies {precision.Name()}";
                // One kernel call with and without the copy, from the same starting dx: the same dx, and the copy is it rounded.
                void CheckKernel(string what, long n, Action<IntPtr, IntPtr, bool> run, ulong seed)
                {
                    foreach (bool accumulate in new[] { false, true })
                    {
                        using var plain = Tensor.FromArray(dev, Values(seed, n, 3f), (int)n);
                        using var copied = Tensor.FromArray(dev, Values(seed, n, 3f), (int)n);
                        using var copy = Tensor.Empty(dev, half, (int)n);
                        run((IntPtr)plain.Data, IntPtr.Zero, accumulate);
                        run((IntPtr)copied.Data, (IntPtr)copy.HalfData, accumulate);
                        using var wide = Tensor.Empty(dev, DType.F32, (int)n);
                        k.UnpackLowPrecision(wide.Data, copy.HalfData, n, precision);
                        float[] want = plain.ToArray(), got = copied.ToArray(), rounded = wide.ToArray();
                        for (int i = 0; i < n; i++)
                        {
                            if (!Same(want[i], got[i]))
                                throw new ConformanceException($"{name}: {what} (accumulate {accumulate}) dx[{i}] is {got[i]:G9} with the copy, {want[i]:G9} without");
                            if (!Same(rounded[i], RoundReference(want[i], precision)))
                                throw new ConformanceException($"{name}: {what} (accumulate {accumulate}) copy[{i}] is {rounded[i]:G9}, want {RoundReference(want[i], precision):G9} ({want[i]:G9} rounded)");
                        }
                    }
                }
                foreach (var (rows, C) in new[] { (37, 24), (5, 1030) })
                    foreach (bool paramGrads in new[] { true, false })
                    {
                        using var dy = Tensor.FromArray(dev, Values(401, (long)rows * C, 1f), rows, C);
                        using var x = Tensor.FromArray(dev, Values(402, (long)rows * C, 2f), rows, C);
                        using var w = Tensor.FromArray(dev, Values(403, C, 1.5f), C);
                        using var mean = Tensor.FromArray(dev, Values(404, rows, 0.5f), rows);
                        using var rstd = Tensor.FromArray(dev, [.. Values(405, rows, 0.5f).Select(v => v + 1.5f)], rows);
                        using var sums = Tensor.Zeros(dev, 2, C);
                        CheckKernel($"LayerNormBackward {rows}×{C}{(paramGrads ? " with parameter sums" : "")}", (long)rows * C, (dx, copy, accumulate) =>
                            k.LayerNormBackward((float*)dx, (ushort*)copy, paramGrads ? sums.Data : null, paramGrads ? sums.Data + C : null, dy.Data, x.Data,
                                w.Data, mean.Data, rstd.Data, rows, C, accumulate), 406);
                    }
                foreach (int HD in new[] { 8, 3 })
                {
                    const int B = 2, T = 7, NH = 3;
                    long part = (long)B * NH * T * HD;
                    using var heads = Tensor.FromArray(dev, Values(407, 3 * part, 1f), (int)(3 * part));
                    CheckKernel($"SplitHeadsBackward head dim {HD}", 3 * part, (dqkv, copy, accumulate) =>
                        k.SplitHeadsBackward((float*)dqkv, (ushort*)copy, heads.Data, heads.Data + part, heads.Data + 2 * part, B, T, NH, HD, accumulate), 408);
                }
                foreach (int HD in new[] { 64, 8 }) // the tensor-core kernels (CUDA), and the FMA ones
                {
                    const int B = 2, T = 21, NH = 2;
                    int C = NH * HD;
                    float scale = 1f / MathF.Sqrt(HD);
                    using var made = new CaseTensors(dev);
                    var qkv = made.Uniform(421, 2f, B, T, 3 * C);
                    var dy = made.Uniform(422, 1f, B, T, C);
                    var y = made.Own(Tensor.Empty(dev, DType.F32, B, T, C));
                    var lse = made.Own(Tensor.Empty(dev, DType.F32, B, NH, T));
                    var delta = made.Own(Tensor.Empty(dev, DType.F32, B, NH, T));
                    k.FusedAttentionForward(y.Data, null, lse.Data, qkv.Data, null, null, B, T, NH, HD, 1, scale);
                    CheckKernel($"FusedAttentionBackward head dim {HD}", (long)B * T * 3 * C, (dqkv, copy, accumulate) =>
                        k.FusedAttentionBackward((float*)dqkv, (ushort*)copy, null, delta.Data, dy.Data, y.Data, lse.Data, qkv.Data, null, null,
                            B, T, NH, HD, 1, scale, accumulate), 423);
                }

                // A block's pattern, trained with the copies and with nothing in 16 bits (no copies, float32 everywhere
                // between the products): the same gradients bit for bit. A ScaleShift of the stream y is recorded after the
                // second norm (its backward runs first: the norm's copy of y's gradient is used) or before it (its backward
                // adds to y's gradient after the norm wrote the copy: dropped).
                Ops.DefaultAttentionPath = AttentionPath.Unfused;
                foreach (bool extraFirst in new[] { false, true })
                {
                    string variant = extraFirst ? "a stale copy" : "the copy used";
                    float[][] Run(bool sixteen)
                    {
                        Ops.SaveGemmOperandsInGemmPrecision = sixteen;
                        const int B = 2, T = 5, C = 8;
                        using var made = new CaseTensors(dev);
                        var x = made.Uniform(411, 2f, B, T, C);
                        var wqkv = made.Uniform(412, 0.5f, 3 * C, C);
                        var bqkv = made.Uniform(413, 0.5f, 3 * C);
                        var wp = made.Uniform(414, 0.5f, C, C);
                        var bp = made.Uniform(415, 0.5f, C);
                        var w2 = made.Uniform(416, 0.5f, C, C);
                        var b2 = made.Uniform(417, 0.5f, C);
                        var scale = made.Uniform(418, 1.5f, C);
                        var shift = made.Uniform(419, 0.5f, C);
                        return Gradients([x, wqkv, bqkv, wp, bp, w2, b2, scale, shift], made.Uniform(420, 1f, B, T, C), () =>
                        {
                            using var h = Ops.LayerNorm(x, null, null, 1e-5f, gemmInput: true);
                            using var qkv = Ops.Linear(h, wqkv, bqkv);
                            using var a = Ops.Attention(qkv, 2, gemmInput: true);
                            using var y = Ops.Linear(a, wp, bp, x);
                            using var early = extraFirst ? Ops.ScaleShift(y, scale, shift) : null;
                            using var n2 = Ops.LayerNorm(y, null, null, 1e-5f, gemmInput: true);
                            using var f = Ops.Linear(n2, w2, b2, y);
                            using var late = extraFirst ? null : Ops.ScaleShift(y, scale, shift);
                            return Ops.Add(f, early ?? late!);
                        });
                    }
                    CheckSameGradients(variant, Run(sixteen: false), Run(sixteen: true), ["dx", "dW qkv", "db qkv", "dW proj", "db proj", "dW2", "db2", "dscale", "dshift"]);
                }
                // The fused attention at head dim 64 (tensor cores on CUDA: q|k|v in 16 bits from the qkv layer, and its
                // backward's copy of dqkv for that layer's products).
                float[][] RunFused(bool sixteen)
                {
                    Ops.SaveGemmOperandsInGemmPrecision = sixteen;
                    const int B = 2, T = 9, C = 128;
                    using var made = new CaseTensors(dev);
                    var x = made.Uniform(431, 2f, B, T, C);
                    var wqkv = made.Uniform(432, 0.2f, 3 * C, C);
                    var bqkv = made.Uniform(433, 0.5f, 3 * C);
                    var wp = made.Uniform(434, 0.2f, C, C);
                    return Gradients([x, wqkv, bqkv, wp], made.Uniform(435, 1f, B, T, C), () =>
                    {
                        using var h = Ops.LayerNorm(x, null, null, 1e-5f, gemmInput: true);
                        using var qkv = Ops.Linear(h, wqkv, bqkv, gemmInput: k.FusedAttentionKeepsSixteenBits(64, bias: false));
                        using var a = Ops.Attention(qkv, 2, fused: true);
                        return Ops.Linear(a, wp, null, x);
                    });
                }
                CheckSameGradients("fused attention, head dim 64", RunFused(sixteen: false), RunFused(sixteen: true), ["dx", "dW qkv", "db qkv", "dW proj"]);

                // Every trained tensor's gradient after one backward of forward()'s output from upstream.
                static float[][] Gradients(Tensor[] trained, Tensor upstream, Func<Tensor> forward)
                {
                    foreach (var p in trained) p.RequiresGrad = true;
                    var tape = new Autograd.Tape();
                    using (tape.Record())
                    {
                        using var output = forward();
                        tape.Backward(output, upstream);
                    }
                    return [.. trained.Select(p => p.Grad!.ToArray())];
                }

                void CheckSameGradients(string variant, float[][] want, float[][] got, string[] names)
                {
                    for (int g = 0; g < names.Length; g++)
                        for (int i = 0; i < want[g].Length; i++)
                            if (!Same(want[g][i], got[g][i]))
                                throw new ConformanceException($"{name} ({variant}): {names[g]}[{i}] is {got[g][i]:G9} with 16-bit values between the products, {want[g][i]:G9} with none");
                }
            }
        }
        finally
        {
            (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision, Ops.DefaultAttentionPath) = previous;
        }
    }

    static void GemmTf32(Device dev) => LowPrecisionGemm(dev, Precision.TF32);
    static void GemmBf16(Device dev) => LowPrecisionGemm(dev, Precision.BF16);
    static void GemmFp16(Device dev) => LowPrecisionGemm(dev, Precision.FP16);

    /// <summary>Gemm (every transpose pair, alpha and beta), GemmStridedBatched and LinearForward with the device's
    /// GEMM precision set: each equals the double-precision product of the operands rounded by
    /// <see cref="RoundReference"/>, to fp32 accumulation error. In bf16 and fp16, again with either or both operands
    /// packed in 16 bits (and LinearForward given its packed x). Sizes cross the CPU tiles and K blocks.</summary>
    static unsafe void LowPrecisionGemm(Device dev, Precision precision)
    {
        const int M = 19, N = 37, K = 300, batch = 2;
        float[] Values(ulong seed, int n) => [.. Enumerable.Range(0, n).Select(i => (float)(CounterRng.Uniform(seed, (ulong)i) * 2 - 1))];
        var a = Values(81, batch * M * K);
        var b = Values(82, batch * K * N);
        var c0 = Values(83, batch * M * N);
        var bias = Values(84, N);
        var k = dev.Kernels;
        var previous = k.GemmPrecision;
        k.GemmPrecision = precision;
        try
        {
            using var ta = Tensor.FromArray(dev, a, a.Length);
            using var tb = Tensor.FromArray(dev, b, b.Length);
            using var tbias = Tensor.FromArray(dev, bias, N);
            string name = $"Gemm{precision}";
            // want[i,j] = alpha·Σ_k ra(i,k)·rb(k,j) + beta·c; tolerance: fp32 rounding of the accumulation.
            void Check(string what, float[] got, Func<int, int, int, float> opA, Func<int, int, int, float> opB, float alpha, float beta,
                float[]? c, float[]? addBias)
            {
                var want = new double[got.Length];
                var scale = new double[got.Length];
                for (int p = 0; p < got.Length / (M * N); p++)
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++)
                        {
                            double s = 0, abs = 0;
                            for (int kk = 0; kk < K; kk++)
                            {
                                double term = (double)RoundReference(opA(p, i, kk), precision) * RoundReference(opB(p, kk, j), precision);
                                s += term;
                                abs += Math.Abs(term);
                            }
                            int o = (p * M + i) * N + j;
                            double cv = c == null ? 0 : c[o];
                            want[o] = alpha * s + beta * cv + (addBias == null ? 0 : addBias[j]);
                            scale[o] = Math.Abs(alpha) * abs + Math.Abs(beta * cv) + (addBias == null ? 0 : Math.Abs(addBias[j]));
                        }
                for (int o = 0; o < got.Length; o++)
                    if (!(Math.Abs(got[o] - want[o]) <= 1e-6 * scale[o] * Math.Sqrt(K) + 1e-7))
                        throw new ConformanceException($"{name} {what}: element {o} is {got[o]:G9}, want {want[o]:G9} (operands rounded to {precision.Name()})");
            }
            foreach (bool transA in new[] { false, true })
                foreach (bool transB in new[] { false, true })
                {
                    using var tc = Tensor.FromArray(dev, c0[..(M * N)], M * N);
                    int lda = transA ? M : K, ldb = transB ? K : N;
                    k.Gemm(transA, transB, M, N, K, 0.75f, ta.Data, lda, tb.Data, ldb, 0.5f, tc.Data, N);
                    Check($"transA={transA} transB={transB}", tc.ToArray(),
                        (_, i, kk) => transA ? a[kk * M + i] : a[i * K + kk], (_, kk, j) => transB ? b[j * K + kk] : b[kk * N + j],
                        0.75f, 0.5f, c0, null);
                }
            using (var tc = Tensor.Zeros(dev, batch * M * N))
            {
                k.GemmStridedBatched(false, true, M, N, K, 1f, ta.Data, K, (long)M * K, tb.Data, K, (long)N * K, 0f, tc.Data, N, (long)M * N, batch);
                Check("strided batched", tc.ToArray(), (p, i, kk) => a[p * M * K + i * K + kk], (p, kk, j) => b[p * N * K + j * K + kk],
                    1f, 0f, null, null);
            }
            using (var ty = Tensor.Zeros(dev, M * N))
            {
                k.LinearForward(ty.Data, null, ta.Data, null, tb.Data, tbias.Data, null, M, N, K);
                Check("LinearForward", ty.ToArray(), (_, i, kk) => a[i * K + kk], (_, kk, j) => b[j * K + kk], 1f, 0f, null, bias);
            }
            if (precision is not (Precision.BF16 or Precision.FP16)) return;
            // Operands packed in 16 bits (a saved activation read as it was kept): the same products.
            var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
            using var pa = Tensor.Empty(dev, half, a.Length);
            using var pb = Tensor.Empty(dev, half, b.Length);
            k.PackLowPrecision(pa.HalfData, ta.Data, a.Length, precision);
            k.PackLowPrecision(pb.HalfData, tb.Data, b.Length, precision);
            foreach (var (packA, packB) in new[] { (true, false), (false, true), (true, true) })
                foreach (bool transA in new[] { false, true })
                    foreach (bool transB in new[] { false, true })
                    {
                        using var tc = Tensor.FromArray(dev, c0[..(M * N)], M * N);
                        int lda = transA ? M : K, ldb = transB ? K : N;
                        k.Gemm(transA, transB, M, N, K, 0.75f, packA ? GemmOperand.Packed(pa.HalfData) : ta.Data, lda,
                            packB ? GemmOperand.Packed(pb.HalfData) : tb.Data, ldb, 0.5f, tc.Data, N);
                        Check($"packed A={packA} B={packB} transA={transA} transB={transB}", tc.ToArray(),
                            (_, i, kk) => transA ? a[kk * M + i] : a[i * K + kk], (_, kk, j) => transB ? b[j * K + kk] : b[kk * N + j],
                            0.75f, 0.5f, c0, null);
                    }
            using (var ty = Tensor.Zeros(dev, M * N))
            {
                k.LinearForward(ty.Data, null, ta.Data, pa.HalfData, tb.Data, tbias.Data, null, M, N, K);
                Check("LinearForward with x packed", ty.ToArray(), (_, i, kk) => a[i * K + kk], (_, kk, j) => b[j * K + kk], 1f, 0f, null, bias);
            }
        }
        finally { k.GemmPrecision = previous; }
    }
}
