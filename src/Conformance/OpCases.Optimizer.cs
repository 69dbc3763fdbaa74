using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Optimizer family's cases (Ops/Optimizer.cs).
public static partial class OpCases
{
    /// <summary>Dense Adam (<see cref="IKernels.AdamStep"/>) against torch.optim's update in double, AdamW and Adam with
    /// L2 weight decay, masked and not, over 1,003 values (a GPU's four-a-thread body and its tail), from buffers aligned
    /// and one float past an alignment (its one-at-a-time path). Each value may differ by a few float steps of its terms
    /// (float arithmetic, with or without a GPU's fused multiply-adds); masked-out values keep their parameter and moments
    /// bit for bit.</summary>
    static unsafe void AdamStep(Device dev)
    {
        const int n = 1003, t = 3;
        const float lr = 0.01f, beta1 = 0.8f, beta2 = 0.95f, eps = 1e-6f, decay = 0.1f;
        float[] p0 = Init.NormalValues(n, 0, 1, 51), g = Init.NormalValues(n, 0, 1, 52), m0 = Init.NormalValues(n, 0, 0.1f, 53),
            v0 = Init.NormalValues(n, 0, 0.1f, 54).Select(x => x * x).ToArray();
        var mask = Enumerable.Range(0, n).Select(i => i % 7 == 3 ? 0f : 1f).ToArray();
        const double Step = 1.0 / (1 << 23); // a float's step at 1
        foreach (bool decoupled in new[] { true, false })
            foreach (bool masked in new[] { false, true })
                foreach (int offset in new[] { 0, 1 })
                {
                    string kind = $"AdamStep ({(decoupled ? "AdamW" : "Adam with L2")}, {(masked ? "masked" : "dense")}, {(offset == 0 ? "aligned" : "one float past an alignment")})";
                    float[] Padded(float[] values) => [.. new float[offset], .. values];
                    using var pt = Tensor.FromArray(dev, Padded(p0), offset + n);
                    using var gt = Tensor.FromArray(dev, Padded(g), offset + n);
                    using var mt = Tensor.FromArray(dev, Padded(m0), offset + n);
                    using var vt = Tensor.FromArray(dev, Padded(v0), offset + n);
                    using var maskT = Tensor.FromArray(dev, Padded(mask), offset + n);
                    dev.Kernels.AdamStep(pt.Data + offset, gt.Data + offset, mt.Data + offset, vt.Data + offset, masked ? maskT.Data + offset : null, n,
                        lr, beta1, beta2, eps, decay, t, decoupled, null);
                    float[] p = pt.ToArray()[offset..], m = mt.ToArray()[offset..], v = vt.ToArray()[offset..];
                    double stepSize = lr / (1 - Math.Pow(beta1, t)), bc2Sqrt = Math.Sqrt(1 - Math.Pow(beta2, t));
                    for (int i = 0; i < n; i++)
                    {
                        if (masked && mask[i] == 0f)
                        {
                            if (BitConverter.SingleToInt32Bits(p[i]) != BitConverter.SingleToInt32Bits(p0[i]) || BitConverter.SingleToInt32Bits(m[i]) != BitConverter.SingleToInt32Bits(m0[i])
                                || BitConverter.SingleToInt32Bits(v[i]) != BitConverter.SingleToInt32Bits(v0[i]))
                                throw new ConformanceException($"{kind}: masked-out element {i} changed");
                            continue;
                        }
                        double pi = p0[i], gi = g[i];
                        if (decoupled) pi *= 1 - (double)lr * decay;
                        else gi += decay * pi;
                        double mi = beta1 * (double)m0[i] + (1 - (double)beta1) * gi, vi = beta2 * (double)v0[i] + (1 - (double)beta2) * gi * gi;
                        double update = stepSize * mi / (Math.Sqrt(vi) / bc2Sqrt + eps);
                        foreach (var (name, got, want, terms) in new[]
                        {
                            ("m", m[i], mi, Math.Abs(beta1 * m0[i]) + Math.Abs((1 - beta1) * gi) + decay * Math.Abs(pi)),
                            ("v", v[i], vi, Math.Abs(beta2 * v0[i]) + (1 - beta2) * gi * gi * 2),
                            ("param", p[i], pi - update, Math.Abs(p0[i]) + 2 * Math.Abs(update)),
                        })
                            if (!(Math.Abs(got - want) <= 4 * Step * terms))
                                throw new ConformanceException($"{kind}: {name}[{i}] is {got:G9}, expected {want:G9} (|Δ| {Math.Abs(got - want):G3} > {4 * Step * terms:G3})");
                    }
                }
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
        sparse.Trainability = Trainability.Selected(it);
        dense.Trainability = Trainability.Masked(mt);
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

    /// <summary>Adam reading lr and its bias corrections from the device (what a captured training step replays) steps
    /// bit for bit as Adam given lr and t, dense masked and sparse alike, under a learning rate that changes every step;
    /// a gate that is not finite (a diverged loss) steps nothing.</summary>
    static void AdamStepValues(Device dev)
    {
        int N = 9, K = 11, k = 3;
        var p0 = Init.NormalValues(N * K, 0, 1, 6);
        var index = new int[N * k];
        var mask = new float[N * K];
        for (int e = 0; e < N * k; e++)
        {
            index[e] = (e / k + 5 * (e % k)) % K;
            mask[e / k * K + index[e]] = 1f;
        }
        using var it = Tensor.FromArray(dev, index, N, k);
        using var mt = Tensor.FromArray(dev, mask, N, K);
        using var values = Tensor.Empty(dev, DType.F32, 4);
        var options = new Optim.AdamOptions { LearningRate = 0.01f, WeightDecay = 0.05f };
        foreach (bool sparse in new[] { false, true })
        {
            string kind = sparse ? "sparse" : "masked";
            using var fromHost = Tensor.FromArray(dev, p0, N, K);
            using var fromDevice = Tensor.FromArray(dev, p0, N, K);
            foreach (var p in new[] { fromHost, fromDevice })
            {
                p.RequiresGrad = true;
                p.Trainability = sparse ? Trainability.Selected(it) : Trainability.Masked(mt);
            }
            using var hostAdam = new Optim.Adam([fromHost], options);
            using var deviceAdam = new Optim.Adam([fromDevice], options);
            for (int t = 1; t <= 4; t++)
            {
                var g = Init.NormalValues(sparse ? N * k : N * K, 0, 1, 20 + (ulong)t);
                SetGrad(fromHost, g);
                SetGrad(fromDevice, g);
                hostAdam.LearningRate = deviceAdam.LearningRate = 0.02f / t;
                hostAdam.Step();
                if (t == 3)
                {
                    var before = fromDevice.ToArray();
                    deviceAdam.WriteStepValues(values);
                    var gated = values.ToArray();
                    gated[3] = float.NaN;
                    values.CopyFrom(gated);
                    deviceAdam.Step(values);
                    if (!fromDevice.ToArray().AsSpan().SequenceEqual(before))
                        throw new ConformanceException($"AdamStepValues ({kind}): a NaN gate still stepped");
                    deviceAdam.UncountStep();
                }
                deviceAdam.WriteStepValues(values);
                deviceAdam.Step(values);
                var h = fromHost.ToArray();
                var d = fromDevice.ToArray();
                for (int i = 0; i < h.Length; i++)
                    if (BitConverter.SingleToInt32Bits(h[i]) != BitConverter.SingleToInt32Bits(d[i]))
                        throw new ConformanceException($"AdamStepValues ({kind}) step {t}: element {i} is {d[i]:G9} from device values, {h[i]:G9} from lr and t");
                if (h.AsSpan().SequenceEqual(p0)) throw new ConformanceException($"AdamStepValues ({kind}): nothing moved");
            }
        }
    }

    /// <summary>Adam over many parameters at once (<see cref="IKernels.AdamStepMany"/>, which a GPU launches 32 small
    /// ones at a time, whatever they train) steps each bit for bit as the single-tensor kernel steps it: dense ones with
    /// their own weight decay (<see cref="IKernels.AdamStep"/>), masked ones (the same with the mask) and ones that train
    /// selected entries (<see cref="IKernels.SparseAdamStep"/>), one of each too large to share a launch; from device
    /// step values too, where a NaN gate steps nothing; and ZeroGrad (<see cref="IKernels.FillMany"/>) zeroes every
    /// gradient and nothing else.</summary>
    static unsafe void AdamStepMany(Device dev)
    {
        const int Count = 60; // i % 3: dense, masked, selected entries
        var options = new Optim.AdamOptions { LearningRate = 0.01f, WeightDecay = 0.05f };
        var all = new List<Tensor>();
        var owned = new List<Tensor>();
        // Each parameter's twin, stepped alone: its values, gradient, moments, mask or index, weight decay.
        var twins = new List<(Tensor P, Tensor G, Tensor M, Tensor V, Tensor? Mask, Tensor? Index, float Decay)>();
        Tensor Own(Tensor t)
        {
            owned.Add(t);
            return t;
        }
        try
        {
            for (int i = 0; i < Count; i++)
            {
                bool large = i is 18 or 19 or 23; // dense and masked 70,000 values, 75,000 selected entries: a launch each
                int N = large ? (i == 23 ? 300 : 100) : 1 + (i * 7) % 40, K = large ? (i == 23 ? 400 : 700) : 1 + (i * 13) % 50;
                int kind = i % 3, k = kind == 2 ? (large ? 250 : 1 + i % K) : K;
                if (kind == 0) (N, K, k) = (1, N * K, N * K);
                var p0 = Init.NormalValues(N * K, 0, 1, 100 + (ulong)i);
                var p = Tensor.FromArray(dev, p0, N, K);
                p.RequiresGrad = true;
                all.Add(p);
                Tensor? mask = null, index = null;
                if (kind == 1)
                {
                    mask = Own(Tensor.FromArray(dev, [.. Enumerable.Range(0, N * K).Select(e => (e * 5 + i) % 3 == 0 ? 0f : 1f)], N, K));
                    p.Trainability = Trainability.Masked(mask);
                }
                else if (kind == 2)
                {
                    // Row o selects the k distinct columns (3·o + j) mod K.
                    index = Own(Tensor.FromArray(dev, [.. Enumerable.Range(0, N * k).Select(e => (e / k * 3 + e % k) % K)], N, k));
                    p.Trainability = Trainability.Selected(index);
                }
                int state = N * k;
                twins.Add((Own(Tensor.FromArray(dev, p0, N, K)), Own(Tensor.Zeros(dev, state)), Own(Tensor.Zeros(dev, state)), Own(Tensor.Zeros(dev, state)),
                    mask, index, 0.001f * (i % 7)));
            }
            using var adam = new Optim.Adam(all, options);
            for (int i = 0; i < Count; i++) adam.SetWeightDecay(all[i], twins[i].Decay);
            using var values = Tensor.Empty(dev, DType.F32, 4);
            for (int t = 1; t <= 3; t++)
            {
                for (int i = 0; i < Count; i++)
                {
                    var g = Init.NormalValues((int)twins[i].G.Count, 0, 1, 50 + (ulong)(t * Count + i));
                    SetGrad(all[i], g);
                    twins[i].G.CopyFrom(g);
                }
                float lr = 0.02f / t;
                adam.LearningRate = lr;
                if (t == 2)
                {
                    var before = all.Select(p => p.ToArray()).ToList();
                    adam.WriteStepValues(values);
                    var gated = values.ToArray();
                    gated[3] = float.NaN;
                    values.CopyFrom(gated);
                    adam.Step(values);
                    for (int i = 0; i < all.Count; i++)
                        if (!all[i].ToArray().AsSpan().SequenceEqual(before[i]))
                            throw new ConformanceException($"AdamStepMany: a NaN gate still stepped parameter {i}");
                    adam.UncountStep();
                }
                if (t == 3)
                {
                    adam.WriteStepValues(values);
                    adam.Step(values);
                }
                else adam.Step();
                for (int i = 0; i < Count; i++)
                {
                    var (p, g, m, v, mask, index, decay) = twins[i];
                    if (index != null)
                        dev.Kernels.SparseAdamStep(p.Data, g.Data, m.Data, v.Data, index.IntData, index.Shape[0], p.Shape[1], index.Shape[1], lr, options.Beta1,
                            options.Beta2, options.Epsilon, decay, t, options.Decoupled, null);
                    else dev.Kernels.AdamStep(p.Data, g.Data, m.Data, v.Data, mask == null ? null : mask.Data, p.Count, lr, options.Beta1, options.Beta2,
                        options.Epsilon, decay, t, options.Decoupled, null);
                    var many = all[i].ToArray();
                    var one = p.ToArray();
                    string kind = index != null ? "selected entries" : mask != null ? "masked" : "dense";
                    for (int e = 0; e < one.Length; e++)
                        if (BitConverter.SingleToInt32Bits(many[e]) != BitConverter.SingleToInt32Bits(one[e]))
                            throw new ConformanceException($"AdamStepMany step {t}: parameter {i} ({kind}, {one.Length} values) element {e} is {many[e]:G9}, " +
                                $"{one[e]:G9} stepped alone");
                }
            }
            var kept = all.Select(p => p.ToArray()).ToList();
            adam.ZeroGrad();
            for (int i = 0; i < all.Count; i++)
            {
                if (all[i].Grad!.ToArray().Any(g => BitConverter.SingleToInt32Bits(g) != 0))
                    throw new ConformanceException($"AdamStepMany: ZeroGrad left a nonzero in parameter {i}'s gradient");
                if (!all[i].ToArray().AsSpan().SequenceEqual(kept[i])) throw new ConformanceException($"AdamStepMany: ZeroGrad changed parameter {i}");
            }
        }
        finally
        {
            foreach (var p in all) p.Dispose();
            foreach (var t in owned) t.Dispose();
        }
    }

    static void SetGrad(Tensor p, float[] values)
    {
        if (p.Grad == null) p.SetGrad(Tensor.PersistentZeros(p.Device, p.Trainability.StateShape(p)));
        p.Grad!.CopyFrom(values);
    }
}
