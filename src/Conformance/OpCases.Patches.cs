using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Patches family's cases (Ops/Patches.cs).
public static partial class OpCases
{
    static void PatchMerge(Device dev)
    {
        // Narrow channels (many rows per block of threads; 96 rows, more than the emulated device's grid takes at once),
        // and channels wider than a block's row (260 > 256).
        foreach (var (B, H, W, C) in new[] { (2, 4, 6, 3), (2, 6, 8, 3), (1, 2, 4, 260) })
            GradCheck.Run(dev, $"PatchMerge {B}x{H}x{W}x{C}",
                [new("x", [B, H, W, C])],
                t => Ops.PatchMerge(t[0]),
                v => Reference.PatchMerge(v[0], B, H, W, C));
    }
}
