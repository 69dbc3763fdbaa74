using Engine.IO;
using Engine.Checkpoints;
using Engine.Models.Swin;

namespace Engine.Tests;

/// <summary>Swin against TensorFlow.js (tests/Fixtures/make-swin-tiny.js: a shifted, masked stage, patch merging, and
/// windows shrunk to the grid): logits, loss and every parameter gradient on every backend; the presets' parameter
/// counts; the original .pth key names and buffers.</summary>
[TestFixture]
public class SwinTests
{
    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void LogitsLossAndEveryGradientMatchTensorFlowJs(string backend)
    {
        var device = Backends.Get(backend);
        string dir = VitFixtureTests.FixtureDir("swin-tiny");
        using var model = new Swin(device, SwinConfig.Resolve(Path.Combine(dir, "config.json")), seed: 9);
        var report = model.Load(Path.Combine(dir, "weights.safetensors"));
        Assert.That(report.Loaded, Has.Count.EqualTo(model.Parameters.Count));
        VitFixtureTests.CheckAgainstFixture(device, dir, model.Parameters, x => model.Forward(x));
    }

    [TestCase("swin_tiny_patch4_window7_224", 28_288_354)]
    [TestCase("swin_small_patch4_window7_224", 49_606_258)]
    [TestCase("swin_base_patch4_window7_224", 87_768_224)]
    public void PresetParameterCountsMatchTimm(string preset, long count)
    {
        // timm's counts with a 1k head; models.md: per block 12C²+13C+169·nH.
        using var model = new Swin(Device.Cpu, SwinConfig.Presets[preset]);
        Assert.That(model.ParameterCount, Is.EqualTo(count));
    }

    [Test]
    public void SwinBaseBackboneAndStageLayoutFollowTheModelCard()
    {
        var config = SwinConfig.Presets["swin_base_patch4_window7_224"];
        using var backbone = new Swin(Device.Cpu, config with { num_classes = 0 });
        Assert.That(backbone.ParameterCount, Is.EqualTo(86_743_224));
        Assert.That(Enumerable.Range(0, 4).Select(config.Resolution), Is.EqualTo(new[] { 56, 28, 14, 7 }));
        Assert.That(Enumerable.Range(0, 4).Select(s => config.WindowOf(s)), Is.EqualTo(new[] { (7, 3), (7, 3), (7, 3), (7, 0) }), "the last stage never shifts");
        // SCT's blocks: the last 9 of the 18 in stage 3 and both in stage 4.
        var sct = backbone.Sites.Where(s => s.Name.EndsWith(".attn_residual")).Select(s => s.Name).ToList();
        Assert.That(sct, Is.EqualTo(Enumerable.Range(9, 9).Select(j => $"layers.2.blocks.{j}.attn_residual")
            .Concat(["layers.3.blocks.0.attn_residual", "layers.3.blocks.1.attn_residual"])));
    }

    [TestCase("layers.0.downsample.reduction.weight", "layers.1.downsample.reduction.weight")]
    [TestCase("layers.2.downsample.norm.bias", "layers.3.downsample.norm.bias")]
    [TestCase("layers.1.blocks.1.attn.qkv.weight", "layers.1.blocks.1.attn.qkv.weight")]
    [TestCase("head.weight", "head.fc.weight")]
    [TestCase("head.bias", "head.fc.bias")]
    [TestCase("norm.weight", "norm.weight")]
    public void OriginalKeysMapToTimms(string original, string timm) => Assert.That(Swin.TimmKey(original), Is.EqualTo(timm));

    [Test]
    public void LoadsAnOriginalPthWithItsBuffersIntoTheFixtureLogits()
    {
        // tests/Fixtures/make-pth.py writes the fixture weights under the original keys, with relative_position_index
        // and attn_mask buffers that must be skipped (a strict load would refuse them as unexpected).
        string dir = VitFixtureTests.FixtureDir("swin-tiny");
        string pth = Path.Combine(VitFixtureTests.FixtureDir("pth"), "swin-original.pth");
        using (var checkpoint = Checkpoint.Open(pth))
        {
            Assert.That(checkpoint.Find("layers.0.blocks.1.attn_mask"), Is.Not.Null, "the fixture holds the buffers");
            Assert.That(checkpoint.Find("layers.0.blocks.0.attn.relative_position_index")!.DType, Is.EqualTo("I64"));
        }
        using var model = new Swin(Device.Cpu, SwinConfig.Resolve(Path.Combine(dir, "config.json")), seed: 1);
        var report = model.Load(pth);
        Assert.That(report.Loaded, Has.Count.EqualTo(model.Parameters.Count));
        var input = Npy.Read(Path.Combine(dir, "input.npy"));
        using var x = Tensor.FromArray(Device.Cpu, input.Data, input.Shape);
        using var logits = model.Forward(x);
        var want = Npy.Read(Path.Combine(dir, "logits.npy")).Data;
        GradCheck.CheckClose("logits from the .pth", logits.ToArray(), [.. want.Select(v => (double)v)], 1e-5, 1e-5);
    }

    [Test]
    public void ACheckpointOfAnotherWidthIsRefusedNamingTheTensors()
    {
        string dir = VitFixtureTests.FixtureDir("swin-tiny");
        using var model = new Swin(Device.Cpu, SwinConfig.Resolve(Path.Combine(dir, "config.json")) with { embed_dim = 16 });
        var error = Assert.Throws<InvalidInputException>(() => model.Load(Path.Combine(dir, "weights.safetensors")))!;
        Assert.That(error.Message, Does.Contain("patch_embed.proj.weight").And.Contain("weights.safetensors"));
    }

    [Test]
    public void InconsistentConfigsAreRefusedWithTheField()
    {
        var tiny = new SwinConfig { img_size = 32, patch_size = 4, embed_dim = 8, depths = [2, 2], num_heads = [2, 3], window_size = 4 };
        Assert.That(() => tiny.Validate("cfg.json"), Throws.ArgumentException.With.Message.Contains("cfg.json").And.Message.Contains("3 heads"));
        Assert.That(() => (tiny with { num_heads = [2, 2], window_size = 3 }).Validate(), Throws.ArgumentException.With.Message.Contains("windows"));
        Assert.That(() => (tiny with { num_heads = [2, 2], img_size = 36 }).Validate(), Throws.ArgumentException.With.Message.Contains("img_size 36"));
    }
}
