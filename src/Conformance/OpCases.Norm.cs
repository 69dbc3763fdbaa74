using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Norm family's cases (Ops/Norm.cs).
public static partial class OpCases
{
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

    static void ScaleShift(Device dev)
    {
        GradCheck.Run(dev, "ScaleShift",
            [new("x", [2, 7, 13]), new("scale", [13]), new("shift", [13])],
            t => Ops.ScaleShift(t[0], t[1], t[2]),
            v => Enumerable.Range(0, v[0].Length).Select(i => v[0][i] * v[1][i % 13] + v[2][i % 13]).ToArray());
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
}
