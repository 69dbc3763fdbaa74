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

    // GELU in the GEMM's epilogue: partial tiles on both edges (rows 7 and 13 cut 6-, 12- and 4-row strips, N 37 cuts
    // 16- and 32-wide panels), a K past one K block, and no bias.
    static void LinearGelu(Device dev)
    {
        foreach (var (rows, N, K) in new[] { (13, 37, 9), (7, 5, 300) })
            GradCheck.Run(dev, $"LinearGelu {rows}x{N}x{K}",
                [new("x", [rows, K], -1.5, 1.5), new("w", [N, K]), new("b", [N])],
                t => Ops.LinearGelu(t[0], t[1], t[2]),
                v => Reference.Gelu(Reference.Linear(v[0], v[1], v[2], rows, N, K)));
        GradCheck.Run(dev, "LinearGelu no bias",
            [new("x", [2, 3, 8]), new("w", [6, 8])],
            t => Ops.LinearGelu(t[0], t[1]),
            v => Reference.Gelu(Reference.Linear(v[0], v[1], null, 6, 6, 8)));
    }

    // SSF at a Linear site: the scale-shift in the GEMM's epilogue, with partial tiles on both edges and a K past one K
    // block; scale and shift train (the product is kept for dscale) and the gradients reach x and W through du.
    static void LinearScaleShift(Device dev)
    {
        foreach (var (rows, N, K) in new[] { (13, 37, 9), (7, 5, 300) })
            GradCheck.Run(dev, $"LinearScaleShift {rows}x{N}x{K}",
                [new("x", [rows, K]), new("w", [N, K]), new("scale", [N]), new("shift", [N])],
                t => Ops.LinearScaleShift(t[0], t[1], t[2], t[3]),
                v => ScaleShiftReference(Reference.Linear(v[0], v[1], null, rows, N, K), v[2], v[3]));
    }

    // SSF at an MLP's first layer and its GELU in one epilogue; the backward recomputes GELU's input from the kept product.
    // Inputs in [-1.5, 1.5] put GELU's input on both sides of its bend.
    static void LinearScaleShiftGelu(Device dev)
    {
        foreach (var (rows, N, K) in new[] { (13, 37, 9), (7, 5, 300) })
            GradCheck.Run(dev, $"LinearScaleShiftGelu {rows}x{N}x{K}",
                [new("x", [rows, K], -1.5, 1.5), new("w", [N, K]), new("scale", [N]), new("shift", [N])],
                t => Ops.LinearScaleShiftGelu(t[0], t[1], t[2], t[3]),
                v => Reference.Gelu(ScaleShiftReference(Reference.Linear(v[0], v[1], null, rows, N, K), v[2], v[3])));
    }

    static double[] ScaleShiftReference(double[] u, double[] scale, double[] shift) =>
        [.. u.Select((value, i) => value * scale[i % scale.Length] + shift[i % shift.Length])];
}
