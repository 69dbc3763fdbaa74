using Engine.Autograd;
using Engine.Models;

namespace Engine.Tests;

/// <summary><see cref="ImageModels.PrepackForInference"/>: the eval forward of each family gives the same bits with its
/// Linear weights packed once as without, and disposing the packs returns the model to per-call packing.</summary>
[TestFixture]
public class PrepackTests
{
    static string Root => Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "../../../.."));

    [TestCase("synthetic-vit"), TestCase("synthetic-swin"), TestCase("synthetic-convnext")]
    public void PrepackedForwardGivesTheSameLogits(string name)
    {
        var dev = new CpuDevice(new Engine.Kernels.Cpu.CpuKernels()); // its own kernels: packs never leak into other tests
        using var model = ImageModels.Create(dev, Path.Combine(Root, "models", name, "config.json"), numClasses: 5, seed: 3);
        int size = model.ImageSize;
        using var images = Tensor.FromArray(dev, Init.NormalValues(2 * model.InChannels * size * size, 0f, 1f, 4), 2, model.InChannels, size, size);
        float[] Logits()
        {
            using var _ = Tape.NoGrad();
            using var logits = model.Forward(images);
            return logits.ToArray();
        }
        var plain = Logits();
        using (model.PrepackForInference())
            Assert.That(Logits(), Is.EqualTo(plain), "pre-packed");
        Assert.That(Logits(), Is.EqualTo(plain), "after the packs are disposed");
    }
}
