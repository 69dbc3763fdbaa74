using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Optimizer family's cases (Ops/Optimizer.cs).
public static partial class OpCases
{
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

    static void SetGrad(Tensor p, float[] values)
    {
        if (p.Grad == null) p.SetGrad(Tensor.PersistentZeros(p.Device, p.Trainability.StateShape(p)));
        p.Grad!.CopyFrom(values);
    }
}
