using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Windows family's cases (Ops/Windows.cs).
public static partial class OpCases
{
    static void WindowPartition(Device dev)
    {
        // Narrow channels (many tokens per block of threads), and channels wider than a block's row (260 > 256).
        foreach (var (B, H, W, C, ws, shift) in new[] { (2, 6, 9, 2, 3, 0), (2, 6, 9, 2, 3, 1), (1, 4, 6, 260, 2, 1) })
            GradCheck.Run(dev, $"WindowPartition {B}x{H}x{W}x{C} window {ws} shift {shift}",
                [new("x", [B, H, W, C])],
                t => Ops.WindowPartition(t[0], ws, shift),
                v => Reference.WindowPartition(v[0], B, H, W, C, ws, shift));
    }

    static void WindowReverse(Device dev)
    {
        foreach (var (B, H, W, C, ws, shift) in new[] { (2, 6, 9, 2, 3, 2), (1, 4, 6, 260, 2, 1) })
        {
            // Reverse is the inverse permutation: reverse(partition(x)) = x, checked with the partition reference inverted.
            var perm = Reference.WindowPartition(Enumerable.Range(0, B * H * W * C).Select(i => (double)i).ToArray(), B, H, W, C, ws, shift);
            GradCheck.Run(dev, $"WindowReverse {B}x{H}x{W}x{C} window {ws} shift {shift}",
                [new("windows", [B * (H / ws) * (W / ws), ws * ws, C])],
                t => Ops.WindowReverse(t[0], H, W, shift),
                v =>
                {
                    var x = new double[v[0].Length];
                    for (int i = 0; i < perm.Length; i++) x[(int)perm[i]] = v[0][i];
                    return x;
                });
        }
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
}
