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
    internal static (int Code, string Out, string Err) Peft(params string[] args) => Peft(new Dictionary<string, string?>(), args);

    /// <summary>As <see cref="Peft(string[])"/>, with <paramref name="environment"/>'s variables set (null: removed).</summary>
    internal static (int Code, string Out, string Err) Peft(Dictionary<string, string?> environment, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (name, value) in environment) info.Environment[name] = value;
        info.ArgumentList.Add(Path.Combine(TestContext.CurrentContext.TestDirectory, "peft.dll"));
        foreach (var a in args) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        TestContext.Out.WriteLine($"peft {string.Join(' ', args)} → {p.ExitCode}\n{stdout.Result}{stderr.Result}");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Each family's TensorFlow.js fixture through the CLI (the config file decides the family).</summary>
    [TestCase("vit-tiny"), TestCase("swin-tiny"), TestCase("convnext-tiny")]
    public void InferOnTheFixtureWeightsReproducesTheFixtureLogits(string fixture)
    {
        string File(string name) => Path.Combine(VitFixtureTests.FixtureDir(fixture), name);
        string output = Path.Combine(_dir, "logits.npy");
        var (code, stdout, _) = Peft("infer", "--model", File("config.json"), "--weights", File("weights.safetensors"),
            "--input", File("input.npy"), "--output", output, "--batch-size", "2", "--device", "cpu");
        Assert.That(code, Is.Zero);
        var got = Npy.Read(output);
        var want = Npy.Read(File("logits.npy"));
        Assert.That(stdout, Does.Contain($"[{want.Shape[0]}, 5]"));
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
        foreach (var row in new[] { "| copy |", "| layernorm | 34×40 |", "| adam |", "| gemm | 34×40×40 |", "| linear-gelu-bf16 | 34×160×40 |", "| linear-bf16-unfused | 34×120×40 |", "| linear-scale-shift-bf16 | 34×120×40 |", "launch overhead (host)" })
            Assert.That(stdout, Does.Contain(row), "benchmark rows");
    }

    /// <summary>On a CUDA device selftest also replays training steps from CUDA graphs against ordinary ones (without
    /// --filter, or alone with --filter CudaGraphs), and after the op cases says how many Linear products ran in the
    /// GEMM's epilogue; on the CPU it has neither, and --filter CudaGraphs matches nothing there.</summary>
    [Test]
    public void SelftestChecksCudaGraphsOnACudaDevice()
    {
        var (code, stdout, _) = Peft("selftest", "--device", "emulated-cuda", "--filter", "CudaGraphs");
        if (code == 3) Assert.Ignore($"emulated CUDA device unavailable: {stdout}");
        Assert.That(code, Is.Zero, stdout);
        Assert.That(stdout, Does.Contain("CUDA graphs: a tiny ViT's AdamW steps replayed from a captured graph").And.Not.Contain("op conformance"));
        Assert.That(stdout.Split('\n').Count(l => l.StartsWith("  ") && (l.Contains("optimizer in the graph") || l.Contains("optimizer after the replay"))
            && l.TrimEnd().EndsWith("ok")), Is.EqualTo(6), stdout);
        // Which path the Linear cases took: the emulated device runs every epilogue it is asked for.
        (code, stdout, _) = Peft("selftest", "--device", "emulated-cuda", "--filter", "LinearInSixteenBits");
        Assert.That(code, Is.Zero, stdout);
        var epilogues = System.Text.RegularExpressions.Regex.Match(stdout, @"Linear products with the bias in the GEMM's epilogue: (\d+) ran, none declined");
        Assert.That(epilogues.Success, Is.True, stdout);
        Assert.That(long.Parse(epilogues.Groups[1].Value), Is.GreaterThan(0));
        Assert.That(stdout, Does.Not.Contain("CUDA graphs"), "a filter that names op cases leaves the graph check out");
        var cpu = Peft("selftest", "--device", "cpu", "--filter", "Gelu").Out;
        Assert.That(cpu, Does.Not.Contain("CUDA graphs").And.Not.Contain("epilogue:"));
        var (cpuCode, _, cpuError) = Peft("selftest", "--device", "cpu", "--filter", "CudaGraphs");
        Assert.That(cpuCode, Is.EqualTo(1));
        Assert.That(cpuError, Does.Contain("--filter 'CudaGraphs' matches no case"));
    }

    /// <summary>The default device is the best one present, and the device benchmarks run on the CPU too.</summary>
    [Test]
    public void SelftestDefaultsToTheBestDeviceAndBenchmarksTheCpu()
    {
        bool gpu = Engine.CudaDevice.TryOpen(out var cuda, out _);
        cuda?.Dispose();
        var (code, stdout, _) = Peft("selftest", "--filter", "Gelu", "--bench", "--bench-size", "small", "--device", gpu ? "cpu" : "auto");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("device: cpu").And.Contain("device benchmarks on the CPU").And.Contain("| gelu | 5440 |").And.Contain("| gemm | 34×160×40 |"));
    }

    /// <summary>peft bench times one kernel at the shape asked, on the device asked.</summary>
    [Test]
    public void BenchTimesOneKernelAtAnyShape()
    {
        var (code, stdout, _) = Peft("bench", "--op", "layernorm", "--shape", "100x48", "--device", "cpu", "--repeats", "3");
        Assert.That(code, Is.Zero);
        var row = stdout.Split('\n').Single(l => l.StartsWith("| layernorm |"));
        var cells = row.Split('|', StringSplitOptions.TrimEntries);
        Assert.That(cells[2], Is.EqualTo("100×48"));
        Assert.That(double.Parse(cells[3], System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThan(0), "ms");
        Assert.That(double.Parse(cells[4], System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThan(0), "GB/s");
        (code, stdout, _) = Peft("bench", "--op", "gemm", "--shape", "64x32x16", "--device", "cpu");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("| gemm | 64×32×16 |"));
        (code, stdout, _) = Peft("bench", "--op", "gemm", "--shape", "64x32x16", "--device", "cpu", "--precision", "fp32", "bf16");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("| gemm | 64×32×16 |").And.Contain("| gemm BF16 | 64×32×16 |"));
        Assert.That(Peft("bench", "--op", "gemm", "--shape", "64x32x16", "--precision", "fp8").Err, Does.Contain("fp8"));
        (code, stdout, _) = Peft("bench", "--op", "gemm-packed", "--shape", "64x32x16", "--device", "cpu", "--precision", "bf16", "fp16");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("| gemm-packed BF16 | 64×32×16 |").And.Contain("| gemm-packed FP16 | 64×32×16 |"));
        Assert.That(Peft("bench", "--op", "gemm-packed", "--shape", "64x32x16", "--device", "cpu").Err,
            Is.EqualTo("error: gemm-packed reads operands packed in 16 bits: time it under bf16 or fp16 (--precision), not FP32\n"));
        Assert.That(Peft("bench", "--list").Out, Does.Match(@"depthwise-conv +NxHxWxC").And.Match(@"linear-scale-shift-unfused +MxNxK"));
        Assert.That(Peft("bench", "--op", "gemm", "--shape", "64x32").Err, Is.EqualTo("error: --shape 64x32: gemm takes MxNxK\n"));
        Assert.That(Peft("bench", "--op", "patchify", "--shape", "1x5x4x3").Err, Is.EqualTo("error: --shape 1x5x4x3: patchify cuts 2×2 patches, so H and W must be even\n"));
        Assert.That(Peft("bench", "--op", "nope", "--shape", "4").Err, Does.StartWith("error: --op: unknown op 'nope'"));
    }

    /// <summary>peft bench --train-step on a terminal (util-linux's <c>script</c> gives it one): each row's steps are
    /// counted on a status line, which the row then replaces.</summary>
    [Test]
    public void BenchShowsEachRowsStepsOnATerminal()
    {
        string model = Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", "..", "models", "synthetic-vit", "config.json");
        string command = string.Join(' ', new[] { "dotnet", Path.Combine(TestContext.CurrentContext.TestDirectory, "peft.dll"), "bench", "--train-step",
            "--model", model, "--batch", "2", "--methods", "linear", "--repeats", "2", "--device", "cpu" }.Select(a => $"'{a}'"));
        var info = new ProcessStartInfo("script") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-qec", command, "/dev/null" }) info.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(info)!; }
        catch (System.ComponentModel.Win32Exception) { Assert.Ignore("util-linux's script not found (it gives the command a terminal)"); return; }
        using (p)
        {
            string screen = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.That(p.ExitCode, Is.Zero, screen);
            Assert.That(screen, Does.Contain("linear fp32 batch 2: 0/3 steps (0%)").And.Contain("linear fp32 batch 2: 3/3 steps (100%)"));
            Assert.That(screen, Does.Contain("\r\u001b[K| linear | fp32 | 2 |"), "the row takes the erased status line's place");
        }
    }

    /// <summary>peft bench --train-step: a row per method × precision × batch with positive times and memory, the same
    /// rows as JSON lines; bad values are refused before any work.</summary>
    [Test]
    public void BenchTimesTrainingStepsPerMethodPrecisionAndBatch()
    {
        string json = Path.Combine(Path.GetTempPath(), $"peft-steps-{Guid.NewGuid():N}.json");
        try
        {
            string model = Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", "..", "models", "synthetic-vit", "config.json");
            var (code, stdout, stderr) = Peft("bench", "--train-step", "--model", model, "--batch", "2", "3", "--methods", "linear", "ssf",
                "--precision", "fp32", "bf16", "--repeats", "1", "--device", "cpu", "--json", json);
            Assert.That(code, Is.Zero);
            Assert.That(stderr, Is.Empty, "the steps' progress is shown on a terminal only: a log gets the table alone");
            var rows = stdout.Split('\n').Where(l => l.StartsWith("| linear |") || l.StartsWith("| ssf |")).ToList();
            Assert.That(rows, Has.Count.EqualTo(2 * 2 * 2));
            Assert.That(rows, Has.Some.StartsWith("| ssf | bf16 | 3 |"));
            foreach (var cells in rows.Select(r => r.Split('|', StringSplitOptions.TrimEntries)))
            {
                Assert.That(double.Parse(cells[4], System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThan(0), "ms per step");
                Assert.That(double.Parse(cells[6], System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThan(0), "peak MiB");
                double kept = double.Parse(cells[8], System.Globalization.CultureInfo.InvariantCulture);
                Assert.That(kept, cells[1] == "ssf" ? Is.GreaterThan(0) : Is.GreaterThanOrEqualTo(0), "activations kept MiB (linear probing keeps a few KiB)");
                Assert.That(cells[9], Is.EqualTo("–"), "the CPU has no device memory of its own to count");
            }
            var lines = File.ReadAllLines(json);
            Assert.That(lines, Has.Length.EqualTo(8));
            using var doc = System.Text.Json.JsonDocument.Parse(lines[^1]);
            Assert.That(doc.RootElement.GetProperty("method").GetString(), Is.EqualTo("ssf"));
            Assert.That(doc.RootElement.GetProperty("images_per_second").GetDouble(), Is.GreaterThan(0));
        }
        finally { File.Delete(json); }
        Assert.That(Peft("bench", "--train-step", "--precision", "fp8").Err, Does.Contain("fp8"));
        Assert.That(Peft("bench", "--train-step", "--methods", "nope", "--device", "cpu").Err, Does.StartWith("error: --methods: unknown method 'nope'"));
    }

    /// <summary>A batch too large for the device (the emulated one given 8 MiB, PEFT_EMULATED_CUDA_MEMORY) gets a row that
    /// says so, with the sizes below it and a JSON row marked out_of_memory; the rows after it still run, and the exit code
    /// says that not every row ran. A size that is not one is refused, naming the variable.</summary>
    [Test]
    public void BenchSaysWhichRowsRanOutOfDeviceMemoryAndRunsTheRest()
    {
        Backends.Get("emulated-cuda");
        string json = Path.Combine(_dir, "steps.json");
        string model = Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", "..", "models", "synthetic-vit", "config.json");
        var (code, stdout, stderr) = Peft(new Dictionary<string, string?> { ["PEFT_EMULATED_CUDA_MEMORY"] = "8M" }, "bench", "--train-step",
            "--model", model, "--batch", "1", "16", "2", "--methods", "full", "--repeats", "1", "--device", "emulated-cuda", "--json", json);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Does.Contain("8 MiB of device memory (PEFT_EMULATED_CUDA_MEMORY)"));
        var lines = stdout.Split('\n');
        int row = Array.FindIndex(lines, l => l.StartsWith("| full | fp32 | 16 |"));
        Assert.That(lines[row], Is.EqualTo("| full | fp32 | 16 | out of memory | | | | | |"));
        Assert.That(lines[row + 1], Does.StartWith("  out of memory on emulated-cuda: ").And.Contain(" free of 8.00 MiB"));
        Assert.That(lines, Has.Some.StartsWith("| full | fp32 | 1 | ").And.Some.StartsWith("| full | fp32 | 2 | "));
        Assert.That(stderr.Trim(), Is.EqualTo("error: 1 of 3 rows ran out of device memory (each says so, with the sizes below it)"));
        var rows = File.ReadAllLines(json).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        Assert.That(rows.Select(r => r.GetProperty("batch").GetInt32()), Is.EqualTo(new[] { 1, 16, 2 }));
        Assert.That(rows[1].GetProperty("out_of_memory").GetBoolean(), Is.True);
        Assert.That(rows[2].GetProperty("images_per_second").GetDouble(), Is.GreaterThan(0));
        // The device's own peak (cache and scratch included) is above the tensors' and within the 8 MiB it has.
        double tensors = rows[2].GetProperty("peak_memory_mib").GetDouble(), held = rows[2].GetProperty("device_memory_mib").GetDouble();
        Assert.That(held, Is.GreaterThan(tensors).And.LessThanOrEqualTo(8));
        var cells = lines.First(l => l.StartsWith("| full | fp32 | 2 | ")).Split('|', StringSplitOptions.TrimEntries);
        Assert.That(double.Parse(cells[9], System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(held).Within(0.5), "the device MiB column");

        (code, _, stderr) = Peft(new Dictionary<string, string?> { ["PEFT_EMULATED_CUDA_MEMORY"] = "12X" }, "bench", "--train-step",
            "--model", model, "--batch", "1", "--device", "emulated-cuda");
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("PEFT_EMULATED_CUDA_MEMORY='12X' is not a memory size"));
    }

    /// <summary>A row whose step met a kernel that lost the GPU context says so and ends the run with the rows it could
    /// not run named (no later row can use the device in this process); a step whose loss diverged (a kernel that
    /// computes nothing) says so and the rows after it run. Both are rehearsed on the emulated device.</summary>
    [Test]
    public void BenchSaysWhichRowLostTheGpuContextOrDivergedAndWhatDidNotRun()
    {
        Backends.Get("emulated-cuda");
        string json = Path.Combine(_dir, "steps.json");
        string model = Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", "..", "models", "synthetic-vit", "config.json");
        string[] Args(params string[] batches) => ["bench", "--train-step", "--model", model, "--batch", .. batches, "--methods", "full", "gps", "ssf",
            "--repeats", "1", "--device", "emulated-cuda", "--json", json];
        List<System.Text.Json.JsonElement> Rows() => [.. File.ReadAllLines(json).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)];

        var (code, stdout, stderr) = Peft(new Dictionary<string, string?> { ["PEFT_EMULATED_CUDA_FAULT"] = "sparse_weight_grad" }, Args("1", "2"));
        Assert.That(code, Is.EqualTo(1));
        var lines = stdout.Split('\n');
        int row = Array.FindIndex(lines, l => l.StartsWith("| gps | fp32 | 1 |"));
        Assert.That(lines[row], Is.EqualTo("| gps | fp32 | 1 | failed | | | | | |"));
        Assert.That(lines[row + 1], Does.Contain("failed with 700 (CUDA_ERROR_ILLEGAL_ADDRESS").And.Contain("the GPU context is lost"));
        Assert.That(lines, Has.Some.Matches(@"^\| full \| fp32 \| 1 \| \d"));
        Assert.That(lines.Count(l => l.StartsWith('|')), Is.EqualTo(4), "the header, its rule and the two rows that ran");
        Assert.That(stderr, Is.EqualTo("error: gps fp32 batch 1 lost the GPU context; 4 row(s) not run, which a new process can run: " +
            "ssf fp32 batch 1, full fp32 batch 2, gps fp32 batch 2, ssf fp32 batch 2\ncontext lost in method gps\n"));
        var rows = Rows();
        Assert.That(rows.Select(r => r.GetProperty("method").GetString()), Is.EqualTo(new[] { "full", "gps" }));
        Assert.That((rows[1].GetProperty("failed").GetBoolean(), rows[1].GetProperty("context_lost").GetBoolean()), Is.EqualTo((true, true)));

        // A kernel that never runs leaves NaN where its output should be: SSF's loss diverges, and the next rows run.
        (code, stdout, stderr) = Peft(new Dictionary<string, string?> { ["PEFT_EMULATED_CUDA_FAULT"] = "scale_shift_forward:skip" }, Args("1", "2"));
        Assert.That(code, Is.EqualTo(1));
        lines = stdout.Split('\n');
        row = Array.FindIndex(lines, l => l.StartsWith("| ssf | fp32 | 1 |"));
        Assert.That(lines[row], Is.EqualTo("| ssf | fp32 | 1 | diverged | | | | | |"));
        Assert.That(lines[row + 1], Does.EndWith("/ssf: the loss is NaN at step 1"));
        Assert.That(lines[row + 2], Does.Match(@"^\| full \| fp32 \| 2 \| \d"));
        Assert.That(stderr.Trim(), Is.EqualTo("error: 2 of 6 rows failed (each says so, with the error below it)"));
        rows = Rows();
        Assert.That(rows.Select(r => r.GetProperty("method").GetString()), Is.EqualTo(new[] { "full", "gps", "ssf", "full", "gps", "ssf" }));
        Assert.That((rows[2].GetProperty("failed").GetBoolean(), rows[2].GetProperty("context_lost").GetBoolean()), Is.EqualTo((true, false)));
    }

    /// <summary>A case whose kernel faults loses the GPU context: selftest says which case, lists the cases it could
    /// not run and runs nothing more; --skip runs the rest in a new process. A kernel that computes nothing fails its
    /// case alone. An unknown name for --skip is refused with the list of cases.</summary>
    [Test]
    public void SelftestStopsWhereAKernelLostTheGpuContextAndSkipRunsTheRest()
    {
        Backends.Get("emulated-cuda");
        var fault = new Dictionary<string, string?> { ["PEFT_EMULATED_CUDA_FAULT"] = "gelu_forward" };
        var (code, stdout, _) = Peft(fault, "selftest", "--device", "emulated-cuda", "--filter", "Gelu", "--bench", "--bench-size", "small");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Does.Match(@"\n  Gelu +FAIL +\d+  cuMemcpyDtoHAsync_v2 failed with 700 .*the GPU context is lost"));
        Assert.That(stdout, Does.Contain("2 passed, 1 failed, 1 not run\n" +
            "The GPU context is lost: CUDA work in this process cannot continue, so the case(s) after Gelu did not run: BiasGeluBackward.\n" +
            "context lost in case Gelu: rerun with --skip Gelu to run the rest in a new process\n" +
            "not run (the GPU context is lost): the device benchmarks\n"));
        Assert.That(stdout, Does.Not.Contain("device benchmarks on"));

        (code, stdout, _) = Peft(fault, "selftest", "--device", "emulated-cuda", "--filter", "Gelu", "--skip", "Gelu");
        Assert.That(code, Is.Zero, stdout);
        Assert.That(stdout, Does.Contain("left out (--skip): Gelu\n").And.Contain("3 passed, 0 failed").And.Not.Contain("  Gelu "));
        // The benchmarks run the kernel too: the error names the benchmark that met the fault.
        string stderr;
        (code, _, stderr) = Peft(fault, "selftest", "--device", "emulated-cuda", "--filter", "Gelu", "--skip", "Gelu", "--bench", "--bench-size", "small");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.StartWith("error: benchmark gelu at 5440: cuLaunchKernel (gelu_forward) failed with 700"));

        (code, stdout, _) = Peft(new Dictionary<string, string?> { ["PEFT_EMULATED_CUDA_FAULT"] = "gelu_forward:skip" }, "selftest", "--device", "emulated-cuda", "--filter", "Gelu");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Does.Match(@"\n  Gelu +FAIL +\d+  Gelu forward: element 0 is NaN").And.Contain("3 passed, 1 failed\n").And.Not.Contain("context lost"));

        (code, _, stderr) = Peft("selftest", "--device", "emulated-cuda", "--skip", "Gelu,Nope");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.StartWith("error: --skip: no case named 'Nope'; cases: Linear, "));
    }

    /// <summary>--profile: one more step with every kernel timed where it runs, every kernel listed with shares that add
    /// up to the whole, and on a CUDA device one more with the device's own work (each kernel launch and product shape);
    /// --attention picks the path, which the profile shows (the unfused path's batched products and softmax, or the
    /// fused kernels).</summary>
    [Test]
    public void BenchProfilesAStepAndPicksTheAttentionPath([Values("cpu", "emulated-cuda")] string device)
    {
        if (device != "cpu") Backends.Get(device);
        string model = Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", "..", "models", "synthetic-vit", "config.json");
        foreach (var (path, used, unused) in new[] { ("fused", "FusedAttentionForward", "AttentionSoftmaxForward"), ("unfused", "AttentionSoftmaxForward", "FusedAttentionForward") })
        {
            var (code, stdout, err) = Peft("bench", "--train-step", "--profile", "--attention", path, "--model", model, "--batch", "2",
                "--methods", "ssf", "--repeats", "1", "--device", device);
            Assert.That(code, Is.Zero, err);
            Assert.That(stdout, Does.Contain($"attention {path}").And.Contain("profile of one ssf, fp32, batch 2 step"));
            var table = stdout[stdout.IndexOf("| kernel | calls |", StringComparison.Ordinal)..].Split('\n').Skip(2)
                .TakeWhile(l => l.StartsWith('|')).Select(l => l.Split('|', StringSplitOptions.TrimEntries)).ToList();
            var kernels = table.Select(c => c[1]).ToList();
            Assert.That(kernels, Does.Contain(used).And.Contain("LayerNormForward").And.Not.Contain(unused), path);
            double shares = table.Sum(c => double.Parse(c[4].TrimEnd('%', ' '), System.Globalization.CultureInfo.InvariantCulture));
            // Each share is printed to 0.1 %, so the printed ones may sum to 100 ± 0.05 per row (26 rows here).
            Assert.That(shares, Is.EqualTo(100).Within(0.05 * table.Count + 1e-9), "the shares cover every kernel");
            Assert.That(table.All(c => long.Parse(c[2]) > 0 && double.Parse(c[3], System.Globalization.CultureInfo.InvariantCulture) >= 0));
            // On a CUDA device, then the device's own work: each kernel launched and each product shape, shares adding up.
            if (device == "cpu")
            {
                Assert.That(stdout, Does.Not.Contain("device work of one"));
                continue;
            }
            Assert.That(stdout, Does.Contain("device work of one ssf, fp32, batch 2 step: "));
            var work = stdout[stdout.IndexOf("| work | calls |", StringComparison.Ordinal)..].Split('\n').Skip(2)
                .TakeWhile(l => l.StartsWith('|')).Select(l => l.Split('|', StringSplitOptions.TrimEntries)).ToList();
            var names = work.Select(c => c[1]).ToList();
            Assert.That(names, Does.Contain(path == "fused" ? "fused_attention_forward" : "softmax_forward").And.Contain("layernorm_forward_768")
                .And.Contain("CPU GEMM fp32 NT 34×192×64"), path); // qkv: 2 images of 17 tokens, 64 wide
            Assert.That(work.Where(c => c[1].StartsWith("CPU GEMM", StringComparison.Ordinal)).All(c => c[5].Length > 0), "products give TFLOP/s");
            // The head's bias, which cuBLASLt adds inside its product on a GPU, is the emulator's own launch here, and said so.
            Assert.That(names, Does.Contain("add_bias (emulator only)"), path);
            Assert.That(stdout, Does.Contain(" of them the emulator's stand-ins for work a GPU does inside its libraries"), path);
            double workShares = work.Sum(c => double.Parse(c[4].TrimEnd('%', ' '), System.Globalization.CultureInfo.InvariantCulture));
            Assert.That(workShares, Is.EqualTo(100).Within(0.05 * work.Count + 1e-9), "the shares cover the device's work");
        }
        Assert.That(Peft("bench", "--train-step", "--profile", "--cuda-graph", "--device", device).Err, Does.Contain("--profile: times each kernel on its own"));
        Assert.That(Peft("bench", "--op", "gelu", "--shape", "8", "--profile").Err, Does.Contain("--profile: goes with --train-step"));
        Assert.That(Peft("bench", "--train-step", "--attention", "flash", "--device", device).Err, Does.Contain("--attention must be auto, fused or unfused (got 'flash')"));
        Assert.That(Ops.DefaultAttentionPath, Is.EqualTo(AttentionPath.Auto), "the command leaves the process's default as it found it");
    }

    /// <summary>--cuda-graph: training steps replayed from CUDA graphs on the emulated device, rows marked as such in
    /// the JSON; on the CPU the bench, the synthetic suite and the VTAB commands refuse it with the reason.</summary>
    [Test]
    public void CudaGraphStepsOnACudaDeviceAndARefusalElsewhere()
    {
        string model = Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", "..", "models", "synthetic-vit", "config.json");
        foreach (var args in new[]
                 {
                     new[] { "bench", "--train-step", "--cuda-graph", "--model", model, "--device", "cpu" },
                     ["synthetic", "--cuda-graph", "--output", Path.GetTempPath(), "--model-dir", Path.GetDirectoryName(model)!, "--device", "cpu"],
                     ["vtab", "suite", "--tasks", "dtd", "--methods", "ssf", "--data", Path.GetTempPath(), "--cuda-graph", "--device", "cpu",
                         "--output", Path.Combine(Path.GetTempPath(), $"peft-graph-{Guid.NewGuid():N}"), "--weights", model],
                 })
        {
            var (code, _, err) = Peft(args);
            Assert.That(code, Is.Not.Zero, string.Join(" ", args));
            Assert.That(err, Does.Contain("--cuda-graph: needs a CUDA device (--device cuda or emulated-cuda), not cpu"), string.Join(" ", args));
        }
        Assert.That(Peft("bench", "--op", "gelu", "--shape", "8", "--cuda-graph").Err, Does.Contain("--cuda-graph: goes with --train-step"));

        Backends.Get("emulated-cuda");
        string json = Path.Combine(Path.GetTempPath(), $"peft-graph-steps-{Guid.NewGuid():N}.json");
        try
        {
            var (code, stdout, _) = Peft("bench", "--train-step", "--cuda-graph", "--model", model, "--batch", "2", "--methods", "ssf",
                "--repeats", "2", "--device", "emulated-cuda", "--json", json);
            Assert.That(code, Is.Zero, stdout);
            Assert.That(stdout, Does.Contain("replayed from a CUDA graph").And.Contain("| ssf | fp32 | 2 |"));
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllLines(json).Single());
            Assert.That(doc.RootElement.GetProperty("cuda_graph").GetBoolean(), Is.True);
            Assert.That(doc.RootElement.GetProperty("graph_mib").GetDouble(), Is.GreaterThan(0), "the graph keeps its buffers");
        }
        finally { File.Delete(json); }
    }

    /// <summary>The GPU kit on a machine without a GPU: exit 3 with the reason, the machine facts kept in --out; the
    /// kit here is this build's peft (run through dotnet) beside the kit's script and peer.</summary>
    [Test]
    public void GpuKitOnAMachineWithoutAGpuExits3WithTheReason()
    {
        if (Engine.CudaDevice.TryOpen(out var gpu, out _))
        {
            gpu!.Dispose();
            Assert.Ignore("a GPU is present: the kit would run its full check");
        }
        RunKit($"exec dotnet '{Path.Combine(TestContext.CurrentContext.TestDirectory, "peft.dll")}' \"$@\"\n", (kit, code, stdout) =>
        {
            Assert.That(code, Is.EqualTo(3), stdout);
            Assert.That(stdout, Does.Contain("no GPU").And.Contain("nothing was checked"));
            Assert.That(File.ReadAllText(Path.Combine(kit, "out", "machine.txt")), Does.Contain("== machine"));
            Assert.That(File.Exists(Path.Combine(kit, "out", "ours.json")), Is.False, "nothing ran after the selftest said no GPU");
        });
    }

    /// <summary>When a path's case fails on the GPU, the kit's steps run without that path, so one faulting kernel
    /// cannot take every step's figures with it; each section's header gives the seconds since the start. The kit's
    /// peft here is a test double that prints a selftest with one failing case and records each bench call.</summary>
    [TestCase("FusedAttentionHeadDim64", "--attention unfused", "the other attention path: skipped")]
    [TestCase("LinearInSixteenBits", "--linear-epilogues off", "the steps without epilogues: skipped")]
    public void GpuKitRunsTheStepsWithoutAPathWhoseCaseFailed(string failing, string flag, string skipped)
    {
        var cases = new[] { "LinearInSixteenBits", "FusedAttentionHeadDim64", "LayerNorm" }
            .Select(c => $"'  {c,-34} {(c == failing ? "FAIL" : "ok"),-6} {12,8}{(c == failing ? "  an illegal memory access" : "")}'");
        string calls = Path.Combine(Path.GetTempPath(), $"peft-kit-calls-{Guid.NewGuid():N}.txt");
        try
        {
            RunKit($"if [ \"$1\" = selftest ]; then printf '%s\\n' 'op conformance, 3 case(s):' {string.Join(" ", cases)} '2 passed, 1 failed'; exit 1; fi\n" +
                $"echo \"$*\" >> '{calls}'\n", (_, code, stdout) =>
            {
                Assert.That(code, Is.EqualTo(1), stdout);
                Assert.That(stdout, Does.Contain($"{failing} failed on this GPU").And.Contain(skipped).And.Contain("] result: FAILED"));
                Assert.That(System.Text.RegularExpressions.Regex.IsMatch(stdout, @"^== \[\d+s\] training steps: ", System.Text.RegularExpressions.RegexOptions.Multiline), stdout);
                var peftCalls = File.ReadAllLines(calls);
                var benchCalls = peftCalls.Where(c => c.StartsWith("bench ", StringComparison.Ordinal)).ToArray();
                Assert.That(benchCalls, Has.Length.EqualTo(4), "the steps, the graphed steps, one comparison and the profile");
                Assert.That(benchCalls, Has.All.StartWith("bench --train-step").And.All.Contain(flag));
                Assert.That(peftCalls.Except(benchCalls), Is.EqualTo(new[] { "kernels --arch sm_90" }), "last, ptxas's report (no nvidia-smi here: sm_90)");
                Assert.That(peftCalls[^1], Is.EqualTo("kernels --arch sm_90"));
            });
        }
        finally { File.Delete(calls); }
    }

    /// <summary>A kernel that faults takes only its own case and method with it: the kit runs selftest again without the
    /// case that lost the GPU context, the steps of the other methods again in a new process, and leaves the methods
    /// that lost it out of its later runs. Rehearsed with the real peft on the emulated device, where gelu_forward
    /// faults (the kit's peft here maps the GPU to the emulated device, ViT-B/16 to the synthetic ViT at batch 2, and
    /// the op cases to the GELU ones).</summary>
    [Test]
    public void GpuKitRunsAgainWithoutWhatLostTheGpuContext()
    {
        Backends.Get("emulated-cuda");
        string peft = Path.Combine(TestContext.CurrentContext.TestDirectory, "peft.dll");
        string model = Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", "..", "models", "synthetic-vit", "config.json"));
        RunKit("args=$(echo \"$@\" | sed 's/--device cuda/--device emulated-cuda/; s#vit_base_patch16_224#" + model + "#; s/--batch 32/--batch 2/; s/--repeats [0-9]*/--repeats 1/')\n" +
               "[ \"$1\" = selftest ] && args=\"$args --filter Gelu\"\n" +
               $"exec dotnet '{peft}' $args\n", (kit, code, stdout) =>
        {
            Assert.That(code, Is.EqualTo(1), stdout);
            Assert.That(stdout, Does.Contain("] Gelu lost the GPU context: selftest again in a new process without it (--skip Gelu)")
                .And.Contain("== selftest: FAILED (exit 1; these cases lost the GPU context: Gelu)")
                .And.Contain("] full lost the GPU context in the training steps: the other methods again in a new process (--methods ssf gps)")
                .And.Contain("] gps lost the GPU context in the training steps: the other methods again in a new process (--methods ssf)")
                .And.Contain("== CUDA graph steps: left out, as they lost the GPU context before: full gps")
                .And.Contain("== profile: left out, as they lost the GPU context before: full gps")
                .And.Contain("] result: FAILED"));
            string selftest = File.ReadAllText(Path.Combine(kit, "out", "selftest.log"));
            Assert.That(selftest, Does.Contain("context lost in case Gelu").And.Contain("left out (--skip): Gelu").And.Contain("3 passed, 0 failed"));
            var rows = File.ReadAllLines(Path.Combine(kit, "out", "ours.json")).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
            Assert.That(rows.Select(r => (r.GetProperty("method").GetString(), r.TryGetProperty("context_lost", out var lost) && lost.GetBoolean())),
                Is.EqualTo(new[] { ("full", true), ("ssf", false), ("gps", true), ("ssf", false) }), "each attempt's rows, kept in order");
            var graphed = File.ReadAllLines(Path.Combine(kit, "out", "ours-graph.json"));
            Assert.That(graphed, Has.Length.EqualTo(1).And.All.Contain("\"method\":\"ssf\"").And.All.Contain("\"cuda_graph\":true"));
        }, new Dictionary<string, string?> { ["PEFT_EMULATED_CUDA_FAULT"] = "gelu_forward" }, "--methods", "full ssf gps", "--precision", "bf16");
    }

    /// <summary>Runs <c>gpu-check.sh small --out KIT/out</c> (then <paramref name="kitArgs"/>) from a fresh kit folder
    /// holding the script, the peer and a <c>peft</c> made of <paramref name="peftBody"/> (sh), with
    /// <paramref name="environment"/>, then <paramref name="check"/> with the folder, exit code and output; the folder
    /// is removed after.</summary>
    static void RunKit(string peftBody, Action<string, int, string> check, Dictionary<string, string?>? environment = null, params string[] kitArgs)
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("the GPU kit is a Linux bash script");
        string repo = Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", ".."));
        string kit = Path.Combine(Path.GetTempPath(), $"peft-kit-{Guid.NewGuid():N}");
        Directory.CreateDirectory(kit);
        try
        {
            File.Copy(Path.Combine(repo, "tools", "gpu-check.sh"), Path.Combine(kit, "gpu-check.sh"));
            File.Copy(Path.Combine(repo, "bench", "peers", "timm_step.py"), Path.Combine(kit, "timm_step.py"));
            string launcher = Path.Combine(kit, "peft");
            File.WriteAllText(launcher, "#!/bin/sh\n" + peftBody);
            if (OperatingSystem.IsLinux()) File.SetUnixFileMode(launcher, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
            string[] args = [Path.Combine(kit, "gpu-check.sh"), "small", "--out", Path.Combine(kit, "out"), .. kitArgs];
            foreach (var a in args) info.ArgumentList.Add(a);
            foreach (var (name, value) in environment ?? []) info.Environment[name] = value;
            using var p = Process.Start(info)!;
            string stdout = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            check(kit, p.ExitCode, stdout);
        }
        finally { Directory.Delete(kit, recursive: true); }
    }

    [Test]
    public void SelftestOnAMissingGpuSaysWhyWithExitCode3()
    {
        if (Engine.CudaDevice.TryOpen(out var gpu, out _))
        {
            gpu!.Dispose();
            Assert.Ignore("a GPU is present");
        }
        foreach (string name in new[] { "cuda", "cuda:1" })
        {
            var (code, stdout, stderr) = Peft("selftest", "--device", name);
            Assert.That(code, Is.EqualTo(3), name);
            Assert.That(stdout, Does.StartWith("no GPU: "), name);
            Assert.That(stderr, Is.Empty, name);
        }
    }

    /// <summary>A GPU named by anything but its index is refused by every command, naming the device.</summary>
    [Test]
    public void AGpuIsNamedByItsIndex()
    {
        foreach (var args in new[] { new[] { "selftest" }, ["bench", "--op", "gelu", "--shape", "8"] })
        {
            var (code, _, stderr) = Peft([.. args, "--device", "cuda:first"]);
            Assert.That(code, Is.EqualTo(1), args[0]);
            Assert.That(stderr, Is.EqualTo("error: device 'cuda:first': cuda:N takes a GPU's index, a whole number from 0\n"), args[0]);
        }
    }

    [TestCase("demo"), TestCase("infer"), TestCase("inspect"), TestCase("selftest"), TestCase("bench"), TestCase("merge"), TestCase("select"), TestCase("vtab"), TestCase("synthetic"), TestCase("export"), TestCase("kernels")]
    public void EveryCommandHasHelp(string command)
    {
        var (code, stdout, _) = Peft(command, "--help");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("Usage:").And.Contain(command));
    }

    /// <summary>A folder of 3 class subfolders with 4 PNG images each, and the images as the library sees them.</summary>
    string ClassFolder()
    {
        string root = Path.Combine(_dir, "data");
        for (int c = 0; c < 3; c++)
        {
            string dir = Path.Combine(root, $"class{c}");
            Directory.CreateDirectory(dir);
            for (int i = 0; i < 4; i++)
            {
                var rgb = Enumerable.Range(0, 20 * 24 * 3).Select(j => (byte)((j * (3 + c) + i * 40 + (j / 60) * c * 17) % 256)).ToArray();
                File.WriteAllBytes(Path.Combine(dir, $"{i}.png"), PngTests.EncodeRgb(24, 20, rgb));
            }
        }
        return root;
    }

    [Test]
    public void SelectSctMatchesTheLibraryAndGpsIsReproducible()
    {
        string data = ClassFolder(), sct = Path.Combine(_dir, "sct.safetensors");
        var (code, stdout, _) = Peft("select", "--method", "sct", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"),
            "--data", data, "--output", sct, "--k", "8", "--batch-size", "6", "--device", "cpu");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("2 channel sets (2 of 8)"));
        var config = VitConfig.Resolve(Fixture("config.json")) with { num_classes = 3 };
        using var vit = new VisionTransformer(Device.Cpu, config);
        vit.Load(Fixture("weights.safetensors"), LoadMode.NewHead);
        var files = Directory.GetDirectories(data).Order().SelectMany((d, c) => Directory.GetFiles(d).Select(f => (f, c))).ToList();
        var x = new float[files.Count * 3 * 16 * 16];
        for (int i = 0; i < files.Count; i++) Normalization.ImageNet.ResizeInto(Png.Read(files[i].f), 16, x.AsSpan(i * 768, 768));
        using var images = Tensor.FromArray(Device.Cpu, x, files.Count, 3, 16, 16);
        var want = Models.Peft.SctSelection.Compute(vit, [(images, files.Select(f => f.c).ToArray())], 8);
        Assert.That(Models.Peft.SctSelection.Read(sct), Is.EqualTo(want));

        string[] Gps(string output, params string[] extra)
        {
            var (c, _, _) = Peft(["select", "--method", "gps", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"),
                "--data", data, "--output", output, "--k", "2", "--batch-size", "4", .. extra]);
            Assert.That(c, Is.Zero);
            return [.. Models.Peft.GpsSelection.Read(output).Select(kv => $"{kv.Key} [{kv.Value.Rows}, {kv.Value.K}] {string.Join(",", kv.Value.Columns)}")];
        }
        var first = Gps(Path.Combine(_dir, "gps1.safetensors"));
        Assert.That(first, Has.Some.StartsWith("blocks.0.attn.qkv.weight [96, 2]").And.Some.StartsWith("patch_embed.proj.weight [32, 2]"));
        Assert.That(Gps(Path.Combine(_dir, "gps2.safetensors")), Is.EqualTo(first), "same seed, same selection");
        Assert.That(Gps(Path.Combine(_dir, "gps3.safetensors"), "--no-augment"), Is.Not.EqualTo(first), "plain views select differently");
    }

    [Test]
    public void SelectRefusesBadData()
    {
        string task = Path.Combine(_dir, "task");
        Directory.CreateDirectory(task);
        File.WriteAllText(Path.Combine(task, "train800val200.txt"), "images/a.png 0\n../escape.png 1\n");
        var (code, _, stderr) = Peft("select", "--method", "sct", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"),
            "--data", task, "--output", Path.Combine(_dir, "x.safetensors"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("train800val200.txt:1").And.Contain("does not exist"));
        Assert.That(File.Exists(Path.Combine(_dir, "x.safetensors")), Is.False);
    }

    [Test]
    public void MergeWritesAPlainCheckpointWithTheSameLogits()
    {
        var config = VitConfig.Resolve(Fixture("config.json"));
        string trained = Path.Combine(_dir, "ssf.safetensors"), merged = Path.Combine(_dir, "merged.safetensors");
        using var images = Tensor.FromArray(Device.Cpu, Npy.Read(Fixture("input.npy")).Data, 3, 3, 16, 16);
        float[] want;
        using (var vit = new VisionTransformer(Device.Cpu, config))
        using (var ssf = new Models.Peft.Ssf(seed: 5))
        {
            vit.Load(Fixture("weights.safetensors"));
            ssf.Apply(vit);
            ssf.SaveTrained(vit, trained);
            using var logits = vit.Forward(images);
            want = logits.ToArray();
        }
        var (code, stdout, _) = Peft("merge", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"), "--trained", trained, "--output", merged);
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("merged ssf"));
        using (var plain = new VisionTransformer(Device.Cpu, config))
        {
            plain.Load(merged);
            using var logits = plain.Forward(images);
            double scale = want.Max(Math.Abs);
            GradCheck.CheckClose("merged logits", logits.ToArray(), [.. want.Select(v => (double)v)], 1e-5 * scale, 1e-5);
        }
        string sct = Path.Combine(_dir, "sct.safetensors");
        using (var vit = new VisionTransformer(Device.Cpu, config))
        using (var method = new Models.Peft.Sct(new Dictionary<string, int[]> { ["blocks.0.attn_residual"] = [1, 2] }))
        {
            method.Apply(vit);
            method.SaveTrained(vit, sct);
        }
        var (code2, _, stderr) = Peft("merge", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"), "--trained", sct, "--output", merged);
        Assert.That(code2, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("SCT").And.Contain("residual stream"));
    }

    /// <summary>A checkpoint of another architecture: one short line saying how the two differ, then a few examples.</summary>
    [Test]
    public void AWrongArchitectureCheckpointIsSummarised()
    {
        var (code, _, stderr) = Peft("infer", "--model", "vit_tiny_patch16_224", "--weights", Fixture("weights.safetensors"), "--input", Fixture("input.npy"),
            "--output", Path.Combine(_dir, "x.npy"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("checkpoint: ViT, width 32, patch 4×4, 2 blocks, 17 tokens").And.Contain("model: ViT, width 192, patch 16×16, 12 blocks, 197 tokens")
            .And.Contain("and 26 more").And.Contain("and 115 more"));
        Assert.That(stderr.Length, Is.LessThan(1000), "a summary, not every key");
        Assert.That(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), Has.Length.EqualTo(1));
    }

    /// <summary>merge, infer and select refuse an --output that is one of their inputs (by path or through a link) or
    /// whose folder does not exist, before any work: the pretrained checkpoint is never overwritten.</summary>
    [Test]
    public void AnOutputThatIsAnInputIsRefusedBeforeAnyWork()
    {
        string weights = Path.Combine(_dir, "weights.safetensors"), trained = Path.Combine(_dir, "ssf.safetensors"), link = Path.Combine(_dir, "alias.safetensors");
        File.Copy(Fixture("weights.safetensors"), weights);
        File.CreateSymbolicLink(link, weights);
        using (var vit = new VisionTransformer(Device.Cpu, VitConfig.Resolve(Fixture("config.json"))))
        using (var ssf = new Models.Peft.Ssf(seed: 5))
        {
            ssf.Apply(vit);
            ssf.SaveTrained(vit, trained);
        }
        var before = File.ReadAllBytes(weights);
        foreach (var output in new[] { weights, link })
        {
            var (code, _, stderr) = Peft("merge", "--model", Fixture("config.json"), "--weights", weights, "--trained", trained, "--output", output);
            Assert.That((code, stderr), Is.EqualTo((1, $"error: --output {output} is the --weights input: writing it would destroy it; choose another --output\n")));
        }
        var (c2, _, e2) = Peft("merge", "--model", Fixture("config.json"), "--weights", weights, "--trained", trained, "--output", trained);
        Assert.That((c2, e2), Is.EqualTo((1, $"error: --output {trained} is the --trained input: writing it would destroy it; choose another --output\n")));
        var (c3, _, e3) = Peft("infer", "--model", Fixture("config.json"), "--weights", weights, "--input", Fixture("input.npy"), "--output", Fixture("input.npy"));
        Assert.That((c3, e3), Is.EqualTo((1, $"error: --output {Fixture("input.npy")} is the --input input: writing it would destroy it; choose another --output\n")));
        string nowhere = Path.Combine(_dir, "missing", "logits.npy");
        var (c4, stdout4, e4) = Peft("infer", "--model", Fixture("config.json"), "--weights", weights, "--input", Fixture("input.npy"), "--output", nowhere);
        Assert.That((c4, stdout4), Is.EqualTo((1, "")), "refused before the forward pass");
        Assert.That(e4, Does.Contain("the folder").And.Contain("does not exist"));
        Assert.That(File.ReadAllBytes(weights), Is.EqualTo(before), "the pretrained checkpoint is untouched");
    }

    /// <summary>infer --trained applies any method's trained file (SCT, which does not merge, included) and gives the
    /// method's logits; --top-k writes the softmax ranking with the class names of --labels.</summary>
    [Test]
    public void InferWithATrainedSctFileAndTopK()
    {
        var config = VitConfig.Resolve(Fixture("config.json"));
        string trained = Path.Combine(_dir, "sct.safetensors"), output = Path.Combine(_dir, "logits.npy"), labels = Path.Combine(_dir, "classes.txt");
        using var images = Tensor.FromArray(Device.Cpu, Npy.Read(Fixture("input.npy")).Data, 3, 3, 16, 16);
        float[] want;
        int classes;
        using (var vit = new VisionTransformer(Device.Cpu, config))
        using (var sct = new Models.Peft.Sct(new Dictionary<string, int[]> { ["blocks.0.attn_residual"] = [1, 2], ["blocks.1.attn_residual"] = [0, 3] }, seed: 3))
        {
            vit.Load(Fixture("weights.safetensors"), LoadMode.NewHead);
            sct.Apply(vit);
            foreach (var p in sct.Trainable(vit)) // move the trained part away from its initialisation
            {
                var v = p.ToArray();
                for (int i = 0; i < v.Length; i++) v[i] += 0.05f * MathF.Sin(i + 1);
                p.CopyFrom(v);
            }
            sct.SaveTrained(vit, trained);
            using var _ = Tape.NoGrad();
            using var logits = vit.Forward(images);
            want = logits.ToArray();
            classes = logits.Shape[1];
        }
        File.WriteAllLines(labels, Enumerable.Range(0, classes).Select(c => c == 1 ? "class, with a comma" : $"c{c}"));
        var (code, stdout, _) = Peft("infer", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"), "--trained", trained,
            "--input", Fixture("input.npy"), "--output", output, "--top-k", "2", "--labels", labels);
        Assert.That(code, Is.Zero);
        Assert.That(Npy.Read(output).Data, Is.EqualTo(want), "the SCT model's logits");
        var csv = File.ReadAllLines(Path.Combine(_dir, "logits.top2.csv"));
        Assert.That(csv[0], Is.EqualTo("image,class1,p1,class2,p2"));
        Assert.That(csv, Has.Length.EqualTo(4));
        for (int row = 0; row < 3; row++)
        {
            var z = want.AsSpan(row * classes, classes).ToArray();
            int best = Array.IndexOf(z, z.Max());
            double p = 1 / z.Sum(v => Math.Exp(v - z[best]));
            string name = best == 1 ? "\"class, with a comma\"" : $"c{best}";
            Assert.That(csv[row + 1], Does.StartWith($"{row},{name},{p.ToString("G6", System.Globalization.CultureInfo.InvariantCulture)},"));
        }
        Assert.That(stdout, Does.Contain("logits.top2.csv"));
    }

    /// <summary>SCT on Swin: K per stage from --stage-k, and the mistakes a user can make with it.</summary>
    [Test]
    public void SelectSctOnSwinTakesKPerStage()
    {
        string swin = VitFixtureTests.FixtureDir("swin-tiny"), data = ClassFolder(), output = Path.Combine(_dir, "sct.safetensors");
        (int, string, string) Select(params string[] extra) => Peft(["select", "--method", "sct", "--model", Path.Combine(swin, "config.json"),
            "--weights", Path.Combine(swin, "weights.safetensors"), "--data", data, "--output", output, "--k", "4", "--device", "cpu", .. extra]);
        var (code, stdout, _) = Select("--stage-k", "layers.2=6");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("3 channel sets (2 of 4, 1 of 6)"));
        var selection = Models.Peft.SctSelection.Read(output);
        Assert.That(selection.Keys.Order(), Is.EqualTo(new[] { "layers.1.blocks.0.attn_residual", "layers.1.blocks.1.attn_residual", "layers.2.blocks.0.attn_residual" }));
        Assert.That(selection["layers.2.blocks.0.attn_residual"], Has.Length.EqualTo(6));

        (code, _, var stderr) = Select("--stage-k", "layers.0=3");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("names 'layers.0', which has no SCT site"));
        (code, _, stderr) = Select("--stage-k", "layers.2");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("--stage-k: 'layers.2' is not STAGE=K"));
        (code, _, stderr) = Peft("select", "--method", "gps", "--model", Path.Combine(swin, "config.json"), "--weights", Path.Combine(swin, "weights.safetensors"),
            "--data", data, "--output", output, "--stage-k", "layers.2=6");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("GPS takes --k only"));
    }

    /// <summary>Merging SSF on Swin folds every site (the same logits from a plain Swin); on ConvNeXt the stage-output
    /// affine cannot fold, so the merge is refused naming the site.</summary>
    [TestCase("swin-tiny"), TestCase("convnext-tiny")]
    public void MergeSsfOnSwinAndConvNeXt(string fixture)
    {
        string dir = VitFixtureTests.FixtureDir(fixture), config = Path.Combine(dir, "config.json"), weights = Path.Combine(dir, "weights.safetensors");
        string trained = Path.Combine(_dir, "ssf.safetensors"), merged = Path.Combine(_dir, "merged.safetensors");
        var input = Npy.Read(Path.Combine(dir, "input.npy"));
        using var images = Tensor.FromArray(Device.Cpu, input.Data, input.Shape);
        float[] want;
        using (var model = Models.ImageModels.Create(Device.Cpu, config))
        using (var ssf = new Models.Peft.Ssf(seed: 5))
        {
            model.Load(weights);
            ssf.Apply(model);
            foreach (var p in ssf.AddedParameters) p.CopyFrom([.. p.ToArray().Select((v, i) => v + 0.2f * MathF.Cos(i + p.Count))]);
            ssf.SaveTrained(model, trained);
            using var logits = model.Forward(images);
            want = logits.ToArray();
        }
        var (code, _, stderr) = Peft("merge", "--model", config, "--weights", weights, "--trained", trained, "--output", merged);
        if (fixture == "convnext-tiny")
        {
            Assert.That(code, Is.EqualTo(1));
            Assert.That(stderr, Does.Contain("SSF on stages.1 scales a residual sum").And.Contain("plain convnext"));
            Assert.That(File.Exists(merged), Is.False);
            return;
        }
        Assert.That(code, Is.Zero);
        using var plain = Models.ImageModels.Create(Device.Cpu, config);
        plain.Load(merged);
        using var got = plain.Forward(images);
        GradCheck.CheckClose($"{fixture} merged logits", got.ToArray(), [.. want.Select(v => (double)v)], 1e-5 * want.Max(Math.Abs), 1e-5);
    }

    /// <summary>peft kernels compiles a family for an architecture with no GPU: ptxas's report on each of its kernels and
    /// the cubin written with --out; PTX for compute_XY; an unknown family or architecture is refused by name. Skipped
    /// without NVRTC.</summary>
    [Test]
    public void KernelsReportsEachKernelAndWritesItsImage()
    {
        if (!Engine.Kernels.Cuda.Nvrtc.IsAvailable(out var reason)) Assert.Ignore($"NVRTC unavailable: {reason}");
        string dir = Path.Combine(_dir, "kernels");
        var (code, stdout, stderr) = Peft("kernels", "--arch", "sm_80", "--family", "reductions", "--out", dir);
        Assert.That(code, Is.Zero, stderr);
        var kernels = Engine.Kernels.Cuda.KernelSources.KernelNames("reductions.cu").ToList();
        Assert.That(kernels, Is.Not.Empty);
        foreach (var kernel in kernels)
            Assert.That(stdout, Does.Match($@"\| reductions \| {kernel} \| \d+ \| \d+ \| 0 \| 0 \| \d+ \|"), kernel);
        Assert.That(stdout, Does.Contain("no kernel spills registers"));
        Assert.That(File.ReadAllBytes(Path.Combine(dir, "reductions-sm_80.cubin"))[..4], Is.EqualTo(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F' }));

        (code, stdout, stderr) = Peft("kernels", "--arch", "compute_80", "--family", "reductions.cu", "--out", dir);
        Assert.That(code, Is.Zero, stderr);
        string ptx = File.ReadAllText(Path.Combine(dir, "reductions-compute_80.ptx"));
        Assert.That(ptx, Does.Contain($".entry {kernels[0]}(").And.Not.Contain("\0"));
        Assert.That(stdout, Does.Not.Contain("| reductions |"), "no ptxas report for PTX");

        (code, _, stderr) = Peft("kernels", "--family", "nope");
        Assert.That((code, stderr), Is.EqualTo((1, "error: --family: no kernel family 'nope' (known: " +
            string.Join(", ", Engine.Kernels.Cuda.KernelSources.KernelFiles.Order().Select(f => f[..^3])) + ")\n")));
        (code, _, stderr) = Peft("kernels", "--arch", "sm_1");
        Assert.That((code, stderr.StartsWith("error: --arch: NVRTC ", StringComparison.Ordinal), stderr), Is.EqualTo((1, true, stderr)));
        Assert.That(stderr, Does.Contain("cannot target sm_1 (it can: "));
    }
}
