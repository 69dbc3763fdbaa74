using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Elementwise family's cases (Ops/Elementwise.cs).
public static partial class OpCases
{
    static void Add(Device dev)
    {
        GradCheck.Run(dev, "Add",
            [new("a", [7, 13]), new("b", [7, 13])],
            t => Ops.Add(t[0], t[1]),
            v => v[0].Zip(v[1], (a, b) => a + b).ToArray());
    }

    static void ReshapeView(Device dev)
    {
        // A reshape inside the graph still routes gradients to the original tensor.
        GradCheck.Run(dev, "Reshape then Softmax",
            [new("x", [3, 4, 5])],
            t => Ops.Softmax(t[0].Reshape(12, 5)),
            v => Reference.Softmax(v[0], 12, 5));
    }
}
