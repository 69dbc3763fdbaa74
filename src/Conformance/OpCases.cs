using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

/// <summary>
/// One conformance case per op, run on any device: forward against the double reference, every input gradient
/// against central finite differences (<see cref="GradCheck"/>). Odd sizes on purpose. The NUnit tests run each
/// case on every backend; <c>peft selftest</c> runs them on the device it is given.
/// </summary>
public static class OpCases
{
    /// <summary>Every case by name, in a stable order.</summary>
    public static IReadOnlyList<(string Name, Action<Device> Run)> All { get; } =
    [
        ("Linear", Linear),
        ("LayerNorm", LayerNorm),
        ("Gelu", Gelu),
        ("Softmax", Softmax),
        ("Attention", Attention),
        ("AttentionWithBiasAndMask", AttentionWithBiasAndMask),
        ("Add", Add),
        ("ScaleShift", ScaleShift),
        ("CrossEntropy", CrossEntropy),
        ("DepthwiseConv2d", DepthwiseConv2d),
        ("PatchEmbed", PatchEmbed),
        ("PatchConv", PatchConv),
        ("PrependToken", PrependToken),
        ("AddPositionEmbedding", AddPositionEmbedding),
        ("TakeToken", TakeToken),
        ("MeanTokens", MeanTokens),
        ("WindowPartition", WindowPartition),
        ("WindowReverse", WindowReverse),
        ("PatchMerge", PatchMerge),
        ("RelativePositionBias", RelativePositionBias),
        ("DropPath", DropPath),
        ("Dropout", Dropout),
        ("ReshapeView", ReshapeView),
        ("ChannelAdapter", ChannelAdapter),
        ("L2Normalize", L2Normalize),
        ("SupConLoss", SupConLoss),
        ("SparseLinearGrad", SparseLinearGrad),
        ("SparseDepthwiseGrad", SparseDepthwiseGrad),
        ("SparseAdam", SparseAdam),
    ];


    static void Linear(Device dev)
    {
        foreach (var (rows, N, K) in new[] { (7, 11, 13), (1, 5, 3), (3, 17, 197) })
        {
            GradCheck.Run(dev, $"Linear {rows}x{N}x{K}",
                [new("x", [rows, K]), new("w", [N, K]), new("b", [N])],
                t => Ops.Linear(t[0], t[1], t[2]),
                v => Reference.Linear(v[0], v[1], v[2], rows, N, K));
        }
        // No bias, 3-d input, conv-shaped weight [N, C, p, p] flattened to K.
        GradCheck.Run(dev, "Linear 3d / conv weight",
            [new("x", [2, 3, 12]), new("w", [5, 3, 2, 2])],
            t => Ops.Linear(t[0], t[1]),
            v => Reference.Linear(v[0], v[1], null, 6, 5, 12));
    }

    static void LayerNorm(Device dev)
    {
        foreach (var (rows, C) in new[] { (7, 13), (3, 197), (1, 1) })
        {
            GradCheck.Run(dev, $"LayerNorm {rows}x{C}",
                [new("x", [rows, C], -2, 2), new("w", [C], 0.5, 1.5), new("b", [C])],
                t => Ops.LayerNorm(t[0], t[1], t[2], 1e-6f),
                v => Reference.LayerNorm(v[0], v[1], v[2], rows, C, 1e-6), gradTol: C == 1 ? 1e-2 : 2e-4);
        }
        GradCheck.Run(dev, "LayerNorm no affine",
            [new("x", [5, 9])],
            t => Ops.LayerNorm(t[0], null, null, 1e-5f),
            v => Reference.LayerNorm(v[0], null, null, 5, 9, 1e-5));
    }

    static void Gelu(Device dev)
    {
        // Vector body plus scalar tail (13 = 8 + 5), and a wide range for the erf tails.
        GradCheck.Run(dev, "Gelu",
            [new("x", [3, 13], -6, 6)],
            t => Ops.Gelu(t[0]),
            v => Reference.Gelu(v[0]), forwardTol: 1e-6, gradTol: 1e-5);
    }

    static void Softmax(Device dev)
    {
        GradCheck.Run(dev, "Softmax",
            [new("x", [7, 13], -4, 4)],
            t => Ops.Softmax(t[0]),
            v => Reference.Softmax(v[0], 7, 13));
    }

