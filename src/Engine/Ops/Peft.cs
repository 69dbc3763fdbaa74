using System.Runtime.CompilerServices;
using Engine.Autograd;

namespace Engine;

// SCT's salient channel module: a K×K linear map on K selected channels of the residual stream, added back in place.
// LoRA's low-rank path (two GEMMs into a slice of a Linear's output). GPS's sparse gradients run inside Linear's and
// DepthwiseConv2d's backward. Kernels: CpuKernels.Peft.cs, cuda/peft.cu (LoRA: Gemm only).
public static unsafe partial class Ops
{
    /// <summary>
    /// y = x except on the K channels in <paramref name="index"/>: y[..., index] = x[..., index] + x[..., index]·Wᵀ + b
    /// (SCT's module: gather, K×K linear with bias, scatter-add). x [..., C]; index int32 [K], distinct channels in
    /// [0, C); weight [K, K]; bias [K] or null. Backward: dx = dy plus dy[..., index]·W scattered back onto the
    /// selected channels; dW += dzᵀ·x_s and db += Σ dz with dz = dy[..., index]. The gathered x_s [rows, K] is kept for
    /// backward only when W trains.
    /// </summary>
    public static Tensor ChannelAdapter(Tensor x, Tensor index, Tensor weight, Tensor? bias)
    {
        const string op = "ChannelAdapter";
        Check(op, "input", x);
        Check(op, "index", index, 1, x.Device, DType.I32);
        int C = LastDim(x), K = index.Shape[0], rows = Rows(x);
        Check(op, "weight", weight, 2, x.Device);
        if (weight.Shape[0] != K || weight.Shape[1] != K)
            throw new ArgumentException($"{op}: weight {weight.Describe()} must be [{K}, {K}] for index {index.Describe()}");
        CheckVector(op, "bias", bias, K, weight);
        CheckChannelIndex(op, index, C);
        var k = x.Device.Kernels;
        var selected = Tensor.Empty(x.Device, DType.F32, rows, K);
        using var mapped = Tensor.Empty(x.Device, DType.F32, rows, K);
        k.GatherChannels(selected.Data, x.Data, index.IntData, rows, C, K, accumulate: false);
        k.Gemm(false, true, rows, K, K, 1f, selected.Data, K, weight.Data, K, 0f, mapped.Data, K);
        var y = NewLike(x);
        k.ScatterAddChannels(y.Data, x.Data, mapped.Data, bias == null ? null : bias.Data, index.IntData, rows, C, K);
        if (Tape.ShouldRecord(x, weight, bias))
            Tape.Push(y, new ChannelAdapterSaved
            {
                X = x, Weight = weight, Bias = bias, Index = Tape.Save(index),
                SelectedKept = weight.RequiresGrad ? Tape.Save(selected) : null,
            });
        selected.Dispose();
        return y;
    }

    /// <summary>ChannelAdapter's backward state: x [rows, C], index [K], W [K, K], b [K], the gathered x_s [rows, K].</summary>
    struct ChannelAdapterSaved : IBackward<ChannelAdapterSaved>
    {
        public Tensor X, Weight, Index;
        public Tensor? Bias, SelectedKept;

        public static void Backward(ref ChannelAdapterSaved s, Tensor y)
        {
            var k = y.Device.Kernels;
            var index = s.Index;
            int C = LastDim(y), K = index.Shape[0], rows = Rows(y);
            float* dy = y.Grad!.Data;
            using var dz = Tensor.Empty(y.Device, DType.F32, rows, K);
            k.GatherChannels(dz.Data, dy, index.IntData, rows, C, K, accumulate: false);
            float* dw = Tape.GradAccumulatorIfNeeded(s.Weight);
            if (dw != null) k.Gemm(true, false, K, K, rows, 1f, dz.Data, K, s.SelectedKept!.Data, K, 1f, dw, K);
            float* db = Tape.GradAccumulatorIfNeeded(s.Bias);
            if (db != null) k.BiasGrad(db, dz.Data, rows, K);
            float* dx = Tape.GradOutputIfNeeded(s.X, out bool acc);
            if (dx == null) return;
            using var dselected = Tensor.Empty(y.Device, DType.F32, rows, K);
            k.Gemm(false, false, rows, K, K, 1f, dz.Data, K, s.Weight.Data, K, 0f, dselected.Data, K);
            k.Copy(dx, dy, (long)rows * C, acc);
            k.ScatterAddChannels(dx, dx, dselected.Data, null, index.IntData, rows, C, K);
        }
    }

