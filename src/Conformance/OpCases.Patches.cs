using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Patches family's cases (Ops/Patches.cs).
public static partial class OpCases
{
    static void PatchMerge(Device dev)
    {
        int B = 2, H = 4, W = 6, C = 3;
        GradCheck.Run(dev, "PatchMerge",
            [new("x", [B, H, W, C])],
            t => Ops.PatchMerge(t[0]),
            v => Reference.PatchMerge(v[0], B, H, W, C));
    }
}
