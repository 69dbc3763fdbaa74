using System.Runtime.CompilerServices;
using Engine.Autograd;

namespace Engine;

// SCT's salient channel module: a K×K linear map on K selected channels of the residual stream, added back in place.
// GPS's sparse gradients run inside Linear's and DepthwiseConv2d's backward. Kernels: CpuKernels.Peft.cs, cuda/peft.cu.
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
