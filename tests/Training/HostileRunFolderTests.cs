using Engine.IO;
using Engine.Models.Peft;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>A run folder is input too: its state, config and selection may have been edited or planted. Nothing outside
/// the run folder can be read or deleted through them, no index from them reaches a kernel unchecked, and every bad
/// value is refused as <see cref="InvalidInputException"/> naming the file and the field.</summary>
[TestFixture, NonParallelizable]
public class HostileRunFolderTests
{
    string _root = "";

    [SetUp]
    public void SetUp()
    {
        _root = Directory.CreateTempSubdirectory("hostile-run-").FullName;
        File.WriteAllText(Path.Combine(_root, "tiny.json"),
            """{ "img_size": 16, "patch_size": 4, "in_chans": 3, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2 }""");
        MiniVtab.Write(Path.Combine(_root, "data"), "tint", train: 32, test: 10);
    }

    [TearDown]
    public void TearDown()
    {
        if (_root.Length > 0) Directory.Delete(_root, true);
    }

    RunConfig Config(string method, int epochs = 2) => new()
    {
        Task = "tint", TaskFolder = Path.Combine(_root, "data", "tint"), Classes = MiniVtab.Classes["tint"], Model = Path.Combine(_root, "tiny.json"),
        Recipe = PeftRecipe.For(method) with
        {
            Epochs = epochs, CooldownEpochs = 0, WarmupEpochs = 0, LearningRate = 1e-3f, BatchSize = 16, EvalEveryEpochs = 1, K = method == "gps" ? 1 : 0,
        },
        EvalBatchSize = 32,
    };

    RunOptions Options(bool resume = false) => new() { CacheDir = Path.Combine(_root, "cache"), Resume = resume };

    /// <summary>A finished first epoch of a two-epoch run, stopped before the second: the run folder a resume continues.</summary>
    string InterruptedRun(string method)
    {
        string run = Path.Combine(_root, "runs", method);
        using var cancel = new CancellationTokenSource();
        int steps = 0;
        var options = Options() with
        {
            Cancel = cancel.Token,
            Progress = _ =>
            {
                if (++steps == 3) cancel.Cancel(); // the first step of epoch 2 (an epoch: 32 images in batches of 16)
            },
        };
        Assert.Throws<OperationCanceledException>(() => FineTuneRun.Execute(Config(method), run, Device.Cpu, options));
        Assert.That(File.Exists(Path.Combine(run, "state.json")));
        return run;
    }

    static void EditState(string run, Func<string, string> edit)
    {
        string path = Path.Combine(run, "state.json");
        File.WriteAllText(path, edit(File.ReadAllText(path)));
    }

