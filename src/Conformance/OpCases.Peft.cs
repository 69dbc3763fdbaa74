using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Peft family's cases (Ops/Peft.cs).
public static partial class OpCases
{
    static void ChannelAdapter(Device dev)
    {
        int B = 2, T = 5, C = 13;
        int[] index = [1, 4, 5, 11]; // ascending, as SCT selects them
        using var it = Tensor.FromArray(dev, index, index.Length);
        int K = index.Length;
        GradCheck.Run(dev, "ChannelAdapter",
            [new("x", [B, T, C]), new("w", [K, K]), new("b", [K])],
            t => Ops.ChannelAdapter(t[0], it, t[1], t[2]),
            v => Reference.ChannelAdapter(v[0], index, v[1], v[2], B * T, C));
        // Any order of distinct channels, no bias, frozen input.
        int[] unordered = [12, 0, 7];
        using var ut = Tensor.FromArray(dev, unordered, unordered.Length);
        GradCheck.Run(dev, "ChannelAdapter unordered, no bias",
            [new("x", [7, C], RequiresGrad: false), new("w", [3, 3])],
            t => Ops.ChannelAdapter(t[0], ut, t[1], null),
            v => Reference.ChannelAdapter(v[0], unordered, v[1], null, 7, C));
        using var repeated = Tensor.FromArray(dev, [1, 1], 2);
        using var x = Tensor.Zeros(dev, 3, C);
        using var w = Tensor.Zeros(dev, 2, 2);
        try
        {
            Ops.ChannelAdapter(x, repeated, w, null).Dispose();
            throw new ConformanceException("ChannelAdapter: a repeated channel was accepted");
        }
        catch (ArgumentException e) when (e.Message.Contains("repeats channel 1")) { }
    }

    // LoRA into a slice in the middle of the outputs (q or v of a qkv), then over all of them with a 3-d input.
    static void Lora(Device dev)
    {
        int rows = 7, N = 13, K = 9, r = 3, n = 5, column = 6;
        GradCheck.Run(dev, "Lora slice",
            [new("y", [rows, N]), new("x", [rows, K]), new("lora_A", [r, K]), new("lora_B", [n, r])],
            t => Ops.Lora(t[0], t[1], t[2], t[3], 0.75f, column),
            v => Reference.Lora(v[0], v[1], v[2], v[3], 0.75, column, rows, N, K, r));
        GradCheck.Run(dev, "Lora all outputs",
            [new("y", [2, 3, 4]), new("x", [2, 3, 6]), new("lora_A", [2, 6]), new("lora_B", [4, 2])],
            t => Ops.Lora(t[0], t[1], t[2], t[3], 2f),
            v => Reference.Lora(v[0], v[1], v[2], v[3], 2, 0, 6, 4, 6, 2));
        using var y = Tensor.Zeros(dev, 2, 8);
        using var x = Tensor.Zeros(dev, 2, 3);
        using var a = Tensor.Zeros(dev, 1, 3);
        using var b = Tensor.Zeros(dev, 4, 1);
        try
        {
            Ops.Lora(y, x, a, b, 1f, column: 5).Dispose();
            throw new ConformanceException("Lora: a slice past the last output column was accepted");
        }
        catch (ArgumentException e) when (e.Message.Contains("does not fit")) { }
    }

    /// <summary>A Linear weight training selected entries gets exactly the selected entries of dW, [N, k]; dx and db as dense.
    /// Under tf32 and bf16 GEMMs each term's dy and x are rounded as the dense product rounds them (a double sum of the
    /// rounded values; the tolerance is far below what the rounding moves).</summary>
    static void SparseLinearGrad(Device dev)
    {
        var previous = dev.Kernels.GemmPrecision;
        try
        {
            foreach (var precision in new[] { Precision.FP32, Precision.TF32, Precision.BF16 })
            {
                dev.Kernels.GemmPrecision = precision;
                SparseLinearGrad(dev, precision);
            }
            foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
            {
                dev.Kernels.GemmPrecision = precision;
                SparseWeightGradPackedOperands(dev, precision);
            }
        }
        finally { dev.Kernels.GemmPrecision = previous; }
    }

