using Engine.Kernels;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>A training step's 16-bit weight copies (<see cref="WeightCopies"/>, <see cref="TrainStep.Weights"/>): held only
/// where the products read them (CUDA under bf16 or fp16 GEMMs), one conversion launch per 32 weights instead of one per
/// product, writes refused while held, and whole training runs bit for bit the runs without them, graphed or not.</summary>
[TestFixture, NonParallelizable]
public class WeightCopiesTests
{
    static float[] Values(int n, ulong seed) => Enumerable.Range(0, n).Select(i => CounterRng.Uniform(seed, (ulong)i) * 2 - 1).ToArray();

    [Test]
    public void TrainingWithTheCopiesIsBitForBitTrainingWithout([Values("vit", "swin", "convnext")] string family,
        [Values("full", "ssf", "gps", "adapter")] string method, [Values(Precision.BF16, Precision.FP16)] Precision precision) =>
        AssertSameWithAndWithout(family, method, precision);

    /// <summary>LoRA's A and B are trained weights the products read too (ConvNeXt has no attention for its default targets).</summary>
    [Test]
    public void LoraWithTheCopiesIsBitForBitLoraWithout([Values("vit", "swin")] string family, [Values(Precision.BF16, Precision.FP16)] Precision precision) =>
        AssertSameWithAndWithout(family, "lora", precision);

    /// <summary>The other methods, on ViT in bf16.</summary>
    [Test]
    public void EveryOtherMethodWithTheCopiesIsBitForBitWithout([Values("linear", "bias", "sct", "adaptformer", "vpt")] string method) =>
        AssertSameWithAndWithout("vit", method, Precision.BF16);

    static void AssertSameWithAndWithout(string family, string method, Precision precision)
    {
        var device = Backends.Get("emulated-cuda");
        var with = GraphCheck.Train(TinyModels.Create(family, device), TinyModels.Classes, method, graph: false, precision: precision);
        var without = GraphCheck.Train(TinyModels.Create(family, device), TinyModels.Classes, method, graph: false, precision: precision, weightCopies: false);
        TrainingBits.AssertSame(with, without, "with the weights' copies, and without");
    }

    [Test]
    public void AGraphedStepReconvertsTheCopiesAtEveryReplay([Values(Precision.BF16, Precision.FP16)] Precision precision)
    {
        // The optimizer changes the weights between replays: a graph that kept the first step's copies would train on stale weights.
        var device = Backends.Get("emulated-cuda");
        var graphed = GraphCheck.Train(TinyModels.Create("vit", device), TinyModels.Classes, "full", graph: true, precision: precision);
        var ordinary = GraphCheck.Train(TinyModels.Create("vit", device), TinyModels.Classes, "full", graph: false, precision: precision, weightCopies: false);
        Assert.That(graphed.Replays, Is.EqualTo(4));
        TrainingBits.AssertSame(graphed, ordinary, "graphed with the copies, and ordinary without");
    }

    /// <summary>A chain of 40 Linears under bf16 GEMMs on the emulated device, forward and backward, counted by the
    /// device's own work: with the copies held, two conversion launches (32 weights, then 8) and no product converts a
    /// weight (the emulator rounds only the activations and gradients, and widens the 16-bit copies it is given, work
    /// the profile marks as the emulator's own);
    /// without, every product rounds both of its operands.</summary>
    [Test]
    public void AHoldConvertsEveryWeightInOneLaunchPer32WeightsAndNoProductConvertsOne()
    {
        var device = (CudaDevice)Backends.Get("emulated-cuda");
        using var _ = device.Kernels.UseGemmPrecision(Precision.BF16);
        var weights = Enumerable.Range(0, 40).Select(i => Tensor.FromArray(device, Values(16 * 16, (ulong)i), 16, 16)).ToList();
        using var x = Tensor.FromArray(device, Values(8 * 16, 99), 8, 16);
        x.RequiresGrad = true;
        try
        {
            IReadOnlyDictionary<string, long> Launches(bool held)
            {
                using var copies = new WeightCopies(weights);
                var profile = new Kernels.Cuda.DeviceWorkProfile(device.Runtime);
                device.Runtime.WorkProfile = profile;
                try
                {
                    var tape = new Autograd.Tape();
                    using (held ? copies.Hold() : null)
                    using (tape.Record())
                    {
                        var h = Ops.Linear(x, weights[0]);
                        foreach (var w in weights.Skip(1))
                        {
                            var next = Ops.Linear(h, w);
                            h.Dispose();
                            h = next;
                        }
                        tape.Backward(h, h);
                        h.Dispose();
                    }
                    if (held) Assert.That(copies.Bytes, Is.EqualTo(40 * 256 * 2), "2 bytes a value, each copy on a 256-byte boundary");
                }
                finally
                {
                    device.Runtime.WorkProfile = null;
                    x.DropGrad();
                }
                return profile.Rows.ToDictionary(r => r.Name, r => r.Calls);
            }
            var without = Launches(held: false);
            var with = Launches(held: true);
            Assert.That(with.GetValueOrDefault("convert_to_16_many"), Is.EqualTo(2), "two launches for 40 weights");
            Assert.That(without.GetValueOrDefault("round_to_precision"), Is.EqualTo(4 * 40), "without: both operands of 80 products rounded");
            Assert.That(with.GetValueOrDefault("round_to_precision"), Is.EqualTo(2 * 40), "with: the activations and gradients only");
            Assert.That(with.GetValueOrDefault("convert_from_bf16 (emulator only)"), Is.EqualTo(2 * 40),
                "with: the emulator widens each weight's copy for its CPU product, which a GPU does not launch");
        }
        finally
        {
            foreach (var w in weights) w.Dispose();
        }
    }