    static void Attention(Device dev)
    {
        int B = 2, T = 13, NH = 2, HD = 3;
        GradCheck.Run(dev, "Attention",
            [new("qkv", [B, T, 3 * NH * HD], -2, 2)],
            t => Ops.Attention(t[0], NH),
            v => Reference.Attention(v[0], B, T, NH, HD, null, null, 1));
    }

    static void AttentionWithBiasAndMask(Device dev)
    {
        // Swin-style: 2 images × 2 windows of 4 tokens, relative bias per head, −100 mask per window.
        int B = 4, T = 4, NH = 2, HD = 2, nW = 2;
        var maskValues = new double[nW * T * T];
        for (int i = 0; i < maskValues.Length; i++) maskValues[i] = CounterRng.Uniform(99, (ulong)i) < 0.3 ? -100 : 0;
        using var mask = Tensor.FromArray(dev, maskValues.Select(m => (float)m).ToArray(), nW, T, T);
        GradCheck.Run(dev, "Attention bias+mask",
            [new("qkv", [B, T, 3 * NH * HD], -2, 2), new("bias", [NH, T, T])],
            t => Ops.Attention(t[0], NH, t[1], mask),
            v => Reference.Attention(v[0], B, T, NH, HD, v[1], maskValues, nW));
    }

    static void Add(Device dev)
    {
        GradCheck.Run(dev, "Add",
            [new("a", [7, 13]), new("b", [7, 13])],
            t => Ops.Add(t[0], t[1]),
            v => v[0].Zip(v[1], (a, b) => a + b).ToArray());
    }

    static void ScaleShift(Device dev)
    {
        GradCheck.Run(dev, "ScaleShift",
            [new("x", [2, 7, 13]), new("scale", [13]), new("shift", [13])],
            t => Ops.ScaleShift(t[0], t[1], t[2]),
            v => Enumerable.Range(0, v[0].Length).Select(i => v[0][i] * v[1][i % 13] + v[2][i % 13]).ToArray());
    }

    static void CrossEntropy(Device dev)
    {
        int B = 7, V = 13;
        int[] targets = [0, 12, 5, 5, 3, 7, 11];
        using var tt = Tensor.FromArray(dev, targets, B);
        foreach (float eps in new[] { 0f, 0.1f })
        {
            GradCheck.Run(dev, $"CrossEntropy eps={eps}",
                [new("logits", [B, V], -3, 3)],
                t => Ops.CrossEntropy(t[0], tt, eps),
                v => [Reference.CrossEntropy(v[0], targets, B, V, eps)]);
        }
    }

    static void DepthwiseConv2d(Device dev)
    {
        // C = 13: a CPU vector of channels and a scalar tail; the 7×7 kernel larger than the 6×5 input.
        foreach (var (N, H, W, C, k, pad) in new[] { (2, 7, 5, 3, 3, 1), (1, 9, 9, 2, 7, 3), (1, 4, 6, 5, 3, 0), (1, 6, 5, 13, 7, 3) })
        {
            GradCheck.Run(dev, $"DepthwiseConv2d k{k} pad{pad}",
                [new("x", [N, H, W, C]), new("w", [C, 1, k, k]), new("b", [C])],
                t => Ops.DepthwiseConv2d(t[0], t[1], t[2], pad),
                v => Reference.DepthwiseConv(v[0], v[1], v[2], N, H, W, C, k, pad));
        }
    }

    static void PatchEmbed(Device dev)
    {
        int N = 2, C = 3, H = 8, W = 12, p = 4, D = 5;
        GradCheck.Run(dev, "PatchEmbed (NCHW)",
            [new("x", [N, C, H, W]), new("w", [D, C, p, p]), new("b", [D])],
            t => Ops.PatchEmbed(t[0], t[1], t[2]),
            v => Reference.PatchConv(v[0], v[1], v[2], N, C, H, W, p, D, channelsLast: false));
    }

