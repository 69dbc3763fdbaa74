using Engine.Kernels;

namespace Engine.Conformance;

// The Attention family's cases (Ops/Attention.cs): the unfused reference path and the fused kernels, each plain and
// Swin-style (relative position bias that trains, shift mask).
public static partial class OpCases
{
    // Head dim 3: the head permutes move one value at a time; 8: four (CUDA's vector path).
    static void Attention(Device dev)
    {
        PlainAttention(dev, "Attention", B: 2, T: 13, NH: 2, HD: 3, fused: false);
        PlainAttention(dev, "Attention HD8", B: 2, T: 7, NH: 3, HD: 8, fused: false);
    }

    // 33 tokens: two 32-key tiles (the second partial) and several row blocks on CUDA; head dim 34: a partial second
    // 32-lane chunk of dimensions. (Two heads and images with bias and mask in the next case.)
    static void FusedAttention(Device dev) => PlainAttention(dev, "FusedAttention", B: 2, T: 33, NH: 1, HD: 34, fused: true);

    // Swin-style: 2 images × 2 windows, a bias per head, −100 mask entries per window.
    static void AttentionWithBiasAndMask(Device dev) =>
        WindowAttention(dev, "Attention bias+mask", B: 4, T: 4, NH: 2, HD: 2, nW: 2, maskSeed: 99, fused: false);

    static void FusedAttentionWithBiasAndMask(Device dev) =>
        WindowAttention(dev, "FusedAttention bias+mask", B: 4, T: 9, NH: 2, HD: 5, nW: 2, maskSeed: 98, fused: true);

    static void PlainAttention(Device dev, string name, int B, int T, int NH, int HD, bool fused) =>
        GradCheck.Run(dev, name,
            [new("qkv", [B, T, 3 * NH * HD], -1, 1)],
            t => Ops.Attention(t[0], NH, fused: fused),
            v => Reference.Attention(v[0], B, T, NH, HD, null, null, 1));

    static void WindowAttention(Device dev, string name, int B, int T, int NH, int HD, int nW, ulong maskSeed, bool fused)
    {
        var maskValues = new double[nW * T * T];
        for (int i = 0; i < maskValues.Length; i++) maskValues[i] = CounterRng.Uniform(maskSeed, (ulong)i) < 0.3 ? -100 : 0;
        using var mask = Tensor.FromArray(dev, maskValues.Select(m => (float)m).ToArray(), nW, T, T);
        GradCheck.Run(dev, name,
            [new("qkv", [B, T, 3 * NH * HD], -2, 2), new("bias", [NH, T, T])],
            t => Ops.Attention(t[0], NH, t[1], mask, fused: fused),
            v => Reference.Attention(v[0], B, T, NH, HD, v[1], maskValues, nW));
    }

    /// <summary>Under bf16 GEMMs the fused attention rounds its products' operands as the unfused path's GEMMs do: its
    /// output and gradients (qkv, the bias) agree with the unfused path's within bf16 roundoff, and differ from its own
    /// fp32 results by more than fp32 noise (it did round). Swin-style: bias per head, masked windows, T past one
    /// 32-key tile.</summary>
    static void FusedAttentionBf16(Device dev) => FusedAttentionLowPrecision(dev, "FusedAttentionBf16", B: 2, T: 37, NH: 2, HD: 8, Precision.BF16);

    /// <summary>The same at ViT's head dim 64 in bf16 and fp16, where a GPU's forward runs on tensor cores (and the emulated
    /// device runs that kernel's code): 70 tokens cross a 64-key tile and a 64-query block; bias and mask as above.</summary>
    static void FusedAttentionHeadDim64(Device dev)
    {
        FusedAttentionLowPrecision(dev, "FusedAttentionHeadDim64", B: 2, T: 70, NH: 2, HD: 64, Precision.BF16);
        FusedAttentionLowPrecision(dev, "FusedAttentionHeadDim64", B: 2, T: 70, NH: 2, HD: 64, Precision.FP16);
        FusedAttentionPackedQkv(dev, Precision.BF16, HD: 64);
        FusedAttentionPackedQkv(dev, Precision.FP16, HD: 64);
    }