    /// <summary>An evaluation's forwards (no tape: the inference kernels, fused attention included) with the copies held
    /// give the logits bit for bit.</summary>
    [Test]
    public void AnEvalForwardWithTheCopiesHeldIsBitForBitWithout([Values("vit", "vit64", "swin", "convnext")] string family,
        [Values(Precision.BF16, Precision.FP16)] Precision precision)
    {
        var device = Backends.Get("emulated-cuda");
        using var _ = device.Kernels.UseGemmPrecision(precision);
        using var model = TinyModels.Create(family, device);
        using var images = Tensor.FromArray(device, Values(2 * 3 * TinyModels.Size * TinyModels.Size, 5), 2, 3, TinyModels.Size, TinyModels.Size);
        using var noGrad = Autograd.Tape.NoGrad();
        float[] without;
        using (var logits = model.Forward(images)) without = logits.ToArray();
        using var copies = new WeightCopies(model.Parameters);
        using (var hold = copies.Hold())
        using (var logits = model.Forward(images))
        {
            Assert.That(hold, Is.Not.Null);
            Assert.That(logits.ToArray().Select(BitConverter.SingleToInt32Bits), Is.EqualTo(without.Select(BitConverter.SingleToInt32Bits)));
        }
    }

    [Test]
    public void HeldWeightsRefuseWritesUntilTheHoldEnds()
    {
        var device = Backends.Get("emulated-cuda");
        using var _ = device.Kernels.UseGemmPrecision(Precision.BF16);
        using var w = Tensor.FromArray(device, Values(64, 1), 8, 8);
        using var copies = new WeightCopies([w]);
        var hold = copies.Hold();
        Assert.That(hold, Is.Not.Null);
        var refused = Assert.Throws<InvalidOperationException>(() => w.CopyFrom(Values(64, 2)));
        Assert.That(refused!.Message, Does.Contain("WeightCopies"));
        Assert.Throws<InvalidOperationException>(() => copies.Hold(), "a second hold while one is open");
        hold!.Dispose();
        w.CopyFrom(Values(64, 2));
        using (copies.Hold())
        {
            hold.Dispose(); // the old hold, disposed again, does not end the new one
            Assert.Throws<InvalidOperationException>(() => w.CopyFrom(Values(64, 3)));
        }
        w.CopyFrom(Values(64, 3));
    }

    [Test]
    public void NothingIsHeldWhereTheProductsWouldNotReadTheCopies()
    {
        var cpu = Backends.Get("cpu");
        using (cpu.Kernels.UseGemmPrecision(Precision.BF16))
        using (var w = Tensor.FromArray(cpu, Values(64, 1), 8, 8))
        using (var copies = new WeightCopies([w]))
        {
            Assert.That(copies.Hold(), Is.Null, "the CPU's GEMM rounds as it packs");
            Assert.That(copies.Bytes, Is.Zero);
        }
        var cuda = Backends.Get("emulated-cuda");
        using (cuda.Kernels.UseGemmPrecision(Precision.TF32))
        using (var w = Tensor.FromArray(cuda, Values(64, 1), 8, 8))
        using (var vector = Tensor.FromArray(cuda, Values(8, 1), 8))
        using (var rows = w.Slice(0, 2, 3))
        using (var copies = new WeightCopies([w, vector, w, rows]))
        {
            Assert.That(copies.Count, Is.EqualTo(1), "vectors, repeats and views into a weight taken are left out");
            Assert.That(copies.Hold(), Is.Null, "tf32 products read float32");
        }
    }
}