    [Test]
    public void AResumeNeverDeletesOrReadsAFolderOutsideItsRun()
    {
        string run = InterruptedRun("full");
        string victim = Path.Combine(_root, "victim");
        Directory.CreateDirectory(victim);
        foreach (var file in Directory.GetFiles(Path.Combine(run, "checkpoint", "epoch-0001"))) // loadable, so only the check stops it
            File.Copy(file, Path.Combine(victim, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(victim, "precious.txt"), "keep me");
        EditState(run, s => s.Replace("checkpoint/epoch-0001", "../../victim"));

        var e = Assert.Throws<InvalidInputException>(() => FineTuneRun.Execute(Config("full"), run, Device.Cpu, Options(resume: true)))!;
        Assert.That(e.Message, Does.StartWith(Path.Combine(run, "state.json")).And.Contain("Checkpoint"));
        Assert.That(File.ReadAllText(Path.Combine(victim, "precious.txt")), Is.EqualTo("keep me"));
    }

    [Test]
    public void AResumeRefusesACheckpointFolderThatIsALink()
    {
        string run = InterruptedRun("full");
        string outside = Path.Combine(_root, "outside");
        Directory.Move(Path.Combine(run, "checkpoint", "epoch-0001"), outside);
        Directory.CreateSymbolicLink(Path.Combine(run, "checkpoint", "epoch-0001"), outside);

        var e = Assert.Throws<InvalidInputException>(() => FineTuneRun.Execute(Config("full"), run, Device.Cpu, Options(resume: true)))!;
        Assert.That(e.Message, Does.Contain("symbolic link"));
        Assert.That(Directory.Exists(outside) && Directory.EnumerateFiles(outside).Any(), "the link's target is untouched");
    }

    /// <summary>Replaces <paramref name="find"/> (which must be there) in the run file <paramref name="file"/>, resumes, and
    /// expects a refusal that starts with that file and names <paramref name="named"/>.</summary>
    void EditedFileIsRefused(string file, string find, string replace, string named)
    {
        string run = InterruptedRun("full"), path = Path.Combine(run, file), text = File.ReadAllText(path);
        Assert.That(text, Does.Contain(find));
        File.WriteAllText(path, text.Replace(find, replace));
        var e = Assert.Throws<InvalidInputException>(() => FineTuneRun.Execute(Config("full"), run, Device.Cpu, Options(resume: true)))!;
        Assert.That(e.Message, Does.StartWith(path).And.Contain(named), e.Message);
    }

    [TestCase("\"EpochsDone\": 1", "\"EpochsDone\": 999", "EpochsDone 999")]
    [TestCase("\"EpochsDone\": 1", "\"EpochsDone\": -5", "EpochsDone -5")]
    [TestCase("\"Log\": [", "\"Log\": null, \"Ignored\": [", "Log")]
    [TestCase("\"Seconds\": ", "\"Seconds\": -1, \"Was\": ", "Seconds -1")]
    [TestCase("\"LossScale\": null", "\"LossScale\": -2", "LossScale -2")]
    [TestCase("\"LossScaleGoodSteps\": 0", "\"LossScaleGoodSteps\": -1", "LossScaleGoodSteps -1")]
    public void AnEditedRunStateIsRefusedNamingTheField(string find, string replace, string named) =>
        EditedFileIsRefused("state.json", find, replace, named);

    [TestCase("\"BatchSize\": 16", "\"BatchSize\": 0", "BatchSize 0")]
    [TestCase("\"EvalEveryEpochs\": 1", "\"EvalEveryEpochs\": 0", "EvalEveryEpochs 0")]
    [TestCase("\"Epochs\": 2", "\"Epochs\": -3", "Epochs -3")]
    [TestCase("\"TrainSplit\": \"train800val200\"", "\"TrainSplit\": \"../../outside\"", "TrainSplit")]
    public void AnEditedRunConfigIsRefusedNamingTheField(string find, string replace, string named) =>
        EditedFileIsRefused("config.json", find, replace, named);

    [Test]
    public void ANewRunChecksItsConfigBeforeWritingAnything()
    {
        string run = Path.Combine(_root, "runs", "bad");
        var config = Config("full") with { Recipe = Config("full").Recipe with { BatchSize = 0 } };
        var e = Assert.Throws<ArgumentException>(() => FineTuneRun.Execute(config, run, Device.Cpu, Options()))!;
        Assert.That(e.Message, Does.Contain("BatchSize 0"));
        Assert.That(File.Exists(Path.Combine(run, "config.json")), Is.False, "nothing locks the folder");
    }

    /// <summary>A planted selection file whose GPS columns lie far outside the weight (the out-of-bounds native write),
    /// at the row length (the managed IndexOutOfRange), negative or fractional: refused before any kernel runs.</summary>
    [TestCase(1_000_000f, "outside [0, ")]
    [TestCase(-1_000_000f, "not an index")]
    [TestCase(32f, "outside [0, 32)")]
    [TestCase(0.5f, "not an index")]
    public void APlantedGpsSelectionIsCheckedBeforeAnyKernelSeesIt(float column, string message)
    {
        string run = Path.Combine(_root, "runs", "gps");
        Directory.CreateDirectory(run);
        using (var model = Models.ImageModels.Create(Device.Cpu, Path.Combine(_root, "tiny.json"), MiniVtab.Classes["tint"]))
        {
            var entries = GpsSelection.SelectedWeights(model).Select(p =>
            {
                int rows = p.Shape[0];
                var values = new float[rows];
                values[rows / 2] = column; // one bad entry among valid ones (column 0)
                var t = Tensor.FromArray(Device.Cpu, values, rows, 1);
                t.Name = p.Name + ".gps_index";
                return t;
            }).ToList();
            Checkpoints.SafeTensors.Write(Path.Combine(run, "selection.safetensors"), entries);
            foreach (var t in entries) t.Dispose();
        }
        Config("gps").Save(Path.Combine(run, "config.json")); // a run folder as downloaded: resumed, its files read
        var e = Assert.Catch(() => FineTuneRun.Execute(Config("gps"), run, Device.Cpu, Options() with { Resume = true }))!;
        Assert.That(e, Is.InstanceOf<InvalidInputException>().Or.InstanceOf<ArgumentException>());
        Assert.That(e.Message, Does.Contain(message), e.Message);
    }

    [Test]
    public void ARunFileThatIsALinkIsNeverRead()
    {
        string run = Path.Combine(_root, "runs", "linked");
        Directory.CreateDirectory(run);
        string elsewhere = Path.Combine(_root, "elsewhere.safetensors");
        File.WriteAllText(elsewhere, "not read");
        File.CreateSymbolicLink(Path.Combine(run, "selection.safetensors"), elsewhere);
        Config("gps").Save(Path.Combine(run, "config.json"));
        var e = Assert.Throws<InvalidInputException>(() => FineTuneRun.Execute(Config("gps"), run, Device.Cpu, Options() with { Resume = true }))!;
        Assert.That(e.Message, Does.StartWith(Path.Combine(run, "selection.safetensors")).And.Contain("symbolic link"));
        // A new run in that folder deletes the link (a failed start's leftover), never the file it points to.
        FineTuneRun.Execute(Config("linear"), Path.Combine(_root, "runs", "fresh"), Device.Cpu, Options());
        File.Delete(Path.Combine(run, "config.json"));
        FineTuneRun.Execute(Config("linear"), run, Device.Cpu, Options());
        Assert.That(File.ReadAllText(elsewhere), Is.EqualTo("not read"));
    }

    [Test]
    public void ARepeatedGpsColumnInARowIsRefused()
    {
        using var w = Tensor.Parameter(Device.Cpu, "w", 3, 4);
        using var entries = Tensor.FromArray(Device.Cpu, [0, 1, 2, 2, 0, 3], 3, 2);
        var e = Assert.Throws<ArgumentException>(() => w.Trainability = Trainability.Selected(entries))!;
        Assert.That(e.Message, Does.Contain("row 1 repeats column 2"));
    }
}