    /// <summary>The same at Swin's head dim 32, where a GPU runs the tensor-core kernels' 32-dim instance (and the
    /// emulated device its code): a window of 49 tokens (one 64-row tile, 15 rows idle) and 70 tokens across two, with the
    /// bias per head and the shift mask; bf16 and fp16, and what the fused path keeps in 16 bits.</summary>
    static void FusedAttentionHeadDim32(Device dev)
    {
        FusedAttentionLowPrecision(dev, "FusedAttentionHeadDim32", B: 4, T: 49, NH: 2, HD: 32, Precision.BF16);
        FusedAttentionLowPrecision(dev, "FusedAttentionHeadDim32", B: 2, T: 70, NH: 2, HD: 32, Precision.FP16);
        FusedAttentionPackedQkv(dev, Precision.BF16, HD: 32);
    }

    // What the fused path keeps in 16 bits where its kernels take it (FusedAttentionKeepsSixteenBits; the CPU takes them
    // too, widened): the backward from q|k|v in 16 bits gives dqkv and delta bit for bit those from float32 (a frozen
    // bias and a mask); an output written in 16 bits is the float32 one rounded, and the backward from it stays within
    // the format's bound of the float32 one. At the op: without gemmInput the same gradient as with nothing in 16 bits,
    // 2 bytes fewer kept per qkv value; with it a 16-bit output and 2 bytes fewer per output value too. The forward on
    // either path (FusedAttentionForward, SplitHeads) reads q|k|v in 16 bits as it is: the same output, heads and
    // gradients as from float32, and the op takes such a qkv on both paths. CUDA refuses 16-bit values where a bias trains.
    static unsafe void FusedAttentionPackedQkv(Device dev, Precision precision, int HD)
    {
        const int B = 2, T = 70, NH = 2, nW = 2;
        int C = NH * HD;
        string name = $"FusedAttentionHeadDim{HD} {precision.Name()} (16-bit saves)";
        float[] Values(ulong seed, int n, float range) => [.. Enumerable.Range(0, n).Select(i => (float)((CounterRng.Uniform(seed, (ulong)i) * 2 - 1) * range))];
        static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
        var k = dev.Kernels;
        var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
        double u = precision.UnitRoundoff() * 2;
        var previous = (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision);
        void CheckClose(string what, float[] want, float[] got)
        {
            double scale = want.Max(v => Math.Abs(v)), gap = want.Zip(got).Max(p => Math.Abs(p.First - p.Second));
            if (gap > scale * 3 * u)
                throw new ConformanceException($"{name}: {what} differs by {gap:G3} (max |value| {scale:G3}; bound 3·{u:G3} of it)");
        }
        try
        {
            k.GemmPrecision = precision;
            bool keeps = k.FusedAttentionKeepsSixteenBits(HD, bias: false);
            using var qkv = Tensor.FromArray(dev, Values(71, B * T * 3 * C, 2f), B, T, 3 * C);
            using var bias = Tensor.FromArray(dev, Values(72, NH * T * T, 1f), NH, T, T);
            using var mask = Tensor.FromArray(dev, ShiftMask(73, nW, T), nW, T, T);
            using var dy = Tensor.FromArray(dev, Values(74, B * T * C, 1f), B, T, C);
            if (keeps || dev is not CudaDevice)
            {
                using var y = Tensor.Empty(dev, DType.F32, B, T, C);
                using var y16 = Tensor.Empty(dev, half, B, T, C);
                using var lse = Tensor.Empty(dev, DType.F32, B, NH, T);
                using var lse16 = Tensor.Empty(dev, DType.F32, B, NH, T);
                float scale = 1f / MathF.Sqrt(HD);
                k.FusedAttentionForward(y.Data, null, lse.Data, qkv.Data, bias.Data, mask.Data, B, T, NH, HD, nW, scale);
                k.FusedAttentionForward(null, y16.HalfData, lse16.Data, qkv.Data, bias.Data, mask.Data, B, T, NH, HD, nW, scale);
                float[] yWide = y.ToArray(), yRounded = Widen(dev, y16, precision), lseWide = lse.ToArray(), lseOther = lse16.ToArray();
                for (int i = 0; i < yWide.Length; i++)
                    if (!Same(yRounded[i], RoundReference(yWide[i], precision)))
                        throw new ConformanceException($"{name}: the 16-bit output [{i}] is {yRounded[i]:G9}, want {RoundReference(yWide[i], precision):G9} ({yWide[i]:G9} rounded)");
                for (int i = 0; i < lseWide.Length; i++)
                    if (!Same(lseWide[i], lseOther[i]))
                        throw new ConformanceException($"{name}: lse[{i}] is {lseOther[i]:G9} with a 16-bit output, {lseWide[i]:G9} without");
                using var packed = Tensor.Empty(dev, half, qkv.Shape);
                k.PackLowPrecision(packed.HalfData, qkv.Data, qkv.Count, precision);
                // The forward reads a 16-bit qkv as it is: the output and lse from the values the kernels round q, k and v to.
                using (var yFromPacked = Tensor.Empty(dev, DType.F32, B, T, C))
                using (var lseFromPacked = Tensor.Empty(dev, DType.F32, B, NH, T))
                {
                    k.FusedAttentionForward(yFromPacked.Data, null, lseFromPacked.Data, GemmOperand.Packed(packed.HalfData), bias.Data, mask.Data, B, T, NH, HD, nW, scale);
                    foreach (var (part, a, b) in new[] { ("y", yWide, yFromPacked.ToArray()), ("lse", lseWide, lseFromPacked.ToArray()) })
                        for (int i = 0; i < a.Length; i++)
                            if (!Same(a[i], b[i]))
                                throw new ConformanceException($"{name}: the forward's {part}[{i}] is {b[i]:G9} from the 16-bit qkv, {a[i]:G9} from the float32 one");
                }
                // So does the unfused path's head split: the same 16-bit heads.
                using (var heads = Tensor.Empty(dev, half, 3 * B * NH * T * HD))
                using (var headsFromPacked = Tensor.Empty(dev, half, 3 * B * NH * T * HD))
                {
                    k.SplitHeads(null, heads.HalfData, qkv.Data, B, T, NH, HD);
                    k.SplitHeads(null, headsFromPacked.HalfData, GemmOperand.Packed(packed.HalfData), B, T, NH, HD);
                    float[] a = Widen(dev, heads, precision), b = Widen(dev, headsFromPacked, precision);
                    for (int i = 0; i < a.Length; i++)
                        if (!Same(a[i], b[i]))
                            throw new ConformanceException($"{name}: SplitHeads' 16-bit head value [{i}] is {b[i]:G9} from the 16-bit qkv, {a[i]:G9} from the float32 one");
                }
                (float[] Dqkv, float[] Delta) Backward(GemmOperand source, GemmOperand output)
                {
                    using var dqkv = Tensor.Zeros(dev, B, T, 3 * C);
                    using var delta = Tensor.Empty(dev, DType.F32, B, NH, T);
                    k.FusedAttentionBackward(dqkv.Data, null, null, delta.Data, dy.Data, output, lse.Data, source, bias.Data, mask.Data, B, T, NH, HD, nW, scale, false);
                    return (dqkv.ToArray(), delta.ToArray());
                }
                var want = Backward(qkv.Data, y.Data);
                var got = Backward(GemmOperand.Packed(packed.HalfData), y.Data);
                foreach (var (part, a, b) in new[] { ("dqkv", want.Dqkv, got.Dqkv), ("delta", want.Delta, got.Delta) })
                    for (int i = 0; i < a.Length; i++)
                        if (!Same(a[i], b[i]))
                            throw new ConformanceException($"{name}: {part}[{i}] is {b[i]:G9} from the 16-bit qkv, {a[i]:G9} from the float32 one");
                var fromRounded = Backward(GemmOperand.Packed(packed.HalfData), GemmOperand.Packed(y16.HalfData));
                CheckClose("dqkv from the 16-bit output", want.Dqkv, fromRounded.Dqkv);
            }
            (float[] Grad, long Kept, DType Output) Train(bool sixteen, bool gemmInput)
            {
                Ops.SaveGemmOperandsInGemmPrecision = sixteen;
                using var x = Tensor.FromArray(dev, qkv.ToArray(), qkv.Shape);
                x.RequiresGrad = true;
                var tape = new Autograd.Tape();
                using (tape.Record())
                {
                    using var output = Ops.Attention(x, NH, bias, mask, fused: true, gemmInput: gemmInput);
                    long kept = tape.SavedBytes;
                    tape.Backward(output, dy);
                    return (x.Grad!.ToArray(), kept, output.DType);
                }
            }
            var wide = Train(sixteen: false, gemmInput: true);
            var narrow = Train(sixteen: true, gemmInput: false);
            var narrowest = Train(sixteen: true, gemmInput: true);
            // The op given qkv in 16 bits (the qkv layer's output written so), on both paths: the output and the gradient
            // bit for bit those from float32; kept as it is where the kernels keep 16 bits, else widened first.
            Ops.SaveGemmOperandsInGemmPrecision = true;
            foreach (bool fused in new[] { true, false })
            {
                (float[] Y, float[] Grad, long Kept) Run(bool packedInput)
                {
                    using var x = Tensor.Empty(dev, packedInput ? half : DType.F32, qkv.Shape);
                    if (packedInput) k.PackLowPrecision(x.HalfData, qkv.Data, qkv.Count, precision);
                    else k.Copy(x.Data, qkv.Data, qkv.Count, false);
                    x.RequiresGrad = true;
                    var tape = new Autograd.Tape();
                    using (tape.Record())
                    {
                        using var output = Ops.Attention(x, NH, bias, mask, fused: fused);
                        long kept = tape.SavedBytes;
                        var y = output.ToArray();
                        tape.Backward(output, dy);
                        if (x.Grad!.DType != DType.F32) throw new ConformanceException($"{name}: a 16-bit qkv's gradient is {x.Grad.DType}");
                        return (y, x.Grad.ToArray(), kept);
                    }
                }
                var fromFloats = Run(false);
                var fromHalves = Run(true);
                foreach (var (part, a, b) in new[] { ("output", fromFloats.Y, fromHalves.Y), ("dqkv", fromFloats.Grad, fromHalves.Grad) })
                    for (int i = 0; i < a.Length; i++)
                        if (!Same(a[i], b[i]))
                            throw new ConformanceException($"{name}: Attention ({(fused ? "fused" : "unfused")}) {part}[{i}] is {b[i]:G9} from a 16-bit qkv, {a[i]:G9} from float32");
                if (fused && keeps && fromHalves.Kept != fromFloats.Kept)
                    throw new ConformanceException($"{name}: the fused Attention kept {fromHalves.Kept} bytes from a 16-bit qkv, {fromFloats.Kept} from float32 (both keep it in 16 bits)");
            }
            for (int i = 0; i < wide.Grad.Length; i++)
                if (!Same(wide.Grad[i], narrow.Grad[i]))
                    throw new ConformanceException($"{name}: Attention's dqkv[{i}] is {narrow.Grad[i]:G9} with qkv kept in 16 bits, {wide.Grad[i]:G9} with float32");
            CheckClose("Attention's dqkv with a 16-bit output", wide.Grad, narrowest.Grad);
            var (output, other) = (keeps ? half : DType.F32, wide.Output);
            if (narrowest.Output != output || other != DType.F32)
                throw new ConformanceException($"{name}: Attention's output with gemmInput is {narrowest.Output} (want {output}), and {other} with nothing in 16 bits (want F32)");
            long qkvSaved = keeps ? qkv.Count * 2 : 0, ySaved = keeps ? dy.Count * 2 : 0;
            if (wide.Kept - narrow.Kept != qkvSaved || wide.Kept - narrowest.Kept != qkvSaved + ySaved)
                throw new ConformanceException($"{name}: the tape kept {narrow.Kept} and {narrowest.Kept} bytes (16-bit qkv; and output) against {wide.Kept} with float32, " +
                    $"want {qkvSaved} and {qkvSaved + ySaved} fewer (the kernels keep 16 bits: {keeps})");
            if (dev is CudaDevice && keeps)
            {
                using var packed = Tensor.Empty(dev, half, qkv.Shape);
                using var scratch = Tensor.Zeros(dev, 2 * B * T * 3 * C + NH * T * T);
                try
                {
                    k.FusedAttentionBackward(scratch.Data, null, scratch.Data + B * T * 3 * C, scratch.Data + 2 * B * T * 3 * C, dy.Data, dy.Data, dy.Data,
                        GemmOperand.Packed(packed.HalfData), bias.Data, mask.Data, B, T, NH, HD, nW, 1f, false);
                    throw new ConformanceException($"{name}: FusedAttentionBackward took a 16-bit qkv with a bias gradient");
                }
                catch (ArgumentException e) when (e.Message.Contains("qkv")) { }
            }
        }
        finally
        {
            (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision) = previous;
        }
    }

