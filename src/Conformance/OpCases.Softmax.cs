using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Softmax family's cases (Ops/Softmax.cs).
public static partial class OpCases
{
    static void Softmax(Device dev)
    {
        GradCheck.Run(dev, "Softmax",
            [new("x", [7, 13], -4, 4)],
            t => Ops.Softmax(t[0]),
            v => Reference.Softmax(v[0], 7, 13));
    }
}
