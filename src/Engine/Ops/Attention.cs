using Engine.Autograd;
using Engine.Kernels;

namespace Engine;

// Scaled dot-product multi-head attention from a packed qkv projection (ViT and Swin windows).
// Kernels: CpuKernels.Attention.cs and cuda/attention.cu (head permutes, fused attention), Softmax for the unfused
// path's probabilities.
public static unsafe partial class Ops
{
    /// <summary>The largest head dim the fused attention kernels take (their CUDA tiles); larger heads run unfused.</summary>
    public const int FusedAttentionMaxHeadDim = 128;

    /// <summary>The path <see cref="Attention"/> calls that do not say take: <see cref="AttentionPath.Auto"/> (default:
    /// the device's faster one, <see cref="Device.PrefersFusedAttention"/>; on a GPU, for training, the one it timed
    /// faster for the shape, <see cref="CudaDevice.TunesAttention"/>; for inference
    /// <see cref="Device.PrefersFusedAttentionForward"/>), or every model on one path to compare the
    /// two (<c>bench/run.sh peft --unfused-attention</c>, <c>peft bench --train-step --attention</c>).</summary>
    public static AttentionPath DefaultAttentionPath { get; set; } = AttentionPath.Auto;

    /// <summary>
    /// Multi-head attention. qkv [B,T,3·C] laid out q|k|v with head h owning columns h·HD..h·HD+HD−1 of each
    /// (timm). Output [B,T,C] = heads of softmax(scale·q·kᵀ + bias[h] + mask[b mod nW])·v, re-packed.
    /// bias [NH,T,T] or null (Swin's relative position bias, gathered; it may require gradients);
    /// mask [nW,T,T] or null (Swin's shift mask, constant; B must be a multiple of nW). scale defaults to HD^-½.
    /// Fused (unless <paramref name="fused"/>, or when null <see cref="DefaultAttentionPath"/>, says otherwise; head
    /// dims up to <see cref="FusedAttentionMaxHeadDim"/>): one kernel reads q, k, v in place and writes the merged
    /// heads, keeping no [T,T] matrix; it saves qkv, the output and one log-sum-exp per score row, and its backward
    /// computes the probabilities again.
    /// Unfused (the reference path): head split, batched GEMM, softmax, batched GEMM, head merge; it saves q, k, v (in 16
    /// bits under bf16/fp16 GEMMs, <see cref="SaveGemmOperandsInGemmPrecision"/>) and the probabilities [B,NH,T,T] (in 16
    /// bits there too, <see cref="SaveAttentionProbabilitiesInGemmPrecision"/>).
    /// <paramref name="gemmInput"/>: only Linear layers read the output (the projection), so the unfused path writes it
    /// in the GEMMs' 16-bit format under bf16 or fp16 GEMMs (see <see cref="LayerNorm"/>); the fused path, whose
    /// backward reads its output too, does so where its kernels keep 16 bits
    /// (<see cref="Kernels.IKernels.FusedAttentionKeepsSixteenBits"/>: tensor cores), and its backward's Σ dy·y then sums
    /// the rounded output (as flash attention's does), else writes float32.
    /// </summary>
    public static Tensor Attention(Tensor qkv, int heads, Tensor? bias = null, Tensor? mask = null, float? scale = null, bool? fused = null,
        bool gemmInput = false)
    {
        const string op = "Attention";
        var packedType = qkv.DType is DType.BF16 or DType.F16 ? GemmInputType(qkv.Device) : null;
        if (qkv.DType is DType.BF16 or DType.F16 && packedType != qkv.DType)
            throw new ArgumentException($"{op}: qkv {qkv.Describe()} needs {(qkv.DType == DType.BF16 ? "bf16" : "fp16")} GEMMs, not " +
                $"{qkv.Device.Kernels.GemmPrecision.Name()}{(SaveGemmOperandsInGemmPrecision ? "" : " with SaveGemmOperandsInGemmPrecision off")}");
        Check(op, "qkv", qkv, 3, dtype: packedType ?? DType.F32);
        int B = qkv.Shape[0], T = qkv.Shape[1], C3 = qkv.Shape[2];
        if (heads <= 0 || C3 % (3 * heads) != 0)
            throw new ArgumentException($"{op}: qkv {qkv.Describe()} does not split into q|k|v of {heads} heads");
        int C = C3 / 3, HD = C / heads, nW = 1;
        if (bias != null)
        {
            Check(op, "bias", bias, 3, qkv.Device);
            if (bias.Shape[0] != heads || bias.Shape[1] != T || bias.Shape[2] != T)
                throw new ArgumentException($"{op}: bias {bias.Describe()} must be [{heads}, {T}, {T}] for qkv {qkv.Describe()}");
        }
        if (mask != null)
        {
            Check(op, "mask", mask, 3, qkv.Device);
            nW = mask.Shape[0];
            if (mask.Shape[1] != T || mask.Shape[2] != T || nW == 0 || B % nW != 0)
                throw new ArgumentException($"{op}: mask {mask.Describe()} must be [nW, {T}, {T}] with batch {B} a multiple of nW");
        }
        float s = scale ?? 1f / MathF.Sqrt(HD);
        var k = qkv.Device.Kernels;
        var dev = qkv.Device;
        fused ??= DefaultAttentionPath switch
        {
            AttentionPath.Fused => true,
            AttentionPath.Unfused => false,
            _ => Tape.ShouldRecord(qkv, bias) ? dev.TrainsAttentionFused(qkv, heads, bias, mask, s) : dev.PrefersFusedAttentionForward(HD),
        };
        if (Tape.ShouldRecord(qkv, bias)) dev.CountTrainedAttention(fused.Value && HD <= FusedAttentionMaxHeadDim);
        // Where the kernels keep 16 bits (tensor cores), both paths read a 16-bit qkv as it is; elsewhere it is widened.
        bool sixteen = GemmInputType(dev) != null && k.FusedAttentionKeepsSixteenBits(HD, bias is { RequiresGrad: true });
        using var widened = packedType != null && !sixteen ? Widen(qkv) : null;
        var values = widened ?? qkv; // what the kernels read; qkv is what the gradient goes to
        if (fused.Value && HD <= FusedAttentionMaxHeadDim)
        {
            // An output only products read is written in 16 bits there too, and kept so.
            var output = OutputFor(dev, gemmInput && sixteen, [B, T, C]);
            var lse = Tensor.Empty(dev, DType.F32, B, heads, T);
            k.FusedAttentionForward(Floats(output), Halves(output), lse.Data, Tape.Operand(values), bias == null ? null : bias.Data, mask == null ? null : mask.Data,
                B, T, heads, HD, nW, s);
            if (Tape.ShouldRecord(qkv, bias))
                Tape.Push(output, new FusedAttentionSaved
                {
                    Qkv = qkv, Bias = bias, BiasKept = bias == null ? null : Tape.Save(bias),
                    QkvKept = values.DType != DType.F32 ? Tape.Save(values) : sixteen ? Tape.SaveInPrecision(values, k.GemmPrecision) : Tape.Save(values),
                    MaskKept = mask == null ? null : Tape.Save(mask), YKept = Tape.Save(output), Lse = Tape.Keep(lse),
                    Heads = heads, Windows = nW, Scale = s,
                });
            else lse.Dispose();
            return output;
        }
        // q | k | v [3, B, NH, T, HD] in one buffer: under bf16/fp16 GEMMs the split writes them in 16 bits, every product
        // reads them so, and the tape keeps them (autocast's saved q, k, v).
        long tt = (long)T * T, th = (long)T * HD, part = (long)B * heads * th;
        var headsQkv = OutputFor(dev, gemmInput: true, [3, B, heads, T, HD]);
        k.SplitHeads(Floats(headsQkv), Halves(headsQkv), Tape.Operand(values), B, T, heads, HD);
        // P for the product with v and the softmax's backward: only in 16 bits under bf16/fp16 GEMMs (written from the
        // float32 scores, SaveAttentionProbabilitiesInGemmPrecision), else float32 with, beside 16-bit heads, a 16-bit copy.
        var pType = !SaveAttentionProbabilitiesInGemmPrecision ? null
            : k.GemmPrecision switch { Precision.BF16 => DType.BF16, Precision.FP16 => DType.F16, _ => (DType?)null };
        var p = Tensor.Empty(dev, pType ?? DType.F32, B, heads, T, T);
        using var pCopy = pType == null && headsQkv.DType != DType.F32 ? Tensor.Empty(dev, headsQkv.DType, B, heads, T, T) : null;
        using (var scores = pType == null ? null : Tensor.Empty(dev, DType.F32, B, heads, T, T))
        {
            float* z = scores == null ? p.Data : scores.Data;
            k.GemmStridedBatched(false, true, T, T, HD, s, Part(headsQkv, 0, part), HD, th, Part(headsQkv, 1, part), HD, th, 0f, z, T, tt, B * heads);
            k.AttentionSoftmaxForward(Floats(p), Halves(pCopy ?? p), z, bias == null ? null : bias.Data, mask == null ? null : mask.Data, B, heads, T, nW);
        }
        using var o = Tensor.Empty(dev, DType.F32, B, heads, T, HD);
        k.GemmStridedBatched(false, false, T, HD, T, 1f, Probabilities(pCopy ?? p), T, tt, Part(headsQkv, 2, part), HD, th, 0f, o.Data, HD, th, B * heads);
        var y = OutputFor(dev, gemmInput, [B, T, C]);
        k.MergeHeads(Floats(y), Halves(y), o.Data, B, T, heads, HD);
        if (Tape.ShouldRecord(qkv, bias))
            Tape.Push(y, new AttentionSaved { Qkv = qkv, Bias = bias, Heads = Tape.Keep(headsQkv), P = Tape.Keep(p), NH = heads, Scale = s });
        else
        {
            headsQkv.Dispose();
            p.Dispose();
        }
        return y;
    }

