using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Softmax family's cases (Ops/Softmax.cs).
public static partial class OpCases
{
    static void Softmax(Device dev)
    {
        // Rows of 13 and 256 values stay in a GPU warp's registers; 300 take the path through memory. 300 rows: more than
        // the emulated device's warps, so a warp loads its next register row while it finishes one.
        foreach (var (rows, cols) in new[] { (7, 13), (300, 13), (2, 256), (2, 300) })
            GradCheck.Run(dev, $"Softmax {rows}x{cols}",
                [new("x", [rows, cols], -4, 4)],
                t => Ops.Softmax(t[0]),
                v => Reference.Softmax(v[0], rows, cols));
    }
}
