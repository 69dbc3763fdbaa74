using Engine.Checkpoints;
using Engine.Models.ConvNeXt;

namespace Engine.Tests;

/// <summary>ConvNeXt against TensorFlow.js (tests/Fixtures/make-convnext-tiny.js): logits, loss and every parameter
/// gradient on every backend; the presets' parameter counts; the original .pth key names.</summary>
[TestFixture]
public class ConvNeXtTests
{
    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void LogitsLossAndEveryGradientMatchTensorFlowJs(string backend)
    {
        var device = Backends.Get(backend);
        string dir = VitFixtureTests.FixtureDir("convnext-tiny");
        using var model = new ConvNeXt(device, ConvNeXtConfig.Resolve(Path.Combine(dir, "config.json")), seed: 9);
        var report = model.Load(Path.Combine(dir, "weights.safetensors"));
        Assert.That(report.Loaded, Has.Count.EqualTo(model.Parameters.Count));
        VitFixtureTests.CheckAgainstFixture(device, dir, model.Parameters, x => model.Forward(x));
    }

    [Test]
    public void PresetParameterCountsMatchTimm()
    {
        // models.md: ConvNeXt-B backbone 87,566,464; with a 1k head 88,591,464.
        using var baseModel = new ConvNeXt(Device.Cpu, ConvNeXtConfig.Presets["convnext_base"] with { num_classes = 1000 });
        Assert.That(baseModel.ParameterCount, Is.EqualTo(88_591_464));
        using var backbone = new ConvNeXt(Device.Cpu, ConvNeXtConfig.Presets["convnext_base"] with { num_classes = 0 });
        Assert.That(backbone.ParameterCount, Is.EqualTo(87_566_464), "the backbone, the head's norm included");
    }

    [TestCase("downsample_layers.0.0.weight", "stem.0.weight")]
    [TestCase("downsample_layers.0.1.bias", "stem.1.bias")]
    [TestCase("downsample_layers.2.1.weight", "stages.2.downsample.1.weight")]
    [TestCase("stages.1.4.dwconv.weight", "stages.1.blocks.4.conv_dw.weight")]
    [TestCase("stages.3.0.pwconv1.bias", "stages.3.blocks.0.mlp.fc1.bias")]
    [TestCase("stages.3.0.pwconv2.weight", "stages.3.blocks.0.mlp.fc2.weight")]
    [TestCase("stages.0.2.gamma", "stages.0.blocks.2.gamma")]
    [TestCase("stages.0.2.norm.weight", "stages.0.blocks.2.norm.weight")]
    [TestCase("norm.weight", "head.norm.weight")]
    [TestCase("head.bias", "head.fc.bias")]
    public void OriginalKeysMapToTimms(string original, string timm) => Assert.That(ConvNeXt.TimmKey(original), Is.EqualTo(timm));

    [Test]
    public void LoadsAnOriginalPthIntoTheFixtureLogits()
    {
        // tests/Fixtures/make-pth.py writes the fixture weights under the original keys in torch.save's zip layout.
        string dir = VitFixtureTests.FixtureDir("convnext-tiny");
        using var model = new ConvNeXt(Device.Cpu, ConvNeXtConfig.Resolve(Path.Combine(dir, "config.json")), seed: 1);
        var report = model.Load(Path.Combine(VitFixtureTests.FixtureDir("pth"), "convnext-original.pth"));
        Assert.That(report.Loaded, Has.Count.EqualTo(model.Parameters.Count));
        var input = Npy.Read(Path.Combine(dir, "input.npy"));
        using var x = Tensor.FromArray(Device.Cpu, input.Data, input.Shape);
        using var logits = model.Forward(x);
        var want = Npy.Read(Path.Combine(dir, "logits.npy")).Data;
        GradCheck.CheckClose("logits from the .pth", logits.ToArray(), [.. want.Select(v => (double)v)], 1e-5, 1e-5);
    }

    [Test]
    public void EveryTimmKeyRoundTripsThroughTheOriginalName()
    {
        using var checkpoint = Checkpoint.Open(Path.Combine(VitFixtureTests.FixtureDir("convnext-tiny"), "weights.safetensors"));
        foreach (var e in checkpoint.Entries)
            Assert.That(ConvNeXt.TimmKey(OriginalKey(e.Name)), Is.EqualTo(e.Name), $"{e.Name} round-trips through the original name");
    }

    /// <summary>timm key → the original repository's key (the inverse mapping, written out independently).</summary>
    static string OriginalKey(string timm)
    {
        var p = timm.Split('.');
        return p switch
        {
            ["stem", var m, .. var r] => string.Join('.', ["downsample_layers", "0", m, .. r]),
            ["stages", var s, "downsample", var m, .. var r] => string.Join('.', ["downsample_layers", s, m, .. r]),
            ["stages", var s, "blocks", var j, "conv_dw", .. var r] => string.Join('.', ["stages", s, j, "dwconv", .. r]),
            ["stages", var s, "blocks", var j, "mlp", "fc1", .. var r] => string.Join('.', ["stages", s, j, "pwconv1", .. r]),
            ["stages", var s, "blocks", var j, "mlp", "fc2", .. var r] => string.Join('.', ["stages", s, j, "pwconv2", .. r]),
            ["stages", var s, "blocks", var j, .. var r] => string.Join('.', ["stages", s, j, .. r]),
            ["head", "norm", .. var r] => string.Join('.', ["norm", .. r]),
            ["head", "fc", .. var r] => string.Join('.', ["head", .. r]),
            _ => timm,
        };
    }
}