    /// <summary>
    /// LoRA's low-rank path added to a Linear layer's output: z = y, then z[..., column..column+n] += scale·(x·Aᵀ)·Bᵀ.
    /// x [..., K] is the layer's input, y [..., N] its output, A [r, K] (lora_A), B [n, r] (lora_B) with
    /// column + n ≤ N, so one call covers a slice of the outputs (q or v of a fused qkv). Two small GEMMs and no dense
    /// ΔW: the product lands in the slice through the GEMM's leading dimension. Backward: dy passes to y; with
    /// dz = scale·dy[..., slice], dB += dzᵀ·h, dh = dz·B, dA += dhᵀ·x and dx += dh·A, where h = x·Aᵀ [rows, r] is kept
    /// only when B trains and x only when A trains (in 16 bits under bf16/fp16 GEMMs, <see cref="SaveGemmOperandsInGemmPrecision"/>).
    /// </summary>
    public static Tensor Lora(Tensor y, Tensor x, Tensor a, Tensor b, float scale, int column = 0)
    {
        const string op = "Lora";
        Check(op, "output", y);
        Check(op, "input", x, device: y.Device);
        Check(op, "lora_A", a, 2, y.Device);
        Check(op, "lora_B", b, 2, y.Device);
        int N = LastDim(y), K = LastDim(x), rows = Rows(y), r = a.Shape[0], n = b.Shape[0];
        if (Rows(x) != rows) throw new ArgumentException($"{op}: input {x.Describe()} and output {y.Describe()} differ in rows");
        if (a.Shape[1] != K) throw new ArgumentException($"{op}: lora_A {a.Describe()} must be [r, {K}] for input {x.Describe()}");
        if (b.Shape[1] != r) throw new ArgumentException($"{op}: lora_B {b.Describe()} must be [n, {r}] for lora_A {a.Describe()}");
        if (column < 0 || column + n > N)
            throw new ArgumentException($"{op}: lora_B {b.Describe()} at output column {column} does not fit output {y.Describe()}");
        var k = y.Device.Kernels;
        var z = NewLike(y);
        k.Copy(z.Data, y.Data, y.Count, false);
        var h = Tensor.Empty(y.Device, DType.F32, rows, r);
        k.Gemm(false, true, rows, r, K, 1f, x.Data, K, a.Data, K, 0f, h.Data, r);
        k.Gemm(false, true, rows, n, r, scale, h.Data, r, b.Data, r, 1f, z.Data + column, N);
        if (Tape.ShouldRecord(y, x, a, b))
            Tape.Push(z, new LoraSaved
            {
                Y = y, X = x, A = a, B = b, Scale = scale, Column = column,
                XKept = a.RequiresGrad ? SaveGemmOperand(x) : null, HKept = b.RequiresGrad ? SaveGemmOperand(h) : null,
            });
        h.Dispose();
        return z;
    }

    /// <summary>Lora's backward state: y [rows, N], x [rows, K], A [r, K], B [n, r], h = x·Aᵀ [rows, r].</summary>
    struct LoraSaved : IBackward<LoraSaved>
    {
        public Tensor Y, X, A, B;
        public Tensor? XKept, HKept;
        public float Scale;
        public int Column;

        public static void Backward(ref LoraSaved s, Tensor z)
        {
            var k = z.Device.Kernels;
            int N = LastDim(z), K = LastDim(s.X), rows = Rows(z), r = s.A.Shape[0], n = s.B.Shape[0];
            float* dslice = z.Grad!.Data + s.Column;
            float* db = Tape.GradAccumulatorIfNeeded(s.B);
            if (db != null)
            {
                k.Gemm(true, false, n, r, rows, s.Scale, dslice, N, Tape.Operand(s.HKept!), r, 1f, db, r);
            }
            float* da = Tape.GradAccumulatorIfNeeded(s.A);
            float* dx = Tape.GradOutputIfNeeded(s.X, out bool accX);
            if (da != null || dx != null)
            {
                using var dh = Tensor.Empty(z.Device, DType.F32, rows, r);
                k.Gemm(false, false, rows, r, n, s.Scale, dslice, N, s.B.Data, r, 0f, dh.Data, r);
                if (da != null) k.Gemm(true, false, r, K, rows, 1f, dh.Data, r, Tape.Operand(s.XKept!), K, 1f, da, K);
                if (dx != null) k.Gemm(false, false, rows, K, r, 1f, dh.Data, r, s.A.Data, K, accX ? 1f : 0f, dx, K);
            }
            // dy = dz, passed on last: y may take dz's storage.
            if (s.Y.RequiresGrad) Tape.HandOverGradient(s.Y, z.Grad!);
        }
    }

    /// <summary>Index tensors already checked against a channel count: the check reads the index back to the host,
    /// which would stall a GPU's queue on every forward.</summary>
    static readonly ConditionalWeakTable<Tensor, StrongBox<int>> CheckedChannelIndices = new();

    /// <summary>Throws unless every index is in [0, C) and none repeats (kernels assume distinct channels).</summary>
    static void CheckChannelIndex(string op, Tensor index, int C)
    {
        if (CheckedChannelIndices.TryGetValue(index, out var checkedFor) && checkedFor.Value == C) return;
        var seen = new bool[C];
        foreach (int c in index.ToIntArray())
        {
            if (c < 0 || c >= C) throw new ArgumentException($"{op}: index {index.Describe()} holds channel {c}, outside [0, {C})");
            if (seen[c]) throw new ArgumentException($"{op}: index {index.Describe()} repeats channel {c}");
            seen[c] = true;
        }
        CheckedChannelIndices.AddOrUpdate(index, new StrongBox<int>(C));
    }
}
