using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Loss family's cases (Ops/Loss.cs).
public static partial class OpCases
{
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
}
