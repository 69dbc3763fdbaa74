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

    static void SetGrad(Tensor p, float[] values)
    {
        if (p.Grad == null) p.SetGrad(Tensor.PersistentZeros(p.Device, p.Trainability.StateShape(p)));
        p.Grad!.CopyFrom(values);
    }
}