    static void SparseLinearGrad(Device dev, Precision precision)
    {
        // The last three: entries for more than one block of 1,024 (and rows cut into slices) on CUDA; rows of 1,000
        // values, eight to its shared-memory tile of 8,192, so each block's rows take several tiles and a short last one
        // (as ViT-B/16's 768-wide rows take ten to a tile); rows wider than the tile.
        foreach (var (rows, N, K, k) in new[] { (37, 70, 13, 1), (5, 3, 8, 4), (130, 67, 5, 5), (200, 700, 16, 2), (61, 40, 1000, 3), (3, 4, 8219, 3) })
        {
            string name = $"SparseLinearGrad {precision.Name()} {rows}x{N}x{K}";
            var xv = Init.NormalValues(rows * K, 0, 1, 1);
            var wv = Init.NormalValues(N * K, 0, 1, 2);
            var rv = Init.NormalValues(rows * N, 0, 1, 3);
            var index = new int[N * k];
            for (int o = 0; o < N; o++)
                for (int j = 0; j < k; j++) index[o * k + j] = (o * 7 + j * 3) % K; // distinct within a row (k ≤ K, 3 ⟂ K)
            using var x = Tensor.FromArray(dev, xv, rows, K);
            using var w = Tensor.FromArray(dev, wv, N, K);
            using var b = Tensor.Zeros(dev, N);
            using var it = Tensor.FromArray(dev, index, N, k);
            using var r = Tensor.FromArray(dev, rv, rows, N);
            x.RequiresGrad = w.RequiresGrad = b.RequiresGrad = true;
            w.Trainability = Trainability.Selected(it);
            var tape = new Tape();
            Tensor y;
            using (tape.Record()) y = Ops.Linear(x, w, b);
            tape.Backward(y, r);
            y.Dispose();
            var want = new double[N * k];
            for (int o = 0; o < N; o++)
                for (int j = 0; j < k; j++)
                    for (int t = 0; t < rows; t++)
                        want[o * k + j] += (double)RoundReference(rv[t * N + o], precision) * RoundReference(xv[t * K + index[o * k + j]], precision);
            if (!w.Grad!.Shape.SequenceEqual(new[] { N, k })) throw new ConformanceException($"{name}: dW is {w.Grad.Describe()}, expected [{N}, {k}]");
            GradCheck.CheckClose($"{name} k={k} dW", w.Grad.ToArray(), want, 1e-5, 1e-5);
            var db = new double[N]; // from dy's float32 values, unrounded
            for (int t = 0; t < rows; t++)
                for (int o = 0; o < N; o++) db[o] += rv[t * N + o];
            GradCheck.CheckClose($"{name} db", b.Grad!.ToArray(), db, 1e-5, 1e-5);
            if (precision != Precision.FP32 || N > 100) continue; // dx: a GEMM (checked elsewhere at these sizes), here at the small ones
            var dx = new double[rows * K];
            for (int t = 0; t < rows; t++)
                for (int c = 0; c < K; c++)
                    for (int o = 0; o < N; o++) dx[t * K + c] += (double)rv[t * N + o] * wv[o * K + c];
            GradCheck.CheckClose($"{name} dx", x.Grad!.ToArray(), dx, 1e-5, 1e-5);
        }
    }

