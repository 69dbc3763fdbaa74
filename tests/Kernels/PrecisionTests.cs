using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Tests;

/// <summary>Mixed precision outside the conformance cases: the names, the rounding op's straight-through gradient, and
/// a GEMM precision that really changes the products.</summary>
[TestFixture]
public class PrecisionTests
{
    [Test]
    public void NamesParseBackAndOthersAreRefusedWithTheChoices()
    {
        foreach (var p in Enum.GetValues<Precision>()) Assert.That(LowPrecision.Parse(p.Name().ToUpperInvariant()), Is.EqualTo(p));
        var e = Assert.Throws<ArgumentException>(() => LowPrecision.Parse("fp8"))!;
        Assert.That(e.Message, Does.Contain("fp8").And.Contain("fp32, tf32, bf16, fp16"));
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void RoundToPrecisionRoundsForwardAndPassesTheGradientThrough(string backend)
    {
        var device = Backends.Get(backend);
        float[] values = [1.00390625f, -3.14159265f, 70000f, 1e-8f];
        using var x = Tensor.FromArray(device, values, 2, 2);
        x.RequiresGrad = true;
        var tape = new Tape();
        using (tape.Record())
        {
            using var y = Ops.RoundToPrecision(x, Precision.FP16);
            Assert.That(y.ToArray(), Is.EqualTo(values.Select(v => (float)(Half)v).ToArray()));
            using var upstream = Tensor.FromArray(device, [0.5f, -2f, 3f, 4f], 2, 2);
            tape.Backward(y, upstream);
        }
        Assert.That(x.Grad!.ToArray(), Is.EqualTo(new[] { 0.5f, -2f, 3f, 4f }));
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public unsafe void Bf16GemmDiffersFromFp32ByAboutItsRoundoff(string backend)
    {
        var device = Backends.Get(backend);
        const int M = 8, N = 8, K = 64;
        var a = Enumerable.Range(0, M * K).Select(i => (float)Math.Sin(i + 0.5)).ToArray();
        var b = Enumerable.Range(0, K * N).Select(i => (float)Math.Cos(i * 0.7)).ToArray();
        using var ta = Tensor.FromArray(device, a, M, K);
        using var tb = Tensor.FromArray(device, b, K, N);
        float[] Product(Precision precision)
        {
            using var c = Tensor.Zeros(device, M * N);
            device.Kernels.GemmPrecision = precision;
            try { device.Kernels.Gemm(false, false, M, N, K, 1f, ta.Data, K, tb.Data, N, 0f, c.Data, N); }
            finally { device.Kernels.GemmPrecision = Precision.FP32; }
            return c.ToArray();
        }
        var fp32 = Product(Precision.FP32);
        var bf16 = Product(Precision.BF16);
        double worst = fp32.Zip(bf16).Max(p => Math.Abs(p.First - p.Second));
        // Σ of 64 products of magnitude ≤ 1, each operand off by up to 2⁻⁹ relative: differences of order 1e-2.
        Assert.That(worst, Is.GreaterThan(1e-3).And.LessThan(0.25));
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public unsafe void APackedOperandIsRefusedUnlessTheGemmsRunInSixteenBits(string backend)
    {
        var device = Backends.Get(backend);
        using var a = Tensor.Empty(device, DType.BF16, 4, 4);
        using var b = Tensor.Zeros(device, 4, 4);
        using var c = Tensor.Zeros(device, 4, 4);
        device.Kernels.PackLowPrecision(a.HalfData, b.Data, 16, Precision.BF16);
        foreach (var precision in new[] { Precision.FP32, Precision.TF32 })
        {
            device.Kernels.GemmPrecision = precision;
            try
            {
                var e = Assert.Throws<ArgumentException>(() => device.Kernels.Gemm(false, false, 4, 4, 4, 1f, GemmOperand.Packed(a.HalfData), 4, b.Data, 4, 0f, c.Data, 4))!;
                Assert.That(e.Message, Does.Contain("Gemm").And.Contain(precision.Name()).And.Contain("16 bits"));
            }
            finally { device.Kernels.GemmPrecision = Precision.FP32; }
        }
    }
}