    static void PatchConv(Device dev)
    {
        int N = 2, C = 3, H = 6, W = 4, p = 2, O = 7;
        GradCheck.Run(dev, "PatchConv (NHWC, stride 2)",
            [new("x", [N, H, W, C]), new("w", [O, C, p, p]), new("b", [O])],
            t => Ops.PatchConv(t[0], t[1], t[2]),
            v => Reference.PatchConv(v[0], v[1], v[2], N, C, H, W, p, O, channelsLast: true));
    }

    static void PrependToken(Device dev)
    {
        int B = 2, T = 7, C = 3;
        GradCheck.Run(dev, "PrependToken",
            [new("x", [B, T, C]), new("cls", [1, 1, C])],
            t => Ops.PrependToken(t[0], t[1]),
            v => Enumerable.Range(0, B).SelectMany(b => v[1].Concat(v[0].Skip(b * T * C).Take(T * C))).ToArray());
    }

    static void AddPositionEmbedding(Device dev)
    {
        int B = 3, T = 5, C = 7;
        GradCheck.Run(dev, "AddPositionEmbedding",
            [new("x", [B, T, C]), new("pos", [1, T, C])],
            t => Ops.AddPositionEmbedding(t[0], t[1]),
            v => Enumerable.Range(0, v[0].Length).Select(i => v[0][i] + v[1][i % (T * C)]).ToArray());
    }

    static void TakeToken(Device dev)
    {
        int B = 3, T = 5, C = 7;
        foreach (int index in new[] { 0, 4 })
        {
            GradCheck.Run(dev, $"TakeToken {index}",
                [new("x", [B, T, C])],
                t => Ops.TakeToken(t[0], index),
                v => Enumerable.Range(0, B).SelectMany(b => v[0].Skip((b * T + index) * C).Take(C)).ToArray());
        }
    }

    static void MeanTokens(Device dev)
    {
        int B = 2, H = 3, W = 5, C = 7;
        GradCheck.Run(dev, "MeanTokens",
            [new("x", [B, H, W, C])],
            t => Ops.MeanTokens(t[0]),
            v => Enumerable.Range(0, B * C).Select(i =>
                Enumerable.Range(0, H * W).Average(t => v[0][(i / C * H * W + t) * C + i % C])).ToArray());
    }

    static void WindowPartition(Device dev)
    {
        int B = 2, H = 6, W = 9, C = 2, ws = 3;
        foreach (int shift in new[] { 0, 1 })
        {
            GradCheck.Run(dev, $"WindowPartition shift {shift}",
                [new("x", [B, H, W, C])],
                t => Ops.WindowPartition(t[0], ws, shift),
                v => Reference.WindowPartition(v[0], B, H, W, C, ws, shift));
        }
    }

    static void WindowReverse(Device dev)
    {
        int B = 2, H = 6, W = 9, C = 2, ws = 3, shift = 2;
        // Reverse is the inverse permutation: reverse(partition(x)) = x, checked with the partition reference inverted.
        var perm = Reference.WindowPartition(Enumerable.Range(0, B * H * W * C).Select(i => (double)i).ToArray(), B, H, W, C, ws, shift);
        GradCheck.Run(dev, "WindowReverse",
            [new("windows", [B * (H / ws) * (W / ws), ws * ws, C])],
            t => Ops.WindowReverse(t[0], H, W, shift),
            v =>
            {
                var x = new double[v[0].Length];
                for (int i = 0; i < perm.Length; i++) x[(int)perm[i]] = v[0][i];
                return x;
            });
    }

    static void PatchMerge(Device dev)
    {
        int B = 2, H = 4, W = 6, C = 3;
        GradCheck.Run(dev, "PatchMerge",
            [new("x", [B, H, W, C])],
            t => Ops.PatchMerge(t[0]),
            v => Reference.PatchMerge(v[0], B, H, W, C));
    }

    static void RelativePositionBias(Device dev)
    {
        foreach (var (ws, NH) in new[] { (3, 2), (2, 3), (1, 1) })
        {
            int side = 2 * ws - 1;
            GradCheck.Run(dev, $"RelativePositionBias ws{ws} heads{NH}",
                [new("table", [side * side, NH])],
                t => Ops.RelativePositionBias(t[0], ws),
                v => Reference.RelativePositionBias(v[0], NH, ws));
        }
    }

