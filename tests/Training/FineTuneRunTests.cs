using Engine.Imaging;
using Engine.Models.Peft;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>The durable fine-tuning run end to end on miniature VTAB tasks: it learns, it writes its files, and an
/// interrupted run resumed from its checkpoint ends exactly as an uninterrupted one.</summary>
[TestFixture, NonParallelizable]
public class FineTuneRunTests
{
    string _root = "";

    [SetUp]
    public void SetUp()
    {
        _root = Directory.CreateTempSubdirectory("finetune-").FullName;
        File.WriteAllText(Path.Combine(_root, "tiny.json"),
            """{ "img_size": 16, "patch_size": 4, "in_chans": 3, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2 }""");
    }

    [TearDown]
    public void TearDown()
    {
        if (_root.Length > 0) Directory.Delete(_root, true);
    }

    RunConfig Config(string task, string method, int epochs, float lr) => new()
    {
        Task = task,
        TaskFolder = Path.Combine(_root, "data", task),
        Classes = MiniVtab.Classes[task],
        Model = Path.Combine(_root, "tiny.json"),
        Recipe = PeftRecipe.For(method) with
        {
            Epochs = epochs, CooldownEpochs = 1, WarmupEpochs = 1, LearningRate = lr, WarmupLearningRate = lr / 10, MinLearningRate = lr / 100,
            BatchSize = 16, EvalEveryEpochs = 2, K = method == "sct" ? 8 : method == "gps" ? 2 : 0, DropPath = 0.1f,
        },
        EvalBatchSize = 32,
    };

    RunOptions Options(CancellationToken cancel = default, List<string>? lines = null) => new()
    {
        CacheDir = Path.Combine(_root, "cache"), Cancel = cancel, Log = lines == null ? null : lines.Add,
    };

    [Test]
    public void FullFineTuningLearnsBothTasksAndWritesItsRunFolder()
    {
        foreach (var (task, chance) in new[] { ("tint", 100.0 / 3), ("quadrant", 25.0) })
        {
            MiniVtab.Write(Path.Combine(_root, "data"), task, train: 96, test: 40);
            string run = Path.Combine(_root, "runs", task);
            var result = FineTuneRun.Execute(Config(task, "full", epochs: 12, lr: 3e-3f), run, Device.Cpu, Options());
            var log = File.ReadAllLines(Path.Combine(run, "log.jsonl"));
            Assert.That(log, Has.Length.EqualTo(13), "a line per epoch (12 + 1 cooldown)");
            double firstLoss = System.Text.Json.JsonDocument.Parse(log[0]).RootElement.GetProperty("Loss").GetDouble();
            double lastLoss = System.Text.Json.JsonDocument.Parse(log[^1]).RootElement.GetProperty("Loss").GetDouble();
            TestContext.Out.WriteLine($"{task}: loss {firstLoss:F3} → {lastLoss:F3}, final {result.FinalAccuracy:F1}%, best {result.BestAccuracy:F1}% (chance {chance:F1}%)");
            Assert.That(lastLoss, Is.LessThan(firstLoss * 0.8), $"{task}: the loss falls");
            Assert.That(result.FinalAccuracy, Is.GreaterThan(chance + 15), $"{task}: accuracy beats chance");
            Assert.That(result.BestAccuracy, Is.GreaterThanOrEqualTo(result.FinalAccuracy));
            Assert.That(RunResult.Read(run), Is.EqualTo(result));
            foreach (var file in new[] { "config.json", "state.json", "trained.safetensors", "result.json" })
                Assert.That(File.Exists(Path.Combine(run, file)), file);
            Assert.That(Directory.GetDirectories(Path.Combine(run, "checkpoint")), Has.Length.EqualTo(1), "only the latest checkpoint is kept");
        }
    }