    /// <summary>
    /// Under bf16 or fp16 GEMMs (<see cref="Kernels.IKernels.GemmPrecision"/>) the unfused attention keeps its
    /// probabilities P [B,NH,T,T] only in that 16-bit format: the values the P·v product and Pᵀ·dO read, which the
    /// softmax's backward then reads too. Half the bytes kept, and no float32 P written, read again or rounded again
    /// for Pᵀ·dO. Like <see cref="SaveLinearOutputsInGemmPrecision"/> this moves the gradient (autocast's softmax
    /// backward reads float32 P): dZ = P ⊙ (dP − Σ P·dP) is formed from P rounded, the same order of error as the
    /// rounding of dZ for its products. False keeps float32 P and a 16-bit copy for the products (to compare).
    /// </summary>
    public static bool SaveAttentionProbabilitiesInGemmPrecision { get; set; } = true;

    /// <summary>A float32 copy of a 16-bit tensor (for kernels that read float32).</summary>
    static Tensor Widen(Tensor t)
    {
        var wide = Tensor.Empty(t.Device, DType.F32, t.Shape);
        t.Device.Kernels.UnpackLowPrecision(wide.Data, t.HalfData, t.Count, t.Device.Kernels.GemmPrecision);
        return wide;
    }

    /// <summary>Part <paramref name="i"/> (q, k or v) of the heads [3, B, NH, T, HD], each <paramref name="part"/> elements.</summary>
    static GemmOperand Part(Tensor heads, int i, long part) =>
        heads.DType == DType.F32 ? heads.Data + i * part : GemmOperand.Packed(heads.HalfData + i * part);