    static void DropPath(Device dev)
    {
        int B = 16, T = 3, C = 5;
        const float p = 0.25f;
        const ulong seed = 42;
        GradCheck.Run(dev, "DropPath",
            [new("x", [B, T, C])],
            t => Ops.DropPath(t[0], p, seed),
            v => Enumerable.Range(0, v[0].Length)
                .Select(i => CounterRng.Uniform(seed, (ulong)(i / (T * C))) >= p ? v[0][i] / (1 - p) : 0).ToArray());
    }

    static void Dropout(Device dev)
    {
        const float p = 0.3f;
        const ulong seed = 7;
        GradCheck.Run(dev, "Dropout",
            [new("x", [7, 13])],
            t => Ops.Dropout(t[0], p, seed),
            v => Enumerable.Range(0, v[0].Length).Select(i => CounterRng.Uniform(seed, (ulong)i) >= p ? v[0][i] / (1 - p) : 0).ToArray());
        // The mask drops close to p of a large tensor, and a different seed gives a different mask.
        using var ones = Tensor.FromArray(dev, Enumerable.Repeat(1f, 100_000).ToArray(), 100_000);
        using var a = Ops.Dropout(ones, p, seed);
        using var b = Ops.Dropout(ones, p, seed + 1);
        var av = a.ToArray();
        double dropped = av.Count(x => x == 0) / 1e5;
        if (Math.Abs(dropped - p) > 0.01) throw new ConformanceException($"Dropout: dropped {dropped:P2} of 100,000 elements, expected {p:P0} ± 1%");
        if (av.AsSpan().SequenceEqual(b.ToArray())) throw new ConformanceException("Dropout: seeds 7 and 8 gave the same mask");
    }

    static void ReshapeView(Device dev)
    {
        // A reshape inside the graph still routes gradients to the original tensor.
        GradCheck.Run(dev, "Reshape then Softmax",
            [new("x", [3, 4, 5])],
            t => Ops.Softmax(t[0].Reshape(12, 5)),
            v => Reference.Softmax(v[0], 12, 5));
    }

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

    static void L2Normalize(Device dev)
    {
        GradCheck.Run(dev, "L2Normalize",
            [new("x", [7, 13], -2, 2)],
            t => Ops.L2Normalize(t[0]),
            v => Reference.L2Normalize(v[0], 7, 13, 1e-12));
        // Rows with a norm below eps: y = x / eps (a linear map, so finite differences are exact).
        GradCheck.Run(dev, "L2Normalize clamped",
            [new("x", [3, 5], -1e-3, 1e-3)],
            t => Ops.L2Normalize(t[0], eps: 0.1f),
            v => Reference.L2Normalize(v[0], 3, 5, 0.1), gradTol: 1e-3);
    }

    static void SupConLoss(Device dev)
    {
        // Two views of 5 images with 3 labels, plus an anchor whose label has no other member (adds 0).
        int[] labels = [0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 2, 7];
        int N = labels.Length, D = 6;
        using var lt = Tensor.FromArray(dev, labels, N);
        GradCheck.Run(dev, "SupConLoss on similarities",
            [new("s", [N, N])],
            t => Ops.SupConLoss(t[0], lt, 0.5f),
            v => [Reference.SupCon(v[0], labels, 0.5)]);
        // The GPS pipeline: features → L2 normalise → s = z·zᵀ → loss at τ = 0.07.
        GradCheck.Run(dev, "SupConLoss on features (τ 0.07)",
            [new("f", [N, D])],
            t =>
            {
                using var z = Ops.L2Normalize(t[0]);
                using var s = Ops.Linear(z, z);
                return Ops.SupConLoss(s, lt, 0.07f);
            },
            v =>
            {
                var z = Reference.L2Normalize(v[0], N, D, 1e-12);
                return [Reference.SupCon(Reference.Linear(z, z, null, N, N, D), labels, 0.07)];
            }, forwardTol: 1e-5, gradTol: 1e-3);
    }

