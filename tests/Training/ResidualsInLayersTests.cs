using Engine.Kernels;
using Engine.Models;
using Engine.Models.Peft;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>The blocks' branches join the residual stream inside their last Linear (ViT's proj and fc2, Swin's fc2,
/// ConvNeXt's fc2 with its layer scale; <see cref="Ops.Linear"/>'s residual) when nothing stands between the layer and
/// the sum. Whole training runs and eval forwards are bit for bit the runs that add every branch after its layer
/// (<see cref="SiteComputation.ResidualsInLayers"/> off).</summary>
[TestFixture, NonParallelizable]
public class ResidualsInLayersTests
{
    const int Size = TinyModels.Size, Classes = TinyModels.Classes;

    /// <summary>Six AdamW steps (<see cref="GraphCheck.Train"/>), the branches joined inside the layers or after them.</summary>
    static GraphCheck.Result Train(string family, string method, Device device, Precision precision, bool inLayers)
    {
        bool previous = SiteComputation.ResidualsInLayers;
        try
        {
            SiteComputation.ResidualsInLayers = inLayers;
            return GraphCheck.Train(TinyModels.Create(family, device), Classes, method, graph: false, precision: precision);
        }
        finally
        {
            SiteComputation.ResidualsInLayers = previous;
        }
    }

    static void AssertSameBits(IEnumerable<float> got, IEnumerable<float> want, string what) =>
        Assert.That(got.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Select(BitConverter.SingleToInt32Bits)), what);

    [Test]
    public void TrainingIsBitForBitTheRunWithAddsAfterTheLayers([Values("vit", "swin", "convnext")] string family,
        [Values("full", "ssf", "gps")] string method, [Values(Precision.FP32, Precision.BF16)] Precision precision, [Values("cpu", "emulated-cuda")] string backend)
    {
        var device = Backends.Get(backend);
        var after = Train(family, method, device, precision, inLayers: false);
        var inside = Train(family, method, device, precision, inLayers: true);
        AssertSameBits(inside.Losses, after.Losses, $"losses {string.Join(", ", inside.Losses)} against {string.Join(", ", after.Losses)}");
        for (int p = 0; p < after.Parameters.Length; p++) AssertSameBits(inside.Parameters[p], after.Parameters[p], $"parameter {p} after six steps");
        Assert.That(after.Parameters.Zip(after.Initial).Any(p => !p.First.SequenceEqual(p.Second)), "training moved the parameters");
    }

    [Test]
    public void EvalForwardIsBitForBitTheAddsAfterTheLayers([Values("vit", "swin", "convnext")] string family, [Values("cpu", "emulated-cuda")] string backend)
    {
        var device = Backends.Get(backend);
        using var model = TinyModels.Create(family, device);
        using var images = Tensor.FromArray(device, [.. Enumerable.Range(0, 2 * 3 * Size * Size).Select(i => (float)Math.Sin(0.37 * i))], 2, 3, Size, Size);
        float[] Logits(bool inLayers)
        {
            bool previous = SiteComputation.ResidualsInLayers;
            try
            {
                SiteComputation.ResidualsInLayers = inLayers;
                using var logits = model.Forward(images);
                return logits.ToArray();
            }
            finally
            {
                SiteComputation.ResidualsInLayers = previous;
            }
        }
        AssertSameBits(Logits(true), Logits(false), "logits");
    }
}
