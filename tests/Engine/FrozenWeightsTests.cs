using Engine.Autograd;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Models;
using Engine.Models.ConvNeXt;
using Engine.Models.Swin;
using Engine.Models.Vit;
using Engine.Optim;

namespace Engine.Tests;

/// <summary><see cref="FrozenWeights"/>: a frozen model's forward is bit for bit the thawed one on every backend (the
/// CPU then reads weights it packed once), packed copies follow the GEMM precision and go when thawed, and writes to
/// frozen weights are refused until the last freeze ends.</summary>
[TestFixture, NonParallelizable]
public class FrozenWeightsTests
{
    const int Size = 16, Classes = 5, Batch = 3;

    // ViT's MLP is 96 → 384 → 96: K crosses a K block (256) and fc1's N a packed column block; the rest has partial panels.
    static IImageClassifier Create(string family, Device device) => family switch
    {
        "vit" => new VisionTransformer(device, new VitConfig { img_size = Size, patch_size = 4, embed_dim = 96, depth = 1, num_heads = 2, num_classes = Classes }, seed: 3),
        "swin" => new Swin(device, new SwinConfig { img_size = Size, patch_size = 2, embed_dim = 8, depths = [2, 2], num_heads = [2, 2], window_size = 4, num_classes = Classes }, seed: 3),
        _ => new ConvNeXt(device, new ConvNeXtConfig { img_size = Size, depths = [1, 1], dims = [8, 16], num_classes = Classes }, seed: 3),
    };

    static float[] Forward(IImageClassifier model, Device device)
    {
        var pixels = Enumerable.Range(0, Batch * 3 * Size * Size).Select(i => CounterRng.Uniform(9, (ulong)i) * 2 - 1).ToArray();
        using var images = Tensor.FromArray(device, pixels, Batch, 3, Size, Size);
        using var _ = Tape.NoGrad();
        using var logits = model.Forward(images);
        return logits.ToArray();
    }

    static long PackedBytes(Device device) => device.Kernels is CpuKernels cpu ? cpu.PackedWeightBytes : 0;

    [Test]
    public void FrozenForwardIsTheThawedOne([Values("vit", "swin", "convnext")] string family,
        [ValueSource(typeof(Backends), nameof(Backends.Names))] string backend)
    {
        var device = Backends.Get(backend);
        using var model = Create(family, device);
        var thawed = Forward(model, device);
        bool packs = device.Kernels is CpuKernels { Blas: null };
        using (var frozen = FrozenWeights.Freeze(model.Parameters))
        {
            Assert.That(frozen.Count, Is.EqualTo(model.Parameters.Count(p => p.Rank >= 2)));
            Assert.That(Forward(model, device), Is.EqualTo(thawed), "first frozen forward (packs)");
            long bytes = PackedBytes(device);
            if (packs) Assert.That(bytes, Is.GreaterThan(0), "the CPU GEMM keeps packed weights");
            Assert.That(Forward(model, device), Is.EqualTo(thawed), "second frozen forward (reads the packs)");
            Assert.That(PackedBytes(device), Is.EqualTo(bytes), "packed once");
        }
        Assert.That(PackedBytes(device), Is.Zero, "thawing frees the packs");
        Assert.That(Forward(model, device), Is.EqualTo(thawed), "thawed again");
    }

    /// <summary>The packs are made in the GEMM precision: a change of precision repacks, so bf16 products of frozen
    /// weights are bit for bit the thawed bf16 ones.</summary>
    [Test]
    public void PackedWeightsFollowTheGemmPrecision()
    {
        var device = new CpuDevice(new CpuKernels());
        using var model = Create("vit", device);
        var fp32 = Forward(model, device);
        device.Kernels.GemmPrecision = Precision.BF16;
        var bf16 = Forward(model, device);
        Assert.That(bf16, Is.Not.EqualTo(fp32), "bf16 rounding shows in the logits");
        using var frozen = FrozenWeights.Freeze(model.Parameters);
        Assert.That(Forward(model, device), Is.EqualTo(bf16));
        device.Kernels.GemmPrecision = Precision.FP32;
        Assert.That(Forward(model, device), Is.EqualTo(fp32));
    }

    [Test]
    public void FrozenWeightsRefuseWritesUntilTheLastFreezeEnds()
    {
        using var model = Create("vit", Device.Cpu);
        var weight = model.Parameters.First(p => p.Name == "blocks.0.mlp.fc1.weight");
        var values = weight.ToArray();
        var outer = FrozenWeights.Freeze(model.Parameters);
        var inner = FrozenWeights.Freeze([weight]);
        var e = Assert.Throws<InvalidOperationException>(() => weight.CopyFrom(values));
        Assert.That(e!.Message, Does.Contain("blocks.0.mlp.fc1.weight").And.Contain("frozen"));
        Assert.Throws<InvalidOperationException>(() => Init.Constant(weight, 0f));
        Assert.Throws<InvalidOperationException>(() => Init.Normal(weight, 0.02f, 1));
        using (var adam = new Adam([weight], new AdamOptions()))
        {
            weight.RequiresGrad = true;
            var tape = new Tape();
            using (tape.Record())
            {
                using var x = Tensor.FromArray(Device.Cpu, new float[2 * weight.Shape[1]], 2, weight.Shape[1]);
                using var y = Ops.Linear(x, weight);
                using var dy = Tensor.FromArray(Device.Cpu, new float[y.Count], y.Shape);
                tape.Backward(y, dy);
            }
            e = Assert.Throws<InvalidOperationException>(adam.Step);
            Assert.That(e!.Message, Does.Contain("blocks.0.mlp.fc1.weight"));
        }
        inner.Dispose();
        Assert.Throws<InvalidOperationException>(() => weight.CopyFrom(values), "still frozen by the outer freeze");
        outer.Dispose();
        Assert.DoesNotThrow(() => weight.CopyFrom(values));
    }

    /// <summary>A freeze holds its weights: disposing the model first leaves nothing dangling (the CPU's packs are keyed
    /// by address, which must not be reused while they live).</summary>
    [Test]
    public void FreezeOutlivesItsModel()
    {
        var device = new CpuDevice(new CpuKernels());
        var model = Create("convnext", device);
        var frozen = FrozenWeights.Freeze(model.Parameters);
        var want = Forward(model, device);
        model.Dispose();
        Assert.That(PackedBytes(device), Is.GreaterThan(0));
        frozen.Dispose();
        Assert.That(PackedBytes(device), Is.Zero);
    }
}
