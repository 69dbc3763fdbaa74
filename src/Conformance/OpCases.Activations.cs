using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Activations family's cases (Ops/Activations.cs).
public static partial class OpCases
{
    static void Gelu(Device dev)
    {
        // Vector body plus scalar tail (13 = 8 + 5), and a wide range for the erf tails.
        GradCheck.Run(dev, "Gelu",
            [new("x", [3, 13], -6, 6)],
            t => Ops.Gelu(t[0]),
            v => Reference.Gelu(v[0]), forwardTol: 1e-6, gradTol: 1e-5);
    }

    static void Relu(Device dev) =>
        GradCheck.Run(dev, "Relu", // vector body plus scalar tail
            [new("x", [3, 13])],
            t => Ops.Relu(t[0]),
            v => [.. v[0].Select(x => Math.Max(x, 0))], forwardTol: 0, gradTol: 1e-6);
}
