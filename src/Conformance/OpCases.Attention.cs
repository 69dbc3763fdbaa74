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
        FusedAttentionPackedQkv(dev, Precision.BF16);
        FusedAttentionPackedQkv(dev, Precision.FP16);
    }

    // The fused backward from q|k|v kept in 16 bits (where the backend reads it so, and on the CPU, which widens it):
    // dqkv and delta bit for bit those from the float32 qkv, with a frozen bias and a mask; at the op, the same gradient
    // as with nothing kept in 16 bits and fewer bytes kept. CUDA refuses a 16-bit qkv where a bias trains.
    static unsafe void FusedAttentionPackedQkv(Device dev, Precision precision)
    {
        const int B = 2, T = 70, NH = 2, HD = 64, C = NH * HD, nW = 2;
        string name = $"FusedAttentionHeadDim64 {precision.Name()} (q|k|v kept in 16 bits)";
        float[] Values(ulong seed, int n, float range) => [.. Enumerable.Range(0, n).Select(i => (float)((CounterRng.Uniform(seed, (ulong)i) * 2 - 1) * range))];
        var k = dev.Kernels;
        var previous = (k.GemmPrecision, Ops.SaveGemmOperandsInGemmPrecision);
        try
        {
            k.GemmPrecision = precision;
            bool reads = k.FusedAttentionReadsPackedQkv(HD, bias: false);
            using var qkv = Tensor.FromArray(dev, Values(71, B * T * 3 * C, 2f), B, T, 3 * C);
            using var bias = Tensor.FromArray(dev, Values(72, NH * T * T, 1f), NH, T, T);
            using var mask = Tensor.FromArray(dev, [.. Enumerable.Range(0, nW * T * T).Select(i => CounterRng.Uniform(73, (ulong)i) < 0.3 ? -100f : 0f)], nW, T, T);
            using var dy = Tensor.FromArray(dev, Values(74, B * T * C, 1f), B, T, C);
            if (reads || dev is not CudaDevice)
            {
                using var y = Tensor.Empty(dev, DType.F32, B, T, C);
                using var lse = Tensor.Empty(dev, DType.F32, B, NH, T);
                float scale = 1f / MathF.Sqrt(HD);
                k.FusedAttentionForward(y.Data, lse.Data, qkv.Data, bias.Data, mask.Data, B, T, NH, HD, nW, scale);
                using var packed = Tensor.Empty(dev, precision == Precision.BF16 ? DType.BF16 : DType.F16, qkv.Shape);
                k.PackLowPrecision(packed.HalfData, qkv.Data, qkv.Count, precision);
                (float[] Dqkv, float[] Delta) Backward(GemmOperand source)
                {
                    using var dqkv = Tensor.Zeros(dev, B, T, 3 * C);
                    using var delta = Tensor.Empty(dev, DType.F32, B, NH, T);
                    k.FusedAttentionBackward(dqkv.Data, null, delta.Data, dy.Data, y.Data, lse.Data, source, bias.Data, mask.Data, B, T, NH, HD, nW, scale, false);
                    return (dqkv.ToArray(), delta.ToArray());
                }
                var (want, got) = (Backward(qkv.Data), Backward(GemmOperand.Packed(packed.HalfData)));
                foreach (var (part, a, b) in new[] { ("dqkv", want.Dqkv, got.Dqkv), ("delta", want.Delta, got.Delta) })
                    for (int i = 0; i < a.Length; i++)
                        if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i]))
                            throw new ConformanceException($"{name}: {part}[{i}] is {b[i]:G9} from the 16-bit qkv, {a[i]:G9} from the float32 one");
            }
            (float[] Grad, long Kept) Train(bool sixteen)
            {
                Ops.SaveGemmOperandsInGemmPrecision = sixteen;
                using var x = Tensor.FromArray(dev, qkv.ToArray(), qkv.Shape);
                x.RequiresGrad = true;
                var tape = new Autograd.Tape();
                using (tape.Record())
                {
                    using var output = Ops.Attention(x, NH, bias, mask, fused: true);
                    long kept = tape.SavedBytes;
                    tape.Backward(output, dy);
                    return (x.Grad!.ToArray(), kept);
                }
            }
            var (wide, narrow) = (Train(sixteen: false), Train(sixteen: true));
            for (int i = 0; i < wide.Grad.Length; i++)
                if (BitConverter.SingleToInt32Bits(wide.Grad[i]) != BitConverter.SingleToInt32Bits(narrow.Grad[i]))
                    throw new ConformanceException($"{name}: Attention's dqkv[{i}] is {narrow.Grad[i]:G9} with qkv kept in 16 bits, {wide.Grad[i]:G9} with float32");
            long saved = reads ? qkv.Count * 2 : 0;
            if (wide.Kept - narrow.Kept != saved)
                throw new ConformanceException($"{name}: the tape kept {narrow.Kept} bytes against {wide.Kept} with float32, want {saved} fewer (backend reads a 16-bit qkv: {reads})");
            if (dev is CudaDevice && reads)
            {
                using var packed = Tensor.Empty(dev, precision == Precision.BF16 ? DType.BF16 : DType.F16, qkv.Shape);
                using var scratch = Tensor.Zeros(dev, 2 * B * T * 3 * C + NH * T * T);
                try
                {
                    k.FusedAttentionBackward(scratch.Data, scratch.Data + B * T * 3 * C, scratch.Data + 2 * B * T * 3 * C, dy.Data, dy.Data, dy.Data,
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

    static void FusedAttentionLowPrecision(Device dev, string name, int B, int T, int NH, int HD, Precision precision)
    {
        const int nW = 2;
        float[] Values(ulong seed, int n, float range) => [.. Enumerable.Range(0, n).Select(i => (float)((CounterRng.Uniform(seed, (ulong)i) * 2 - 1) * range))];
        var qkvValues = Values(61, B * T * 3 * NH * HD, 2f);
        var biasValues = Values(62, NH * T * T, 1f);
        var upstream = Values(63, B * T * NH * HD, 1f);
        var maskValues = Enumerable.Range(0, nW * T * T).Select(i => CounterRng.Uniform(64, (ulong)i) < 0.3 ? -100f : 0f).ToArray();
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