    /// <summary>Under bf16 and fp16 GEMMs the unfused attention keeps q, k, v and the probabilities P only in 16 bits
    /// (<see cref="Ops.SaveGemmOperandsInGemmPrecision"/>, <see cref="Ops.SaveAttentionProbabilitiesInGemmPrecision"/>).
    /// The kernels: the softmax writes P in 16 bits alone exactly as beside float32 P, and its backward from the 16-bit P
    /// gives bit for bit what it gives from P widened (rows in a GPU warp's registers and wider). The op: 2 bytes fewer
    /// kept per q, k, v and P value; q, k, v in 16 bits change nothing, bit for bit, with P in either format; P in 16
    /// bits leaves the output bit for bit and moves dqkv and the trained bias gradient within the bound its rounding in
    /// the softmax's backward allows (dZ = P ⊙ (dP − Σ P·dP) with each P off by at most u relative, then dZ rounded
    /// again for its products): u of the largest gradient (these cases move by 0.30u to 0.56u), which a P read wrong (a
    /// stale, swapped or misread row) exceeds; and they do move (P is read in 16 bits).</summary>
    static unsafe void AttentionInGemmPrecision(Device dev)
    {
        const int B = 2, NH = 3, HD = 8, nW = 2;
        static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
        var k = dev.Kernels;
        var previous = (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision, Ops.SaveAttentionProbabilitiesInGemmPrecision);
        try
        {
            foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
            {
                k.GemmPrecision = precision;
                var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
                string name = $"AttentionInGemmPrecision {precision.Name()}";
                // 13 tokens: rows in a warp's registers; 260: wider (through memory). Bias and mask on the first.
                foreach (var (T, windows) in new[] { (13, true), (260, false) })
                {
                    using var t = new CaseTensors(dev);
                    long rows = (long)B * NH * T, n = rows * T;
                    var scores = t.Uniform(81, 4f, B, NH, T, T);
                    var bias = windows ? t.Uniform(82, 1f, NH, T, T) : null;
                    var mask = windows ? t.Own(Tensor.FromArray(dev, ShiftMask(83, nW, T), nW, T, T)) : null;
                    var dy = t.Uniform(84, 1f, B, NH, T, T);
                    var p = t.Own(Tensor.Empty(dev, DType.F32, B, NH, T, T));
                    var copy = t.Own(Tensor.Empty(dev, half, B, NH, T, T));
                    var alone = t.Own(Tensor.Empty(dev, half, B, NH, T, T));
                    var scratch = t.Own(Tensor.Empty(dev, DType.F32, B, NH, T, T));
                    float* b = bias == null ? null : bias.Data, m = mask == null ? null : mask.Data;
                    k.AttentionSoftmaxForward(p.Data, copy.HalfData, scores.Data, b, m, B, NH, T, windows ? nW : 1);
                    k.Copy(scratch.Data, scores.Data, n, false);
                    k.AttentionSoftmaxForward(null, alone.HalfData, scratch.Data, b, m, B, NH, T, windows ? nW : 1);
                    var wide = t.Own(Tensor.Empty(dev, DType.F32, B, NH, T, T));
                    k.UnpackLowPrecision(wide.Data, alone.HalfData, n, precision);
                    float[] pWide = p.ToArray(), fromCopy = Widen(dev, copy, precision), fromAlone = wide.ToArray();
                    for (int i = 0; i < n; i++)
                        if (!Same(fromAlone[i], fromCopy[i]) || !Same(fromCopy[i], RoundReference(pWide[i], precision)))
                            throw new ConformanceException($"{name}, {T} tokens: P[{i}] is {fromAlone[i]:G9} written alone in 16 bits and {fromCopy[i]:G9} beside float32 {pWide[i]:G9}, want {RoundReference(pWide[i], precision):G9}");
                    var dx = t.Own(Tensor.Empty(dev, DType.F32, B, NH, T, T));
                    var dxFromPacked = t.Own(Tensor.Empty(dev, DType.F32, B, NH, T, T));
                    var dx16 = t.Own(Tensor.Empty(dev, half, B, NH, T, T));
                    var dx16FromPacked = t.Own(Tensor.Empty(dev, half, B, NH, T, T));
                    k.SoftmaxBackward(dx.Data, null, dy.Data, wide.Data, (int)rows, T, false);
                    k.SoftmaxBackward(dxFromPacked.Data, null, dy.Data, GemmOperand.Packed(alone.HalfData), (int)rows, T, false);
                    k.SoftmaxBackward(null, dx16.HalfData, dy.Data, wide.Data, (int)rows, T, false);
                    k.SoftmaxBackward(null, dx16FromPacked.HalfData, dy.Data, GemmOperand.Packed(alone.HalfData), (int)rows, T, false);
                    foreach (var (what, want, got) in new[] { ("dx", dx.ToArray(), dxFromPacked.ToArray()), ("16-bit dx", Widen(dev, dx16, precision), Widen(dev, dx16FromPacked, precision)) })
                        for (int i = 0; i < n; i++)
                            if (!Same(want[i], got[i]))
                                throw new ConformanceException($"{name}, {T} tokens: SoftmaxBackward's {what}[{i}] is {got[i]:G9} from the 16-bit probabilities, {want[i]:G9} from them widened");
                }
                (float[][] Values, long Kept) Run(bool operands, bool probabilities, bool withBias, int T)
                {
                    (Ops.SaveGemmOperandsInGemmPrecision, Ops.SaveAttentionProbabilitiesInGemmPrecision) = (operands, probabilities);
                    using var t = new CaseTensors(dev);
                    var qkv = t.Uniform(97, 1f, B, T, 3 * NH * HD);
                    var bias = withBias ? t.Uniform(98, 1f, NH, T, T) : null;
                    var mask = withBias ? t.Own(Tensor.FromArray(dev, ShiftMask(96, nW, T), nW, T, T)) : null;
                    var upstream = t.Uniform(99, 1f, B, T, NH * HD);
                    qkv.RequiresGrad = true;
                    if (bias != null) bias.RequiresGrad = true;
                    var tape = new Autograd.Tape();
                    using (tape.Record())
                    {
                        using var y = Ops.Attention(qkv, NH, bias, mask, fused: false);
                        long kept = tape.SavedBytes;
                        float[] output = y.ToArray();
                        tape.Backward(y, upstream);
                        return (bias == null ? [output, qkv.Grad!.ToArray()] : [output, qkv.Grad!.ToArray(), bias.Grad!.ToArray()], kept);
                    }
                }
                double u = precision.UnitRoundoff();
                string[] names = ["y", "dqkv", "dbias"];
                foreach (var (withBias, T) in new[] { (true, 13), (false, 13), (false, 260) })
                {
                    var wide = Run(operands: false, probabilities: false, withBias, T);
                    var heads = Run(operands: true, probabilities: false, withBias, T);
                    var narrow = Run(operands: true, probabilities: true, withBias, T);
                    var narrowFromWideHeads = Run(operands: false, probabilities: true, withBias, T);
                    string which = $"{name}: attention{(withBias ? " with a bias and mask" : "")}, {T} tokens";
                    // q, k, v in 16 bits (the values the products round them to): every output bit for bit, with P either way.
                    foreach (var (a, b, what) in new[] { (wide, heads, "float32 P"), (narrowFromWideHeads, narrow, "16-bit P") })
                        for (int g = 0; g < a.Values.Length; g++)
                            for (int i = 0; i < a.Values[g].Length; i++)
                                if (!Same(a.Values[g][i], b.Values[g][i]))
                                    throw new ConformanceException($"{which}, {what}: {names[g]}[{i}] is {b.Values[g][i]:G9} with q, k, v kept in 16 bits, {a.Values[g][i]:G9} in float32");
                    // P in 16 bits: the same output; the gradients within u of the largest, and moved.
                    for (int i = 0; i < wide.Values[0].Length; i++)
                        if (!Same(heads.Values[0][i], narrow.Values[0][i]))
                            throw new ConformanceException($"{which}: y[{i}] is {narrow.Values[0][i]:G9} with P kept in 16 bits, {heads.Values[0][i]:G9} with float32 P");
                    for (int g = 1; g < wide.Values.Length; g++)
                    {
                        double largest = heads.Values[g].Max(v => Math.Abs(v)), gap = heads.Values[g].Zip(narrow.Values[g]).Max(q => Math.Abs(q.First - q.Second));
                        if (gap > u * largest || gap == 0)
                            throw new ConformanceException($"{which}: {names[g]} moves by {gap:G3} with P kept in 16 bits (largest |value| {largest:G3}, bound u of it: {u * largest:G3}; " +
                                                           $"{gap / (u * largest):F3}u){(gap == 0 ? ", not at all: P was not read in 16 bits" : "")}");
                    }
                    long qkvBytes = 2L * 3 * B * NH * T * HD, pBytes = 2L * B * NH * T * T;
                    if (heads.Kept != wide.Kept - qkvBytes || narrow.Kept != wide.Kept - qkvBytes - pBytes || narrowFromWideHeads.Kept != wide.Kept - pBytes)
                        throw new ConformanceException($"{which}: kept {heads.Kept}, {narrowFromWideHeads.Kept} and {narrow.Kept} bytes with q, k, v, with P and with both in " +
                                                       $"16 bits, {wide.Kept} with neither: want {qkvBytes} and {pBytes} fewer");
                }
            }
        }
        finally
        {
            (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision, Ops.SaveAttentionProbabilitiesInGemmPrecision) = previous;
        }
    }

