using Engine.Imaging;
using Engine.Models.Vit;

namespace Engine.Tests;

/// <summary><c>peft vtab run | suite | report</c> end to end on a generated miniature tree with a tiny model.</summary>
[TestFixture, NonParallelizable]
public class VtabCliTests
{
    string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Files.TempDir();
        foreach (var task in MiniVtab.Classes.Keys) MiniVtab.Write(Path.Combine(_dir, "data"), task, train: 32, test: 16);
        var config = new VitConfig { img_size = 16, patch_size = 4, embed_dim = 32, depth = 2, num_heads = 2, mlp_ratio = 2, num_classes = 7 };
        File.WriteAllText(Path.Combine(_dir, "tiny.json"),
            """{ "img_size": 16, "patch_size": 4, "in_chans": 3, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2 }""");
        using var vit = new VisionTransformer(Device.Cpu, config, seed: 5);
        vit.Save(Path.Combine(_dir, "tiny.safetensors"));
    }

    [TearDown]
    public void TearDown()
    {
        if (_dir.Length > 0) Directory.Delete(_dir, recursive: true);
    }

    string[] Common(params string[] extra) =>
    [
        "--data", Path.Combine(_dir, "data"), "--model", Path.Combine(_dir, "tiny.json"), "--output", Path.Combine(_dir, "runs"),
        "--cache-dir", Path.Combine(_dir, "cache"), "--device", "cpu", "--epochs", "2", "--cooldown-epochs", "0", "--warmup-epochs", "1",
        "--batch-size", "16", "--lr", "0.01", .. extra,
    ];

    [Test]
    public void SuiteRunsTasksTimesMethodsSkipsFinishedRunsAndReports()
    {
        var (code, stdout, _) = CliTests.Peft(["vtab", "suite", .. Common("--weights", Path.Combine(_dir, "tiny.safetensors"), "--methods", "linear", "ssf")]);
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("[4/4] tint/ssf").And.Contain("| method | params (M) | tint | quadrant | Natural | Structured | mean (tasks) | mean (groups) |"));
        Assert.That(stdout, Does.Contain("| linear |").And.Contain("| ssf |"));
        foreach (var file in new[] { "report.md", "results.csv", "accuracy.svg" }) Assert.That(File.Exists(Path.Combine(_dir, "runs", file)), file);
        Assert.That(File.ReadAllLines(Path.Combine(_dir, "runs", "results.csv")), Has.Length.EqualTo(5));

        (code, stdout, _) = CliTests.Peft(["vtab", "suite", .. Common("--weights", Path.Combine(_dir, "tiny.safetensors"), "--methods", "linear", "ssf")]);
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("[1/4] quadrant/linear: finished earlier"), "finished runs are skipped");

        (code, stdout, _) = CliTests.Peft("vtab", "report", "--runs", Path.Combine(_dir, "runs"));
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("best evaluation on the test split").And.Contain("after the last epoch"));
    }

    /// <summary>A run that fails does not stop the suite: the others finish, the failures are summarised, the report is
    /// written from what finished, and the exit code says something failed. An empty runs folder has no report.</summary>
    [Test]
    public void ASuiteGoesOnPastAFailingRunAndSummarisesIt()
    {
        File.Delete(Path.Combine(_dir, "data", "tint", "test.txt"));
        var (code, stdout, _) = CliTests.Peft(["vtab", "suite", .. Common("--weights", Path.Combine(_dir, "tiny.safetensors"), "--methods", "linear")]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Does.Contain("tint/linear failed:").And.Contain("1 of 2 run(s) failed").And.Contain("| linear |"));
        Assert.That(File.Exists(Path.Combine(_dir, "runs", "quadrant", "linear", "result.json")), "the other run finished");
        Assert.That(File.Exists(Path.Combine(_dir, "runs", "report.md")), "the report of what finished");
        Assert.That(File.Exists(Path.Combine(_dir, "runs", "tint", "linear", "config.json")), Is.False, "the failed run left no run to resume");

        string empty = Path.Combine(_dir, "empty");
        Directory.CreateDirectory(empty);
        var (c2, out2, err2) = CliTests.Peft("vtab", "report", "--runs", empty);
        Assert.That((c2, out2), Is.EqualTo((1, "")));
        Assert.That(err2, Does.Contain("no finished run to report"));
    }

    /// <summary>--resume keeps the stored config: options that differ from it are named and refused unless
    /// --force-config; --data is not needed to resume.</summary>
    [Test]
    public void ResumeNamesTheOptionsThatDifferFromTheStoredConfig()
    {
        string[] run = ["vtab", "run", "--task", "tint", "--method", "linear"];
        var (code, _, _) = CliTests.Peft([.. run, .. Common("--weights", Path.Combine(_dir, "tiny.safetensors"))]);
        Assert.That(code, Is.Zero);
        var changed = Common("--weights", Path.Combine(_dir, "tiny.safetensors")).Select(a => a == "0.01" ? "0.02" : a).ToArray();
        var (c2, _, e2) = CliTests.Peft([.. run, .. changed, "--resume"]);
        Assert.That(c2, Is.EqualTo(1));
        Assert.That(e2, Does.Contain("--lr: stored 0.01, given 0.02").And.Contain("--force-config").And.Contain("--force"));
        Assert.That(e2, Does.Not.Contain("--epochs:"), "options equal to the stored ones are not listed");
        var (c3, out3, _) = CliTests.Peft([.. run, .. changed, "--resume", "--force-config"]);
        Assert.That(c3, Is.Zero);
        Assert.That(out3, Does.Contain("tint/linear: final top-1"));
        var (c4, out4, e4) = CliTests.Peft("vtab", "run", "--task", "tint", "--method", "linear", "--output", Path.Combine(_dir, "runs"), "--resume");
        Assert.That(c4, Is.Zero, e4);
        Assert.That(out4, Does.Contain("tint/linear: final top-1"), "no --data, no --weights: the folder's config is enough");
        var (c5, _, e5) = CliTests.Peft("vtab", "run", "--task", "dtd", "--method", "linear", "--output", Path.Combine(_dir, "runs"));
        Assert.That((c5, e5), Is.EqualTo((1, "error: --data: the folder of the task folders is required to start a run\n")));
    }

    /// <summary>A damaged image found while the cache is built on several threads: one error line naming the file, never
    /// "unexpected AggregateException".</summary>
    [Test]
    public void ADamagedImageIsOneErrorLineNamingIt()
    {
        string list = Path.Combine(_dir, "data", "tint", "train800val200.txt");
        string image = Path.Combine(_dir, "data", "tint", File.ReadLines(list).Skip(3).First().Split(' ')[0]);
        File.WriteAllBytes(image, File.ReadAllBytes(image)[..40]);
        var (code, _, stderr) = CliTests.Peft(["vtab", "run", "--task", "tint", "--method", "linear", .. Common("--weights", Path.Combine(_dir, "tiny.safetensors"))]);
        Assert.That(code, Is.EqualTo(1), stderr);
        Assert.That(stderr, Does.StartWith("error: ").And.Contain(Path.GetFileName(image)).And.Not.Contain("unexpected").And.Not.Contain("Aggregate"));
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
    }

    /// <summary>--k per method: each method takes its own, a plain value serves the rest.</summary>
    [Test]
    public void KIsGivenPerMethod()
    {
        var (code, _, _) = CliTests.Peft(["vtab", "suite", .. Common("--weights", Path.Combine(_dir, "tiny.safetensors"), "--methods", "sct", "gps",
            "--tasks", "tint", "--k", "sct=4", "2", "--same-weights")]);
        Assert.That(code, Is.Zero);
        int K(string method) => Engine.Models.Training.RunConfig.Load(Path.Combine(_dir, "runs", "tint", method, "config.json")).Recipe.K;
        Assert.That((K("sct"), K("gps")), Is.EqualTo((4, 2)));
    }

    /// <summary>On a terminal the live progress bars are cleared before every log line and redrawn after it, so no
    /// epoch line starts after stale progress text. Runs the CLI under script(1) to get a pseudo-terminal.</summary>
    [Test]
    public void OnATerminalLogLinesNeverStartAfterTheStatusLine()
    {
        if (!File.Exists("/usr/bin/script")) Assert.Ignore("script(1) from util-linux is not installed; it provides the pseudo-terminal");
        string peft = Path.Combine(TestContext.CurrentContext.TestDirectory, "peft.dll");
        string command = string.Join(' ', new[] { "dotnet", peft, "vtab", "run", "--task", "tint", "--method", "linear" }
            .Concat(Common("--weights", Path.Combine(_dir, "tiny.safetensors"))).Select(a => $"'{a}'"));
        var info = new System.Diagnostics.ProcessStartInfo("/usr/bin/script") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in new[] { "-qefc", command, "/dev/null" }) info.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(info)!;
        p.StandardInput.Close();
        string terminal = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.Zero, terminal);
        // What stays visible of each terminal line is the text after its last carriage return (the terminal ends lines
        // with \r\n).
        // Cursor movements and colours (ANSI CSI sequences) are removed first.
        string plain = System.Text.RegularExpressions.Regex.Replace(terminal, "\u001b\\[[0-9;?]*[A-Za-z]", "");
        var visible = plain.Split('\n').Select(l => l.TrimEnd('\r')).Select(l => l[(l.LastIndexOf('\r') + 1)..]).ToList();
        var epochs = visible.Where(l => l.Contains("epoch ") && l.Contains(", train ")).ToList(); // the log lines (the bar has no ", train ")
        Assert.That(epochs, Has.Count.EqualTo(2), string.Join("\n", visible));
        Assert.That(epochs, Has.All.StartsWith("  epoch "), "each epoch line starts at column 0, with no status text before it");
        Assert.That(terminal, Does.Contain("\u001b[?25l").And.Contain("\u001b[?25h"), "live mode: the cursor hidden while the bars are drawn, then shown");
    }

    [Test]
    public void RunRefusesBadArgumentsWithOneLineErrors()
    {
        var (code, _, stderr) = CliTests.Peft(["vtab", "run", "--task", "tint", "--method", "linear", .. Common()]);
        Assert.That((code, stderr), Is.EqualTo((1, "error: --weights: a pretrained checkpoint is required for linear (its family: augreg; fine-tuning from scratch is not the VTAB protocol)\n")));
        (code, _, stderr) = CliTests.Peft(["vtab", "run", "--task", "nope", "--method", "linear", .. Common("--weights", Path.Combine(_dir, "tiny.safetensors"))]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.StartWith("error: --task nope: no folder"));
        (code, _, stderr) = CliTests.Peft(["vtab", "run", "--task", "tint", "--method", "linear", .. Common("--weights", Path.Combine(_dir, "missing.safetensors"))]);
        Assert.That((code, stderr), Is.EqualTo((1, $"error: --weights {Path.Combine(_dir, "missing.safetensors")}: no such file\n")));

        // A checkpoint of another width: one error naming the tensors that do not fit.
        using (var wide = new VisionTransformer(Device.Cpu, new VitConfig { img_size = 16, patch_size = 4, embed_dim = 48, depth = 2, num_heads = 2, mlp_ratio = 2, num_classes = 7 }))
            wide.Save(Path.Combine(_dir, "wide.safetensors"));
        (code, _, stderr) = CliTests.Peft(["vtab", "run", "--task", "tint", "--method", "linear", .. Common("--weights", Path.Combine(_dir, "wide.safetensors"))]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("wide.safetensors").And.Contain("patch_embed.proj.weight").And.Contain("checkpoint: ViT, width 48").And.Contain("model: ViT, width 32"));

        (code, var stdout, _) = CliTests.Peft(["vtab", "run", "--task", "tint", "--method", "bias", .. Common("--weights", Path.Combine(_dir, "tiny.safetensors"))]);
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("tint/bias: final top-1"));
        (code, _, stderr) = CliTests.Peft(["vtab", "run", "--task", "tint", "--method", "bias", .. Common("--weights", Path.Combine(_dir, "tiny.safetensors"))]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("already holds a run; resume it (--resume)"));
    }
}
