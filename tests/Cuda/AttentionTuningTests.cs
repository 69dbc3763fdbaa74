using Engine.Kernels;
using Engine.Models;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>Training on a GPU picks the attention path per shape by timing both where the fused kernels run on tensor
/// cores (<see cref="CudaDevice.TunesAttention"/>, on by default on a GPU; switched on here on the emulated device, which
/// runs the same kernels): one measurement per shape, the chosen path for every call of it, nothing of the measurement
/// left in the run, and a fused path that disagrees with the unfused one is not chosen.</summary>
[TestFixture, NonParallelizable]
public class AttentionTuningTests
{
    public static IEnumerable<string> CudaBackends => ["emulated-cuda", "cuda"];

    /// <summary>A two-block ViT with head dim 64 (the tensor-core kernels' size), 17 tokens.</summary>
    static IImageClassifier HeadDim64Vit(Device device) => TinyModels.Create("vit64", device);

    /// <summary>Runs <paramref name="work"/> with measured attention on <paramref name="backend"/>, every choice made
    /// reported, then forgets them and restores the device's setting.</summary>
    static T Tuned<T>(string backend, Func<CudaDevice, List<AttentionChoice>, T> work)
    {
        var device = (CudaDevice)Backends.Get(backend);
        bool previous = device.TunesAttention;
        var choices = new List<AttentionChoice>();
        try
        {
            device.TunesAttention = true;
            device.ForgetAttentionChoices();
            using var _ = device.ReportAttentionChoices(choices.Add);
            return work(device, choices);
        }
        finally
        {
            device.TunesAttention = previous;
            device.ForgetAttentionChoices();
        }
    }

    [TestCaseSource(nameof(CudaBackends))]
    public void EachShapeIsMeasuredOnceAndEveryCallTakesItsChoice(string backend) => Tuned(backend, (device, choices) =>
    {
        var (fusedBefore, unfusedBefore) = device.TrainedAttentionCalls;
        var measured = GraphCheck.Train(HeadDim64Vit(device), 5, "full", graph: false, precision: Precision.BF16);
        // Six steps of batches 3, 3, 3, 2, 3, 3: two shapes, each measured on its first step.
        Assert.That(choices.Select(c => (c.Batch, c.Tokens, c.Heads, c.HeadDim, c.Precision)),
            Is.EquivalentTo(new[] { (3, 17, 2, 64, Precision.BF16), (2, 17, 2, 64, Precision.BF16) }));
        foreach (var c in choices)
        {
            Assert.That(c.Disagreement, Is.Null, c.ToString());
            Assert.That(c.FusedMs, Is.GreaterThan(0), c.ToString());
            Assert.That(c.UnfusedMs, Is.GreaterThan(0), c.ToString());
            Assert.That(c.Fused, Is.EqualTo(c.FusedMs <= c.UnfusedMs), c.ToString());
        }
        Assert.That(device.AttentionChoices, Is.EquivalentTo(choices));
        bool fusedAt3 = choices.Single(c => c.Batch == 3).Fused, fusedAt2 = choices.Single(c => c.Batch == 2).Fused;
        long fused = 2 * ((fusedAt3 ? 5 : 0) + (fusedAt2 ? 1 : 0)); // two blocks a step
        Assert.That(device.TrainedAttentionCalls, Is.EqualTo((fusedBefore + fused, unfusedBefore + 12 - fused)));

        // The same run again finds both choices made: it measures nothing, and is bit for bit the run that measured.
        var found = GraphCheck.Train(HeadDim64Vit(device), 5, "full", graph: false, precision: Precision.BF16);
        Assert.That(choices, Has.Count.EqualTo(2));
        Assert.That(found.Losses.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(measured.Losses.Select(BitConverter.SingleToInt32Bits)));
        for (int p = 0; p < measured.Parameters.Length; p++)
            Assert.That(found.Parameters[p], Is.EqualTo(measured.Parameters[p]), $"parameter {p}");
        return 0;
    });

    [TestCaseSource(nameof(CudaBackends))]
    public void StepsReplayedFromAGraphTakeTheChoiceMeasuredOutsideTheCapture(string backend) => Tuned(backend, (device, choices) =>
    {
        // The graphed run measures both shapes outside any capture (the first step of batch 3 runs before the capture,
        // the batch of 2 beside the graph); the ordinary run then finds the choices and takes the same paths.
        var graphed = GraphCheck.Train(HeadDim64Vit(device), 5, "ssf", graph: true, precision: Precision.BF16);
        Assert.That(choices.Select(c => c.Batch), Is.EquivalentTo(new[] { 3, 2 }));
        var ordinary = GraphCheck.Train(HeadDim64Vit(device), 5, "ssf", graph: false, precision: Precision.BF16);
        Assert.That(choices, Has.Count.EqualTo(2));
        Assert.That(GraphCheck.Compare(ordinary, graphed), Is.Empty);
        return 0;
    });

    [TestCaseSource(nameof(CudaBackends))]
    public void NothingIsMeasuredWhereTheFusedKernelsAreNotOnTensorCores(string backend) => Tuned(backend, (device, choices) =>
    {
        var (fusedBefore, unfusedBefore) = device.TrainedAttentionCalls;
        GraphCheck.Train(HeadDim64Vit(device), 5, "full", graph: false, precision: Precision.FP32); // fp32 GEMMs: the FMA kernels
        GraphCheck.Train(TinyModels.Create("vit", device), TinyModels.Classes, "full", graph: false, precision: Precision.BF16); // head dim 16
        Assert.That(choices, Is.Empty);
        bool fused = device.PrefersFusedAttention;
        Assert.That(device.TrainedAttentionCalls, Is.EqualTo(fused ? (fusedBefore + 24, unfusedBefore) : (fusedBefore, unfusedBefore + 24)));
        return 0;
    });

    [Test]
    public void AFusedResultOutsideTheFormatsBoundIsNamed()
    {
        var device = Device.Cpu;
        var values = Enumerable.Range(0, 3000).Select(i => (float)Math.Sin(0.1 * i)).ToArray(); // largest |value| ≈ 1
        string? Compare(int at, float by)
        {
            var fused = (float[])values.Clone();
            fused[at] += by;
            using var a = Tensor.FromArray(device, fused, 3000);
            using var b = Tensor.FromArray(device, values, 3000);
            return AttentionTuning.Disagreement("output", a, b, Precision.BF16, slice: 1024); // three slices, the last short
        }
        double bound = AttentionTuning.BoundInRoundoffs * Precision.BF16.UnitRoundoff();
        Assert.That(Compare(2999, (float)(0.9 * bound)), Is.Null);
        Assert.That(Compare(2999, (float)(1.2 * bound)), Does.Contain("the output differs by").And.Contain("at 2999"));
        Assert.That(Compare(17, float.NaN), Does.Contain("NaN").And.Contain("at 17"));
        Assert.That(Compare(17, float.PositiveInfinity), Does.Contain("holds Infinity at 17"));
    }
}