    /// <summary>A Linear weight with a GradIndex gets exactly the selected entries of dW, [N, k]; dx and db as dense.</summary>
    static void SparseLinearGrad(Device dev)
    {
        foreach (var (rows, N, K, k) in new[] { (37, 70, 13, 1), (5, 3, 9, 4), (130, 67, 5, 5) })
        {
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
            w.GradIndex = it;
            var tape = new Tape();
            Tensor y;
            using (tape.Record()) y = Ops.Linear(x, w, b);
            tape.Backward(y, r);
            y.Dispose();
            var want = new double[N * k];
            for (int o = 0; o < N; o++)
                for (int j = 0; j < k; j++)
                    for (int t = 0; t < rows; t++) want[o * k + j] += (double)rv[t * N + o] * xv[t * K + index[o * k + j]];
            if (!w.Grad!.Shape.SequenceEqual(new[] { N, k })) throw new ConformanceException($"SparseLinearGrad: dW is {w.Grad.Describe()}, expected [{N}, {k}]");
            GradCheck.CheckClose($"SparseLinearGrad {rows}x{N}x{K} k={k} dW", w.Grad.ToArray(), want, 1e-5, 1e-5);
            var dx = new double[rows * K];
            for (int t = 0; t < rows; t++)
                for (int c = 0; c < K; c++)
                    for (int o = 0; o < N; o++) dx[t * K + c] += (double)rv[t * N + o] * wv[o * K + c];
            GradCheck.CheckClose($"SparseLinearGrad {rows}x{N}x{K} dx", x.Grad!.ToArray(), dx, 1e-5, 1e-5);
        }
    }

    /// <summary>A depthwise kernel with a GradIndex gets exactly the selected taps of the dense weight gradient (itself
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
            if (sparse) w.GradIndex = it;
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

    /// <summary>Sparse Adam on the selected entries equals dense Adam with the equivalent 0/1 mask, step for step, and
    /// leaves every other entry bitwise unchanged.</summary>
    static void SparseAdam(Device dev)
    {
        int N = 9, K = 11, k = 3;
        var p0 = Init.NormalValues(N * K, 0, 1, 5);
        var index = new int[N * k];
        var mask = new float[N * K];
        for (int o = 0; o < N; o++)
            for (int j = 0; j < k; j++)
            {
                index[o * k + j] = (o + 4 * j) % K;
                mask[o * K + index[o * k + j]] = 1f;
            }
        using var sparse = Tensor.FromArray(dev, p0, N, K);
        using var dense = Tensor.FromArray(dev, p0, N, K);
        sparse.RequiresGrad = dense.RequiresGrad = true;
        using var it = Tensor.FromArray(dev, index, N, k);
        using var mt = Tensor.FromArray(dev, mask, N, K);
        sparse.GradIndex = it;
        dense.GradMask = mt;
        var options = new Optim.AdamOptions { LearningRate = 0.01f, WeightDecay = 0.05f, Decoupled = false };
        using var sparseAdam = new Optim.Adam([sparse], options);
        using var denseAdam = new Optim.Adam([dense], options);
        if (sparseAdam.StateBytes != 2L * 4 * N * k) throw new ConformanceException($"SparseAdam: {sparseAdam.StateBytes} bytes of state, expected {2 * 4 * N * k}");
        for (int t = 1; t <= 4; t++)
        {
            var g = Init.NormalValues(N * K, 0, 1, 10 + (ulong)t);
            var selected = new float[N * k];
            for (int e = 0; e < N * k; e++) selected[e] = g[e / k * K + index[e]];
            SetGrad(sparse, selected);
            SetGrad(dense, g);
            sparseAdam.Step();
            denseAdam.Step();
            var s = sparse.ToArray();
            var d = dense.ToArray();
            for (int i = 0; i < s.Length; i++)
            {
                if (BitConverter.SingleToInt32Bits(s[i]) != BitConverter.SingleToInt32Bits(d[i]))
                    throw new ConformanceException($"SparseAdam step {t}: element {i} is {s[i]:G9} sparse, {d[i]:G9} dense masked");
                if (mask[i] == 0f && s[i] != p0[i]) throw new ConformanceException($"SparseAdam step {t}: unselected element {i} changed");
            }
        }
    }

    static void SetGrad(Tensor p, float[] values)
    {
        if (p.Grad == null) p.SetGrad(Tensor.PersistentZeros(p.Device, p.GradIndex?.Shape ?? p.Shape));
        p.Grad!.CopyFrom(values);
    }
}