    [TestCase("ssf"), TestCase("gps"), TestCase("sct"), TestCase("ssf", "fp16")]
    public void AnInterruptedRunResumesToTheSameResult(string method, string precision = "fp32")
    {
        MiniVtab.Write(Path.Combine(_root, "data"), "quadrant", train: 48, test: 20);
        var config = Config("quadrant", method, epochs: 4, lr: 5e-3f) with { Precision = Engine.Kernels.LowPrecision.Parse(precision) };
        if (method == "sct") // with SCT's training augmentation: the flips and RandAugment draws replay on resume
            config = config with { Recipe = config.Recipe with { Augment = true, RandAugment = PeftRecipe.SctRandAugment } };
        string whole = Path.Combine(_root, "runs", "whole"), broken = Path.Combine(_root, "runs", "broken");
        var expected = FineTuneRun.Execute(config, whole, Device.Cpu, Options());
        if (method == "gps")
            using (var selection = Engine.Checkpoints.Checkpoint.Open(Path.Combine(whole, "selection.safetensors")))
                Assert.That(selection.Metadata["batch_size"], Is.EqualTo("16"), "GPS selects with the training batch, as train_gps.py");

        // Stop during epoch 3 (after two epochs were checkpointed), then resume from the folder alone.
        using var cancel = new CancellationTokenSource();
        var lines = new List<string>();
        var options = Options(cancel.Token, lines) with { Progress = p => { if (p.Epoch == 3) cancel.Cancel(); } };
        Assert.Throws<OperationCanceledException>(() => FineTuneRun.Execute(config, broken, Device.Cpu, options));
        Assert.That(File.Exists(Path.Combine(broken, "result.json")), Is.False);
        Assert.Throws<InvalidOperationException>(() => FineTuneRun.Execute(config, broken, Device.Cpu, Options()), "a second start must not overwrite the run");
        Assert.That(lines, Has.Some.Contains("5 epochs (4 + 1 cooldown at lr"), "the cooldown epochs are announced");
        lines.Clear();
        var resumed = FineTuneRun.Execute(config with { Recipe = config.Recipe with { LearningRate = 1f } }, broken, Device.Cpu,
            Options(lines: lines) with { Resume = true });
        Assert.That(lines, Has.Some.Contains("resumed after epoch 2"));
        Assert.That(resumed with { Seconds = 0 }, Is.EqualTo(expected with { Seconds = 0 }), "the stored config wins on resume");
        Assert.That(File.ReadAllBytes(Path.Combine(broken, "trained.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(whole, "trained.safetensors"))));
        string Losses(string run) => string.Join(",", File.ReadAllLines(Path.Combine(run, "log.jsonl"))
            .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("Loss").GetDouble().ToString("R")));
        Assert.That(Losses(broken), Is.EqualTo(Losses(whole)), "every epoch's loss matches");
        if (precision == "fp16")
            Assert.That(File.ReadAllText(Path.Combine(broken, "state.json")), Does.Contain("\"LossScale\": 65536"), "the loss scaler is kept with the run");
    }

    [Test]
    public void ADivergingRunStopsAndKeepsItsLastCheckpoint()
    {
        MiniVtab.Write(Path.Combine(_root, "data"), "tint", train: 32, test: 10);
        var config = Config("tint", "full", epochs: 3, lr: 1e9f) with { Recipe = Config("tint", "full", 3, 1e9f).Recipe with { WarmupEpochs = 0 } };
        string run = Path.Combine(_root, "runs", "diverge");
        var e = Assert.Throws<DivergedException>(() => FineTuneRun.Execute(config, run, Device.Cpu, Options()))!;
        Assert.That(e.Message, Does.Contain("tint/full").And.Contain("lower learning rate"), e.Message);
        Assert.That(File.Exists(Path.Combine(run, "result.json")), Is.False);
    }

    /// <summary>A start that fails its checks (no test split, SCT's K wider than the model) leaves no run behind: the
    /// corrected command starts afresh instead of being told to resume a broken config.</summary>
    [Test]
    public void AFailedStartLeavesTheFolderFreeForTheCorrectedRun()
    {
        string data = MiniVtab.Write(Path.Combine(_root, "data"), "quadrant", train: 32, test: 12);
        string run = Path.Combine(_root, "runs", "failed-start");
        var good = Config("quadrant", "sct", epochs: 1, lr: 1e-3f);
        File.Move(Path.Combine(data, "test.txt"), Path.Combine(data, "test.hidden"));
        Assert.Throws<FileNotFoundException>(() => FineTuneRun.Execute(good, run, Device.Cpu, Options()));
        Assert.That(File.Exists(Path.Combine(run, "config.json")), Is.False, "no run was committed");
        File.Move(Path.Combine(data, "test.hidden"), Path.Combine(data, "test.txt"));
        Assert.That(() => FineTuneRun.Execute(good with { Recipe = good.Recipe with { K = 100_000 } }, run, Device.Cpu, Options()), Throws.Exception);
        Assert.That(File.Exists(Path.Combine(run, "config.json")), Is.False, "the too-wide K was refused before the run existed");
        var result = FineTuneRun.Execute(good, run, Device.Cpu, Options());
        Assert.That(result.Method, Is.EqualTo("sct"));
        Assert.That(File.Exists(Path.Combine(run, "run.lock")), Is.False, "the lock goes with the run");
    }

    [Test]
    public void ForceReplacesARunAndResumeWithForceIsRefused()
    {
        MiniVtab.Write(Path.Combine(_root, "data"), "tint", train: 32, test: 10);
        string run = Path.Combine(_root, "runs", "replaced");
        var first = FineTuneRun.Execute(Config("tint", "linear", epochs: 1, lr: 1e-2f), run, Device.Cpu, Options());
        var again = Config("tint", "linear", epochs: 2, lr: 1e-2f);
        var e = Assert.Throws<InvalidOperationException>(() => FineTuneRun.Execute(again, run, Device.Cpu, Options()))!;
        Assert.That(e.Message, Does.Contain("--force").And.Contain("--resume"));
        var replaced = FineTuneRun.Execute(again, run, Device.Cpu, Options() with { Force = true });
        Assert.That((first.Epochs, replaced.Epochs), Is.EqualTo((1 + 1, 2 + 1)), "the new config ran (epochs + 1 cooldown)");
        Assert.That(File.ReadAllLines(Path.Combine(run, "log.jsonl")), Has.Length.EqualTo(3), "the old run's log is gone");
        Assert.Throws<ArgumentException>(() => FineTuneRun.Execute(again, run, Device.Cpu, Options() with { Force = true, Resume = true }));
    }

    [Test]
    public void TheRunLogNamesTheAttentionPathsItMeasured()
    {
        // A GPU measures the attention path per shape where the fused kernels run on tensor cores (head dim 64, bf16);
        // the emulated device runs the same kernels, with the measurement switched on here.
        var device = (CudaDevice)Backends.Get("emulated-cuda");
        File.WriteAllText(Path.Combine(_root, "vit64.json"),
            """{ "img_size": 16, "patch_size": 4, "in_chans": 3, "embed_dim": 128, "depth": 1, "num_heads": 2, "mlp_ratio": 1 }""");
        MiniVtab.Write(Path.Combine(_root, "data"), "tint", train: 32, test: 10);
        var config = Config("tint", "gps", epochs: 1, lr: 1e-2f) with { Model = Path.Combine(_root, "vit64.json"), Precision = Engine.Kernels.Precision.BF16 };
        var lines = new List<string>();
        bool previous = device.TunesAttention;
        try
        {
            device.TunesAttention = true;
            device.ForgetAttentionChoices();
            FineTuneRun.Execute(config, Path.Combine(_root, "runs", "measured"), device, Options(lines: lines));
        }
        finally
        {
            device.TunesAttention = previous;
            device.ForgetAttentionChoices();
        }
        // GPS's selection trains on its own batches (measured there, before it is announced), then training on batches of 16.
        var choices = lines.Where(l => l.StartsWith("attention ", StringComparison.Ordinal)).ToList();
        string all = string.Join("\n", lines);
        Assert.That(choices, Has.Some.StartsWith("attention 16×17×2×64 bf16: ").And.Contains(" ms"), all);
        Assert.That(choices.Select(c => c[..c.IndexOf(':')]), Is.Unique, "each shape measured once");
        Assert.That(lines.IndexOf(choices[0]), Is.LessThan(lines.FindIndex(l => l.StartsWith("gps selection", StringComparison.Ordinal))), all);
    }

    [Test]
    public void ALiveLockRefusesASecondWriterAndAStaleOneIsTakenOver()
    {
        MiniVtab.Write(Path.Combine(_root, "data"), "tint", train: 32, test: 10);
        string run = Path.Combine(_root, "runs", "locked"), lockFile = Path.Combine(run, "run.lock");
        Directory.CreateDirectory(run);
        File.WriteAllText(lockFile, $"{Environment.ProcessId} {Environment.MachineName} {DateTime.UtcNow:O}");
        var e = Assert.Throws<InvalidOperationException>(() => FineTuneRun.Execute(Config("tint", "linear", 1, 1e-2f), run, Device.Cpu, Options()))!;
        Assert.That(e.Message, Does.Contain($"process {Environment.ProcessId} on {Environment.MachineName}").And.Contain(lockFile));
        Assert.That(File.Exists(Path.Combine(run, "config.json")), Is.False);
        // A process that has exited leaves a stale lock.
        using (var gone = System.Diagnostics.Process.Start("true")!) { gone.WaitForExit(); File.WriteAllText(lockFile, $"{gone.Id} {Environment.MachineName} {DateTime.UtcNow:O}"); }
        Assert.That(FineTuneRun.Execute(Config("tint", "linear", 1, 1e-2f), run, Device.Cpu, Options()).Method, Is.EqualTo("linear"));
        Assert.That(File.Exists(lockFile), Is.False);
    }
}
