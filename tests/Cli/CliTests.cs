using System.Diagnostics;
using Engine.Autograd;
using Engine.Checkpoints;
using Engine.Imaging;
using Engine.Models.Vit;

namespace Engine.Tests;

/// <summary>The <c>peft</c> executable end to end: exit codes, one-line errors, help, and the commands' outputs.</summary>
[TestFixture]
public class CliTests
{
    string _dir = "";
    static string Fixture(string file) => Path.Combine(VitFixtureTests.FixtureDir("vit-tiny"), file);

    [SetUp]
    public void SetUp() => _dir = Files.TempDir();

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>Runs <c>dotnet peft.dll args</c> and returns the exit code, stdout and stderr.</summary>
    static (int Code, string Out, string Err) Peft(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(Path.Combine(TestContext.CurrentContext.TestDirectory, "peft.dll"));
        foreach (var a in args) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        TestContext.Out.WriteLine($"peft {string.Join(' ', args)} → {p.ExitCode}\n{stdout.Result}{stderr.Result}");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Test]
    public void InferOnTheFixtureWeightsReproducesTheFixtureLogits()
    {
        string output = Path.Combine(_dir, "logits.npy");
        var (code, stdout, _) = Peft("infer", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"),
            "--input", Fixture("input.npy"), "--output", output, "--batch-size", "2", "--device", "cpu");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("[3, 5]"));
        var got = Npy.Read(output);
        var want = Npy.Read(Fixture("logits.npy"));
        Assert.That(got.Shape, Is.EqualTo(want.Shape));
        double scale = want.Data.Max(Math.Abs);
        GradCheck.CheckClose("infer logits", got.Data, want.Data.Select(v => (double)v).ToArray(), 1e-6 * scale, 1e-6);
    }

    [Test]
    public void InferOnAnImageFolderMatchesTheLibraryPipeline()
    {
        string images = Path.Combine(_dir, "images");
        Directory.CreateDirectory(images);
        var pixels = new[] { (20, 24), (16, 16) }.Select((s, i) => (s.Item1, s.Item2, Enumerable.Range(0, s.Item1 * s.Item2 * 3).Select(j => (byte)((j * (7 + i)) % 251)).ToArray())).ToArray();
        for (int i = 0; i < pixels.Length; i++)
            File.WriteAllBytes(Path.Combine(images, $"img{i}.png"), PngTests.EncodeRgb(pixels[i].Item1, pixels[i].Item2, pixels[i].Item3));
        string output = Path.Combine(_dir, "out.npy");
        var (code, _, _) = Peft("infer", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"), "--input", images, "--output", output);
        Assert.That(code, Is.Zero);
        Assert.That(File.ReadAllLines(Path.Combine(_dir, "out.files.txt")), Is.EqualTo(new[] { "img0.png", "img1.png" }));

        using var model = new VisionTransformer(Device.Cpu, VitConfig.FromJson(Fixture("config.json")));
        model.Load(Fixture("weights.safetensors"));
        var batch = new float[2 * 3 * 16 * 16];
        for (int i = 0; i < 2; i++)
            Normalization.Inception.ResizeInto(new RgbImage(pixels[i].Item1, pixels[i].Item2, pixels[i].Item3), 16, batch.AsSpan(i * 768, 768));
        using var x = Tensor.FromArray(Device.Cpu, batch, 2, 3, 16, 16);
        using var _ = Tape.NoGrad();
        using var logits = model.Forward(x);
        Assert.That(Npy.Read(output).Data, Is.EqualTo(logits.ToArray()));
    }

    [Test]
    public void InspectListsEveryTensorAndTheParameterCount()
    {
        var (code, stdout, _) = Peft("inspect", Fixture("weights.safetensors"));
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("blocks.1.attn.qkv.weight").And.Contain("[96, 32]").And.Contain("F32").And.Contain("total: 27,781 parameters in 32 tensors"));
    }

    [Test]
    public void InspectShowsAGoogleNpzUnderItsOwnOrTimmNames()
    {
        string npz = Files.Npz(_dir, VitTests.GoogleMembers("opt/target/"), "ViT-tiny.npz");
        var (code, stdout, _) = Peft("inspect", npz);
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("opt/target/Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel").And.Contain("[32, 2, 16]"));
        (code, stdout, _) = Peft("inspect", npz, "--timm");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("blocks.1.attn.qkv.weight").And.Contain("[96, 32]").And.Contain("total: 27,781 parameters"));
        (code, var infer, _) = Peft("infer", "--model", Fixture("config.json"), "--weights", npz, "--input", Fixture("input.npy"), "--output", Path.Combine(_dir, "npz.npy"));
        Assert.That(code, Is.Zero, infer);
        var want = Npy.Read(Fixture("logits.npy"));
        GradCheck.CheckClose("npz logits", Npy.Read(Path.Combine(_dir, "npz.npy")).Data, want.Data.Select(v => (double)v).ToArray(), 1e-6 * want.Data.Max(Math.Abs), 1e-6);
    }

    [Test]
    public void ErrorsAreOneClearLineWithANonZeroExitCode()
    {
        string bad = Path.Combine(_dir, "bad.safetensors");
        File.WriteAllBytes(bad, [1, 2, 3, 4, 5]);
        var (code, stdout, stderr) = Peft("inspect", bad);
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(stderr, Does.StartWith("error: ").And.Contain("bad.safetensors").And.Contain("truncated"));
        (code, _, stderr) = Peft("infer", "--model", "vit_base_patch16_224", "--weights", Fixture("weights.safetensors"),
            "--input", Fixture("input.npy"), "--output", Path.Combine(_dir, "o.npy"));
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.StartWith("error: ").And.Contain("weights.safetensors").And.Contain("shape mismatch"));
        (code, _, stderr) = Peft("infer", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"),
            "--input", Fixture("logits.npy"), "--output", Path.Combine(_dir, "o.npy"));
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("logits.npy").And.Contain("must be [B, 3, 16, 16]"));
        Assert.That(File.Exists(Path.Combine(_dir, "o.npy")), Is.False, "nothing written on failure");
        (code, _, _) = Peft("infer", "--model", "x");
        Assert.That(code, Is.Not.Zero, "missing required options");
    }

    [Test]
    public void SelftestRunsTheConformanceCasesAndBenchmarksOnTheEmulatedDevice()
    {
        var (code, stdout, _) = Peft("selftest", "--device", "emulated-cuda", "--filter", "LayerNorm", "--bench", "--bench-size", "small");
        if (code == 3) Assert.Ignore($"emulated CUDA device unavailable: {stdout}");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("device: emulated-cuda").And.Contain("LayerNorm ").And.Contain("1 passed, 0 failed"));
        foreach (var row in new[] { "device-to-device copy", "layernorm forward", "adam step", "GEMM attn proj FP32", "launch overhead (host)" })
            Assert.That(stdout, Does.Contain(row), "benchmark rows");
    }

    [Test]
    public void SelftestOnAMissingGpuSaysWhyWithExitCode3()
    {
        if (Engine.CudaDevice.TryOpen(out var gpu, out _))
        {
            gpu!.Dispose();
            Assert.Ignore("a GPU is present");
        }
        var (code, stdout, stderr) = Peft("selftest", "--device", "cuda");
        Assert.That(code, Is.EqualTo(3));
        Assert.That(stdout, Does.StartWith("no GPU: "));
        Assert.That(stderr, Is.Empty);
    }

    [TestCase("demo"), TestCase("infer"), TestCase("inspect"), TestCase("selftest")]
    public void EveryCommandHasHelp(string command)
    {
        var (code, stdout, _) = Peft(command, "--help");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("Usage:").And.Contain(command));
    }
}