    /// <summary>The probabilities [B, NH, T, T] as an operand: float32, or packed in 16 bits.</summary>
    static GemmOperand Probabilities(Tensor p) => Part(p, 0, 0);

    /// <summary>Attention's backward state: q | k | v [3,B,NH,T,HD] and the probabilities P [B,NH,T,T] (both packed under
    /// bf16/fp16 GEMMs).</summary>
    struct AttentionSaved : IBackward<AttentionSaved>
    {
        public Tensor Qkv, Heads, P;
        public Tensor? Bias;
        public int NH;
        public float Scale;

        public static void Backward(ref AttentionSaved s, Tensor y)
        {
            var k = y.Device.Kernels;
            var dev = y.Device;
            int B = y.Shape[0], T = y.Shape[1], C = y.Shape[2], NH = s.NH, HD = C / NH;
            long tt = (long)T * T, th = (long)T * HD, part = (long)B * NH * th;
            // As the forward did: under bf16/fp16 GEMMs (q, k, v and P kept in 16 bits) dO and dZ are written in 16 bits
            // for their two products each (dZ in float32 too when the bias sums it).
            bool sixteen = s.Heads.DType != DType.F32;
            GemmOperand q = Part(s.Heads, 0, part), kk = Part(s.Heads, 1, part), v = Part(s.Heads, 2, part), p = Probabilities(s.P);
            float* dbias = Tape.GradAccumulatorIfNeeded(s.Bias);
            float* dqkv = Tape.GradOutputIfNeeded(s.Qkv, out bool acc);
            using var dq = Tensor.Empty(dev, DType.F32, B, NH, T, HD);
            using var dk = Tensor.Empty(dev, DType.F32, B, NH, T, HD);
            using var dv = Tensor.Empty(dev, DType.F32, B, NH, T, HD);
            using var dp = Tensor.Empty(dev, DType.F32, B, NH, T, T);
            using (var dO = Tensor.Empty(dev, s.Heads.DType, B, NH, T, HD))
            {
                k.MergeHeadsBackward(Floats(dO), Halves(dO), y.Grad!.Data, B, T, NH, HD, false);
                GemmOperand gradO = sixteen ? GemmOperand.Packed(dO.HalfData) : dO.Data;
                // dP = dO·vᵀ, dv = Pᵀ·dO, dZ = softmax backward, dq = scale·dZ·k, dk = scale·dZᵀ·q
                k.GemmStridedBatched(false, true, T, T, HD, 1f, gradO, HD, th, v, HD, th, 0f, dp.Data, T, tt, B * NH);
                k.GemmStridedBatched(true, false, T, HD, T, 1f, p, T, tt, gradO, HD, th, 0f, dv.Data, HD, th, B * NH);
            }
            // dZ: written in 16 bits alone when only the products read it; else in float32 over dP (packed after the bias sum).
            bool zInSixteen = sixteen && dbias == null;
            if (!zInSixteen) k.SoftmaxBackward(dp.Data, null, dp.Data, p, B * NH * T, T, false);
            if (dbias != null) k.BiasGrad(dbias, dp.Data, B, NH * T * T);
            if (dqkv == null) return;
            using var dz16 = !sixteen ? null : zInSixteen ? Tensor.Empty(dev, s.Heads.DType, dp.Shape) : PackForGemm(dev, dp.Data, dp.Shape);
            if (zInSixteen) k.SoftmaxBackward(null, dz16!.HalfData, dp.Data, p, B * NH * T, T, false);
            GemmOperand gradZ = dz16 == null ? dp.Data : GemmOperand.Packed(dz16.HalfData);
            k.GemmStridedBatched(false, false, T, HD, T, s.Scale, gradZ, T, tt, kk, HD, th, 0f, dq.Data, HD, th, B * NH);
            k.GemmStridedBatched(true, false, T, HD, T, s.Scale, gradZ, T, tt, q, HD, th, 0f, dk.Data, HD, th, B * NH);
            k.SplitHeadsBackward(dqkv, Tape.GradCopyIfWanted(s.Qkv), dq.Data, dk.Data, dv.Data, B, T, NH, HD, acc);
        }
    }

