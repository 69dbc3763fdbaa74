using Engine.Autograd;

namespace Engine.Tests;

/// <summary>Regression: a depthwise convolution whose bias trains while its weight is frozen (BitFit on ConvNeXt) keeps
/// no input for backward; the bias gradient must still be Σ dy, on every backend.</summary>
[TestFixture]
public class DepthwiseBiasOnlyTests
{
    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void TheBiasGradientIsTheSumOfTheOutputGradient(string backend)
    {
        var device = Backends.Get(backend);
        int N = 2, H = 5, W = 4, C = 3, k = 3;
        using var x = Tensor.FromArray(device, Init.NormalValues(N * H * W * C, 0, 1, 1), N, H, W, C);
        using var weight = Tensor.FromArray(device, Init.NormalValues(C * k * k, 0, 1, 2), C, 1, k, k);
        var bias = Tensor.Parameter(device, "bias", C);
        var dyValues = Init.NormalValues(N * H * W * C, 0, 1, 3);
        using var dy = Tensor.FromArray(device, dyValues, N, H, W, C);
        var tape = new Tape();
        using (tape.Record())
        {
            using var y = Ops.DepthwiseConv2d(x, weight, bias, padding: 1);
            tape.Backward(y, dy);
        }
        var want = new double[C];
        for (int i = 0; i < dyValues.Length; i++) want[i % C] += dyValues[i];
        GradCheck.CheckClose("dbias", bias.Grad!.ToArray(), want, 1e-5, 1e-5);
        bias.Dispose();
    }
}