    /// <summary>A Swin-style mask [nW, T, T]: −100 at about 30% of the entries (drawn from <paramref name="seed"/>), else 0.</summary>
    static float[] ShiftMask(ulong seed, int nW, int T) =>
        [.. Enumerable.Range(0, nW * T * T).Select(i => CounterRng.Uniform(seed, (ulong)i) < 0.3 ? -100f : 0f)];

    /// <summary>A 16-bit tensor's values as floats.</summary>
    static unsafe float[] Widen(Device dev, Tensor packed, Precision precision)
    {
        using var wide = Tensor.Empty(dev, DType.F32, packed.Shape);
        dev.Kernels.UnpackLowPrecision(wide.Data, packed.HalfData, packed.Count, precision);
        return wide.ToArray();
    }

    static void FusedAttentionLowPrecision(Device dev, string name, int B, int T, int NH, int HD, Precision precision)
    {
        const int nW = 2;
        float[] Values(ulong seed, int n, float range) => [.. Enumerable.Range(0, n).Select(i => (float)((CounterRng.Uniform(seed, (ulong)i) * 2 - 1) * range))];
        var qkvValues = Values(61, B * T * 3 * NH * HD, 2f);
        var biasValues = Values(62, NH * T * T, 1f);
        var upstream = Values(63, B * T * NH * HD, 1f);
        var maskValues = ShiftMask(64, nW, T);
        var k = dev.Kernels;
        var previous = k.GemmPrecision;
        (float[] Y, float[] Dqkv, float[] Dbias) Run(bool fused, Precision runPrecision)
        {
            k.GemmPrecision = runPrecision;
            using var qkv = Tensor.FromArray(dev, qkvValues, B, T, 3 * NH * HD);
            using var bias = Tensor.FromArray(dev, biasValues, NH, T, T);
            using var mask = Tensor.FromArray(dev, maskValues, nW, T, T);
            using var r = Tensor.FromArray(dev, upstream, B, T, NH * HD);
            qkv.RequiresGrad = bias.RequiresGrad = true;
            var tape = new Autograd.Tape();
            float[] y;
            using (tape.Record())
            {
                using var output = Ops.Attention(qkv, NH, bias, mask, fused: fused);
                y = output.ToArray();
                tape.Backward(output, r);
            }
            return (y, qkv.Grad!.ToArray(), bias.Grad!.ToArray());
        }
        try
        {
            var fused = Run(true, precision);
            var unfused = Run(false, precision);
            var fp32 = Run(true, Precision.FP32);
            double u = precision.UnitRoundoff() * 2; // 2⁻⁸ for bf16, 2⁻¹¹ for fp16: the spacing of values near 1
            foreach (var (part, got, want, exact) in new[] { ("y", fused.Y, unfused.Y, fp32.Y), ("dqkv", fused.Dqkv, unfused.Dqkv, fp32.Dqkv), ("dbias", fused.Dbias, unfused.Dbias, fp32.Dbias) })
            {
                double scale = want.Max(v => Math.Abs(v)), gap = got.Zip(want).Max(p => Math.Abs(p.First - p.Second));
                double rounded = got.Zip(exact).Max(p => Math.Abs(p.First - p.Second));
                if (gap > scale * 3 * u)
                    throw new ConformanceException($"{name} {precision.Name()} {part}: fused and unfused differ by {gap:G3} (max |value| {scale:G3}; bound 3·{u:G3} of it)");
                if (rounded < scale * u / 64)
                    throw new ConformanceException($"{name} {precision.Name()} {part}: within {rounded:G3} of fp32 (max |value| {scale:G3}): the operands were not rounded");
            }
        }
        finally
        {
            k.GemmPrecision = previous;
        }
    }
}
