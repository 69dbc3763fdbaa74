using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Conv family's cases (Ops/Conv.cs).
public static partial class OpCases
{
    static void DepthwiseConv2d(Device dev)
    {
        // C = 13 and 21: vectors of channels (8 or 16 wide on the CPU) and a scalar tail; the 7×7 kernel larger than the
        // 6×5 input; W = 9: two groups of four outputs and a single one. k = 9: CUDA's weight gradient in four 7×7 windows
        // of taps; k = 13: the weights read from global memory, not shared. C = 40: two CUDA block columns, one partial.
        foreach (var (N, H, W, C, k, pad) in new[] { (2, 7, 5, 3, 3, 1), (1, 9, 9, 2, 7, 3), (1, 4, 6, 5, 3, 0), (1, 6, 5, 13, 7, 3),
                     (1, 5, 9, 21, 7, 3), (2, 5, 6, 3, 9, 4), (1, 3, 4, 2, 13, 6), (2, 6, 7, 40, 7, 3) })
        {
            GradCheck.Run(dev, $"DepthwiseConv2d k{k} pad{pad}",
                [new("x", [N, H, W, C]), new("w", [C, 1, k, k]), new("b", [C])],
                t => Ops.DepthwiseConv2d(t[0], t[1], t[2], pad),
                v => Reference.DepthwiseConv(v[0], v[1], v[2], N, H, W, C, k, pad));
        }
    }

    static void PatchEmbed(Device dev)
    {
        // p = 4, 16 and 3: CUDA's patch sizes known when compiled and one given at run time; 16: 768 values per patch,
        // more than a block row of threads.
        foreach (var (N, C, H, W, p, D) in new[] { (2, 3, 8, 12, 4, 5), (1, 3, 16, 32, 16, 3), (2, 2, 9, 6, 3, 4) })
            GradCheck.Run(dev, $"PatchEmbed (NCHW, p = {p})",
                [new("x", [N, C, H, W]), new("w", [D, C, p, p]), new("b", [D])],
                t => Ops.PatchEmbed(t[0], t[1], t[2]),
                v => Reference.PatchConv(v[0], v[1], v[2], N, C, H, W, p, D, channelsLast: false));
    }

    static void PatchConv(Device dev)
    {
        // p = 2 (ConvNeXt's downsampling) and 4 (its stem), channels last.
        foreach (var (N, C, H, W, p, O) in new[] { (2, 3, 6, 4, 2, 7), (1, 5, 8, 12, 4, 3) })
            GradCheck.Run(dev, $"PatchConv (NHWC, stride {p})",
                [new("x", [N, H, W, C]), new("w", [O, C, p, p]), new("b", [O])],
                t => Ops.PatchConv(t[0], t[1], t[2]),
                v => Reference.PatchConv(v[0], v[1], v[2], N, C, H, W, p, O, channelsLast: true));
    }
}