    /// <summary>Fused attention's backward state: qkv (float32, or 16-bit where the backward reads it so: the values its
    /// kernels round q, k and v to), bias, mask, the output (16-bit when written so) and the log-sum-exp [B,NH,T] per
    /// score row.</summary>
    struct FusedAttentionSaved : IBackward<FusedAttentionSaved>
    {
        public Tensor Qkv, QkvKept, YKept, Lse;
        public Tensor? Bias, BiasKept, MaskKept;
        public int Heads, Windows;
        public float Scale;

        public static void Backward(ref FusedAttentionSaved s, Tensor y)
        {
            int B = y.Shape[0], T = y.Shape[1], C = y.Shape[2], NH = s.Heads;
            float* dbias = Tape.GradAccumulatorIfNeeded(s.Bias);
            float* dqkv = Tape.GradOutputIfNeeded(s.Qkv, out bool acc);
            if (dbias == null && dqkv == null) return;
            using var delta = Tensor.Empty(y.Device, DType.F32, B, NH, T);
            y.Device.Kernels.FusedAttentionBackward(dqkv, Tape.GradCopyIfWanted(s.Qkv), dbias, delta.Data, y.Grad!.Data, Tape.Operand(s.YKept), s.Lse.Data, Tape.Operand(s.QkvKept),
                s.BiasKept == null ? null : s.BiasKept.Data, s.MaskKept == null ? null : s.MaskKept.Data, B, T, NH, C / NH,
                s.Windows, s.Scale, acc);
        }
    }
}

/// <summary>Which of <see cref="Ops.Attention"/>'s two implementations runs (<see cref="Ops.DefaultAttentionPath"/>).</summary>
public enum AttentionPath
{
    /// <summary>The device's faster path (<see cref="Device.PrefersFusedAttention"/>).</summary>
    Auto,
    /// <summary>One kernel per direction, no [T, T] matrix kept.</summary>
    Fused,
    /// <summary>Head split, batched GEMMs and softmax: the reference path.</summary>
    Unfused,
}
