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

    /// <summary>LinearGelu's backward where its products read dh in 16 bits and its bias trains (<c>BiasGeluBackward</c>):
    /// dh in 16 bits and the bias sums added to what dbias held, bit for bit GeluBackward (with its 16-bit copy) then
    /// BiasGrad, in bf16 and fp16, from a float32 and a 16-bit pre-activation, over rows the CUDA reduction slices.</summary>
    static unsafe void BiasGeluBackward(Device dev)
    {
        var k = dev.Kernels;
        var previous = k.GemmPrecision;
        static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
        try
        {
            foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
                foreach (var (rows, cols) in new[] { (9, 40), (37, 40), (1000, 72) }) // one slice (rows ≤ 16) and several
                    foreach (bool packedH in new[] { false, true })
                    {
                        k.GemmPrecision = precision;
                        var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
                        string name = $"BiasGeluBackward {precision.Name()} {rows}×{cols}{(packedH ? ", h in 16 bits" : "")}";
                        using var made = new CaseTensors(dev);
                        var dy = made.Uniform(501, 1f, rows, cols);
                        var h = made.Uniform(502, 4f, rows, cols);
                        var h16 = made.Own(Tensor.Empty(dev, half, rows, cols));
                        k.PackLowPrecision(h16.HalfData, h.Data, h.Count, precision);
                        GemmOperand operand = packedH ? GemmOperand.Packed(h16.HalfData) : h.Data;
                        var dbWant = made.Uniform(503, 1f, cols);
                        var dbGot = made.Uniform(503, 1f, cols);
                        var dx = made.Own(Tensor.Empty(dev, DType.F32, rows, cols));
                        var want = made.Own(Tensor.Empty(dev, half, rows, cols));
                        var got = made.Own(Tensor.Empty(dev, half, rows, cols));
                        k.GeluBackward(dx.Data, want.HalfData, dy.Data, operand, dx.Count, false);
                        k.BiasGrad(dbWant.Data, dx.Data, rows, cols);
                        k.BiasGeluBackward(got.HalfData, dbGot.Data, dy.Data, operand, rows, cols);
                        float[] a = Widened(want), b = Widened(got), da = dbWant.ToArray(), db = dbGot.ToArray();
                        for (int i = 0; i < a.Length; i++)
                            if (!Same(a[i], b[i])) throw new ConformanceException($"{name}: dh[{i}] is {b[i]:G9}, want {a[i]:G9} (GeluBackward's copy)");
                        for (int i = 0; i < da.Length; i++)
                            if (!Same(da[i], db[i])) throw new ConformanceException($"{name}: dbias[{i}] is {db[i]:G9}, want {da[i]:G9} (BiasGrad of GeluBackward's dx)");

                        float[] Widened(Tensor packed)
                        {
                            using var wide = Tensor.Empty(dev, DType.F32, packed.Shape);
                            k.UnpackLowPrecision(wide.Data, packed.HalfData, packed.Count, precision);
                            return wide.ToArray();
                        }
                    }
        }
        finally
        {
            k.GemmPrecision = previous;
        }
    }

    static void Relu(Device dev) =>
        GradCheck.Run(dev, "Relu", // vector body plus scalar tail
            [new("x", [3, 13])],
            t => Ops.Relu(t[0]),
            v => [.. v[0].Select(x => Math.Max(x, 0))], forwardTol: 0, gradTol: 1e-6);
}
