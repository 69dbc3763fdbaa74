using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Linear family's cases (Ops/Linear.cs).
public static partial class OpCases
{
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
}