    /// <summary>SparseWeightGrad reads dy and x each as float32 (rounded as it reads them) or packed in the GEMMs' 16
    /// bits (CUDA: a kernel per pair of formats): every pair gives the float32 operands' entries bit for bit, the same
    /// terms summed in the same order.</summary>
    static unsafe void SparseWeightGradPackedOperands(Device dev, Precision precision)
    {
        var kernels = dev.Kernels;
        var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
        foreach (var (rows, N, K, k) in new[] { (37, 70, 13, 1), (200, 700, 16, 2), (61, 40, 1000, 3), (3, 4, 8219, 3) })
        {
            using var made = new CaseTensors(dev);
            var dy = made.Uniform(601, 1f, rows, N);
            var x = made.Uniform(602, 2f, rows, K);
            var dy16 = made.Own(Tensor.Empty(dev, half, rows, N));
            var x16 = made.Own(Tensor.Empty(dev, half, rows, K));
            kernels.PackLowPrecision(dy16.HalfData, dy.Data, dy.Count, precision);
            kernels.PackLowPrecision(x16.HalfData, x.Data, x.Count, precision);
            var index = new int[N * k];
            for (int o = 0; o < N; o++)
                for (int j = 0; j < k; j++) index[o * k + j] = (o * 7 + j * 3) % K;
            var it = made.Own(Tensor.FromArray(dev, index, N, k));
            float[] Entries(bool dyPacked, bool xPacked)
            {
                using var dvalues = Tensor.Zeros(dev, N, k);
                kernels.SparseWeightGrad(dvalues.Data, dyPacked ? GemmOperand.Packed(dy16.HalfData) : dy.Data,
                    xPacked ? GemmOperand.Packed(x16.HalfData) : x.Data, it.IntData, rows, N, K, k);
                return dvalues.ToArray();
            }
            var want = Entries(false, false);
            float[] dyv = dy.ToArray(), xv = x.ToArray();
            var reference = new double[N * k];
            for (int e = 0; e < N * k; e++)
                for (int t = 0; t < rows; t++)
                    reference[e] += (double)RoundReference(dyv[t * N + e / k], precision) * RoundReference(xv[t * K + index[e]], precision);
            GradCheck.CheckClose($"SparseWeightGrad {precision.Name()} {rows}x{N}x{K} k={k}", want, reference, 1e-5, 1e-5);
            foreach (var (dyPacked, xPacked) in new[] { (false, true), (true, false), (true, true) })
            {
                var got = Entries(dyPacked, xPacked);
                for (int i = 0; i < want.Length; i++)
                    if (BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(want[i]))
                        throw new ConformanceException($"SparseWeightGrad {precision.Name()} {rows}x{N}x{K} dy {(dyPacked ? "packed" : "float32")}, " +
                            $"x {(xPacked ? "packed" : "float32")}: entry {i} is {got[i]:G9}, want {want[i]:G9} (from float32 operands)");
            }
        }
    }

    /// <summary>A depthwise kernel training selected entries gets exactly the selected taps of the dense weight gradient (itself
    /// checked against finite differences by the DepthwiseConv2d case), [C, k]; dx and dbias as without the index.</summary>
    static void SparseDepthwiseGrad(Device dev)
    {
        int N = 2, H = 5, W = 6, C = 7, ks = 3, k = 2;
        var xv = Init.NormalValues(N * H * W * C, 0, 1, 1);
        var wv = Init.NormalValues(C * ks * ks, 0, 1, 2);
        var rv = Init.NormalValues(N * H * W * C, 0, 1, 3);
        var index = new int[C * k];
        for (int c = 0; c < C; c++)
            for (int j = 0; j < k; j++) index[c * k + j] = (c * 4 + j * 5) % (ks * ks); // distinct within a row (5 ⟂ 9)
        (float[] Dw, float[] Dx, float[] Db) Gradients(bool sparse)
        {
            using var x = Tensor.FromArray(dev, xv, N, H, W, C);
            using var w = Tensor.FromArray(dev, wv, C, 1, ks, ks);
            using var b = Tensor.Zeros(dev, C);
            using var it = Tensor.FromArray(dev, index, C, k);
            using var r = Tensor.FromArray(dev, rv, N, H, W, C);
            x.RequiresGrad = w.RequiresGrad = b.RequiresGrad = true;
            if (sparse) w.Trainability = Trainability.Selected(it);
            var tape = new Tape();
            Tensor y;
            using (tape.Record()) y = Ops.DepthwiseConv2d(x, w, b, 1);
            tape.Backward(y, r);
            y.Dispose();
            int[] shape = sparse ? [C, k] : [C, 1, ks, ks];
            if (!w.Grad!.Shape.SequenceEqual(shape)) throw new ConformanceException($"SparseDepthwiseGrad: dW is {w.Grad.Describe()}, expected [{string.Join(", ", shape)}]");
            return (w.Grad.ToArray(), x.Grad!.ToArray(), b.Grad!.ToArray());
        }
        var dense = Gradients(sparse: false);
        var selected = Gradients(sparse: true);
        GradCheck.CheckClose("SparseDepthwiseGrad dW", selected.Dw, [.. index.Select((tap, e) => (double)dense.Dw[e / k * ks * ks + tap])], 1e-6, 1e-6);
        GradCheck.CheckClose("SparseDepthwiseGrad dx", selected.Dx, [.. dense.Dx.Select(v => (double)v)], 1e-6, 1e-6);
        GradCheck.CheckClose("SparseDepthwiseGrad dbias", selected.Db, [.. dense.Db.Select(v => (double)v)], 1e-6, 1e-6);
    }
}
