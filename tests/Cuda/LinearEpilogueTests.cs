using Engine.Kernels;
using Engine.Kernels.Cuda;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>A Linear's bias added in the GEMM's epilogue (<see cref="CudaRuntime.TryLinearProduct"/>, cuBLASLt on a GPU,
/// emulated here): six AdamW steps of ViT, Swin and ConvNeXt are bit for bit the steps with the GEMM and a bias pass,
/// in fp32 (float32 outputs with their bias) and bf16 (the qkv layer's and fc1's pre-activation written in 16 bits
/// straight from the product; SSF's products at its Linear sites, which its scale-shift reads), and the epilogue did run.</summary>
[TestFixture, NonParallelizable]
public class LinearEpilogueTests
{
    static (GraphCheck.Result Run, long Products) Train(string family, string method, Precision precision, bool epilogues)
    {
        var device = (CudaDevice)Backends.Get("emulated-cuda");
        var runtime = (EmulatedRuntime)device.Runtime;
        bool previous = runtime.LinearEpilogues;
        try
        {
            runtime.LinearEpilogues = epilogues;
            long before = runtime.LinearProducts;
            var run = GraphCheck.Train(TinyModels.Create(family, device), TinyModels.Classes, method, graph: false, precision: precision);
            return (run, runtime.LinearProducts - before);
        }
        finally
        {
            runtime.LinearEpilogues = previous;
        }
    }

    static void AssertSameBits(IEnumerable<float> got, IEnumerable<float> want, string what) =>
        Assert.That(got.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Select(BitConverter.SingleToInt32Bits)), what);

    [Test]
    public void TrainingIsBitForBitTheGemmAndBiasPass([Values("vit", "swin", "convnext")] string family, [Values("full", "gps", "ssf")] string method,
        [Values(Precision.FP32, Precision.BF16)] Precision precision)
    {
        var (pass, none) = Train(family, method, precision, epilogues: false);
        var (epilogue, products) = Train(family, method, precision, epilogues: true);
        Assert.That(none, Is.Zero, "products through the epilogue with it turned off");
        Assert.That(products, Is.Positive, "no Linear ran its product through the epilogue");
        AssertSameBits(epilogue.Losses, pass.Losses, $"losses {string.Join(", ", epilogue.Losses)} against {string.Join(", ", pass.Losses)}");
        for (int p = 0; p < pass.Parameters.Length; p++) AssertSameBits(epilogue.Parameters[p], pass.Parameters[p], $"parameter {p} after six steps");
        Assert.That(pass.Parameters.Zip(pass.Initial).Any(p => !p.First.SequenceEqual(p.Second)), "training moved the parameters");
    }
}
