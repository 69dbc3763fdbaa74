using System.CommandLine;
using System.Text.Json;
using Engine.Data;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Models;
using Engine.Models.Peft;
using Engine.Models.Training;
using Engine.IO;

namespace Engine.Cli;

/// <summary><c>peft vtab run | suite | report</c>: the VTAB-1k reproduction (and any task folder in its layout).</summary>
public static class VtabCommand
{
    /// <summary>Builds the command group.</summary>
    public static Command Create()
    {
        var command = new Command("vtab", "Fine-tune on VTAB-1k task folders (one run, or tasks × methods) and report the paper's table.");
        command.Subcommands.Add(RunCommand());
        command.Subcommands.Add(SuiteCommand());
        command.Subcommands.Add(ReportCommand());
        command.Subcommands.Add(RecipeCommand());
        return command;
    }

    /// <summary>The options every training command shares, and the recipe overrides.</summary>
    sealed class TrainOptions
    {
        public readonly Option<string?> Data = new("--data") { Description = "The folder holding the task folders (VTAB-1k as NOAH's extractor writes it); required unless resuming" };
        public readonly Option<string[]> Weights = new("--weights")
        {
            Description = "Pretrained checkpoint(s): one FILE for every method, or one per checkpoint family as augreg=FILE (SSF, GPS, the baselines) " +
                          "original=FILE (SCT), as the official runs start from (timm .safetensors, Google .npz or the original .pth; the head is replaced)",
            AllowMultipleArgumentsPerToken = true,
        };
        public readonly Option<bool> SameWeights = new("--same-weights")
        {
            Description = "Let one --weights FILE serve methods whose official runs start from different checkpoints (SCT with the others)",
        };
        public readonly Option<string> Model = new("--model") { Description = "A ViT, Swin or ConvNeXt preset (vit_base_patch16_224, swin_base_patch4_window7_224, convnext_base, ...) or a JSON config", DefaultValueFactory = _ => "vit_base_patch16_224" };
        public readonly Option<string> Output = new("--output") { Description = "Runs folder: each run goes to <output>/<task>/<method>", DefaultValueFactory = _ => "runs" };
        public readonly Option<string?> CacheDir = new("--cache-dir") { Description = "Where decoded, resized images are cached (default: vtab/ in $PEFT_CACHE_DIR, else $XDG_CACHE_HOME/peft-engine, else ~/.cache/peft-engine)" };
        public readonly Option<string> Device = DeviceOption.Create();
        public readonly Option<float?> Lr = new Option<float?>("--lr") { Description = "Base learning rate (default: the recipe's for the task)" }.Positive();
        public readonly Option<float?> WeightDecay = new Option<float?>("--weight-decay") { Description = "Weight decay (default: the recipe's)" }.NonNegative();
        public readonly Option<int?> Epochs = new Option<int?>("--epochs") { Description = "Epochs of the cosine schedule (default 100); SSF and GPS then run --cooldown-epochs (10) more at the minimum rate" }.AtLeast(1);
        public readonly Option<int?> Cooldown = new Option<int?>("--cooldown-epochs") { Description = "Epochs at the minimum rate after the schedule (SSF/GPS 10, SCT 0)" }.AtLeast(0);
        public readonly Option<int?> Warmup = new Option<int?>("--warmup-epochs") { Description = "Linear warmup epochs (default 10)" }.AtLeast(0);
        public readonly Option<int?> Batch = new Option<int?>("--batch-size") { Description = "Images per step (default: the recipe's; the last partial batch is dropped)" }.AtLeast(1);
        public readonly Option<float?> DropPath = new Option<float?>("--drop-path") { Description = "Stochastic depth rate (default: the recipe's)" }.Fraction();
        public readonly Option<float?> Smoothing = new Option<float?>("--label-smoothing") { Description = "Label smoothing (default: the recipe's)" }.Fraction();
        public readonly Option<string[]> K = new Option<string[]>("--k")
        {
            Description = "Selection size: one K for every method, or per method as METHOD=K (--k sct=8 gps=1); SCT channels per block (96), GPS inputs per row (1)",
            AllowMultipleArgumentsPerToken = true,
        }.PerMethod(IsK, KRule, allowPlain: true, "sct=8 gps=1");
        static bool IsK(double v) => v >= 1 && v <= int.MaxValue && v == Math.Floor(v);
        const string KRule = "must be an integer ≥ 1";
        public readonly Option<string[]> StageK = CommonOptions.StageK();
        public readonly Option<int?> EvalEvery = new Option<int?>("--eval-every") { Description = "Evaluate on the test split every N epochs (SSF/GPS 1, SCT 10); always after the last" }.AtLeast(1);
        public readonly Option<ulong?> Seed = new("--seed") { Description = "Seed of the run (default 42)" };
        public readonly Option<string> Precision = CommonOptions.Precision();
        public readonly Option<bool> CudaGraph = CommonOptions.CudaGraph();
        public readonly MethodOptions MethodSettings = new();

        public void AddTo(Command command)
        {
            foreach (var option in new Option[] { Data, Weights, SameWeights, Model, Output, CacheDir, Device, Lr, WeightDecay, Epochs, Cooldown, Warmup, Batch, DropPath, Smoothing, K, StageK, EvalEvery, Seed, Precision, CudaGraph })
                command.Options.Add(option);
            MethodSettings.AddTo(command);
        }

        /// <summary>The device of <c>--device</c>; a CUDA one when <c>--cuda-graph</c> is given.</summary>
        public Device ResolveDevice(ParseResult r)
        {
            var device = DeviceOption.Resolve(r.GetValue(Device)!);
            if (r.GetValue(CudaGraph) && device is not CudaDevice)
                throw new ArgumentException($"--cuda-graph: needs a CUDA device (--device cuda or emulated-cuda), not {device.Name}");
            return device;
        }

        /// <summary>The recipe for (method, task) with the command line's overrides applied.</summary>
        public PeftRecipe Recipe(ParseResult r, string method, string task)
        {
            var recipe = PeftRecipe.For(method, VtabTasks.Find(task) != null ? task : null, ImageModels.FamilyOf(r.GetValue(Model)!));
            var k = CommonOptions.ParsePerMethod("--k", r.GetValue(K), IsK, KRule, allowPlain: true, "sct=8 gps=1");
            return MethodSettings.Apply(r, recipe) with
            {
                LearningRate = r.GetValue(Lr) ?? recipe.LearningRate, WeightDecay = r.GetValue(WeightDecay) ?? recipe.WeightDecay,
                Epochs = r.GetValue(Epochs) ?? recipe.Epochs, CooldownEpochs = r.GetValue(Cooldown) ?? recipe.CooldownEpochs,
                WarmupEpochs = r.GetValue(Warmup) ?? recipe.WarmupEpochs, BatchSize = r.GetValue(Batch) ?? recipe.BatchSize,
                DropPath = r.GetValue(DropPath) ?? recipe.DropPath, LabelSmoothing = r.GetValue(Smoothing) ?? recipe.LabelSmoothing,
                K = k.ByMethod.TryGetValue(method, out double own) ? (int)own : k.All is double all ? (int)all : recipe.K, StageK = CommonOptions.ParseStageK(r.GetValue(StageK)) ?? recipe.StageK, EvalEveryEpochs = r.GetValue(EvalEvery) ?? recipe.EvalEveryEpochs, Seed = r.GetValue(Seed) ?? recipe.Seed,
            };
        }

        public string Cache(ParseResult r) => r.GetValue(CacheDir) ?? DefaultCacheDir();
    }

    internal static string DefaultCacheDir() => CacheFolder.For("vtab");

    static Command RunCommand()
    {
        var train = new TrainOptions();
        var task = new Option<string>("--task") { Description = "The task folder's name under --data (cifar, dtd, ..., or a synthetic task)", Required = true };
        var method = new Option<string>("--method") { Description = string.Join("; ", PeftMethods.All.Select(m => m.Summary)), Required = true };
        method.AcceptOnlyFromAmong([.. PeftMethods.Names]);
        var resume = new Option<bool>("--resume") { Description = "Continue the run in <output>/<task>/<method> from its last checkpoint (its stored config is used)" };
        var force = new Option<bool>("--force") { Description = "Replace the run <output>/<task>/<method> already holds (its files are deleted first)" };
        var forceConfig = new Option<bool>("--force-config") { Description = "With --resume: continue with the stored config although options given differ from it" };
        var command = new Command("run", "Fine-tune one method on one task: train on train800val200, evaluate top-1 on test, write a durable run folder.")
        {
            task, method, resume, force, forceConfig,
        };
        train.AddTo(command);
        command.SetAction(r =>
        {
            string taskName = r.GetValue(task)!, methodName = r.GetValue(method)!;
            string runDir = Path.Combine(r.GetValue(train.Output)!, taskName, methodName);
            bool resuming = r.GetValue(resume);
            if (resuming && r.GetValue(force)) throw new ArgumentException("--resume continues a run and --force replaces it: give one");
            if (!resuming && r.GetValue(forceConfig)) throw new ArgumentException("--force-config goes with --resume");
            var config = resuming ? StoredConfig(r, train, runDir, taskName, methodName, r.GetValue(forceConfig))
                : BuildConfig(r, train, taskName, methodName, requireWeights: true);
            var device = train.ResolveDevice(r);
            return RunConsole.Execute(config, runDir, device, train.Cache(r), resuming, r.GetValue(force)) is { } result ? Print(result) : 130;
        });
        return command;
    }

    /// <summary>The config a run folder holds, refused when options given on the command line differ from it (a resumed
    /// run keeps its stored values) unless <paramref name="forceConfig"/>.</summary>
    static RunConfig StoredConfig(ParseResult r, TrainOptions train, string runDir, string task, string method, bool forceConfig)
    {
        string path = Path.Combine(runDir, "config.json");
        if (!File.Exists(path)) throw new InvalidOperationException($"--resume: {runDir} holds no run to resume (no config.json)");
        var stored = RunConfig.Load(path);
        // What the options given would have made, with --data defaulting to where the stored task folder is.
        var given = BuildConfig(r, train, task, method, requireWeights: false, dataFallback: Path.GetDirectoryName(stored.TaskFolder));
        var differences = new List<string>();
        void Compare(Option option, object? storedValue, object? givenValue)
        {
            if (r.GetResult(option) is { Implicit: false } && !Equals(Text(storedValue), Text(givenValue)))
                differences.Add($"{option.Name}: stored {Text(storedValue)}, given {Text(givenValue)}");
        }
        static string Text(object? v) => v switch
        {
            null => "none",
            IEnumerable<KeyValuePair<string, int>> d => string.Join(" ", d.OrderBy(p => p.Key).Select(p => $"{p.Key}={p.Value}")),
            IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
            _ => v.ToString() ?? "",
        };
        var (a, b) = (stored.Recipe, given.Recipe);
        Compare(train.Data, stored.TaskFolder, given.TaskFolder);
        Compare(train.Weights, stored.Weights, given.Weights);
        Compare(train.Model, stored.Model, given.Model);
        Compare(train.Precision, stored.Precision, given.Precision);
        Compare(train.CudaGraph, stored.CudaGraph, given.CudaGraph);
        Compare(train.Lr, a.LearningRate, b.LearningRate);
        Compare(train.WeightDecay, a.WeightDecay, b.WeightDecay);
        Compare(train.Epochs, a.Epochs, b.Epochs);
        Compare(train.Cooldown, a.CooldownEpochs, b.CooldownEpochs);
        Compare(train.Warmup, a.WarmupEpochs, b.WarmupEpochs);
        Compare(train.Batch, a.BatchSize, b.BatchSize);
        Compare(train.DropPath, a.DropPath, b.DropPath);
        Compare(train.Smoothing, a.LabelSmoothing, b.LabelSmoothing);
        Compare(train.K, a.K, b.K);
        Compare(train.StageK, a.StageK, b.StageK);
        Compare(train.EvalEvery, a.EvalEveryEpochs, b.EvalEveryEpochs);
        Compare(train.Seed, a.Seed, b.Seed);
        if (differences.Count > 0 && !forceConfig)
            throw new ArgumentException($"--resume: the run in {runDir} was started with other values ({string.Join("; ", differences)}); a resumed run keeps its " +
                                        "stored config: add --force-config to continue with it, or --force to start over with the new values");
        return stored;
    }

    static Command SuiteCommand()
    {
        var train = new TrainOptions();
        var tasks = new Option<string[]>("--tasks") { Description = "Tasks to run (default: every task folder under --data)", AllowMultipleArgumentsPerToken = true };
        var methods = new Option<string[]>("--methods") { Description = $"Methods to run (default: {string.Join(" ", PeftMethods.Default.Select(m => m.Name))}; also: {string.Join(" ", PeftMethods.All.Except(PeftMethods.Default).Select(m => m.Name))})", AllowMultipleArgumentsPerToken = true };
        var stopOnError = new Option<bool>("--stop-on-error") { Description = "Stop at the first failing run (default: go on, summarise the failures, report what finished)" };
        var command = new Command("suite", "Run tasks × methods (finished runs are skipped, interrupted ones resumed), then write the report.") { tasks, methods, stopOnError };
        train.AddTo(command);
        command.SetAction(r =>
        {
            string data = r.GetValue(train.Data) ?? throw new ArgumentException("--data: the folder of the task folders is required"), output = r.GetValue(train.Output)!;
            var taskNames = r.GetValue(tasks) is { Length: > 0 } given ? given : FindTasks(data);
            var methodNames = r.GetValue(methods) is { Length: > 0 } m ? m : [.. PeftMethods.Default.Select(d => d.Name)];
            foreach (var name in methodNames.Where(m => PeftMethods.Find(m) == null))
                throw new ArgumentException($"--methods: unknown method '{name}' (use {string.Join(", ", PeftMethods.Names)})");
            var choice = CheckpointChoice.Parse(r.GetValue(train.Weights));
            var families = methodNames.Select(m => PeftMethods.Get(m).CheckpointFamily).Distinct().ToList();
            if (choice.Single != null && families.Count > 1 && !r.GetValue(train.SameWeights))
                throw new ArgumentException($"--weights: one checkpoint for methods whose official runs start from different ones ({string.Join(", ",
                    methodNames.Select(m => $"{m}: {PeftMethods.Get(m).CheckpointFamily}"))}); give augreg=FILE original=FILE, run them as separate suites, " +
                    "or say --same-weights");
            var device = train.ResolveDevice(r);
            var runs = taskNames.SelectMany(t => methodNames.Select(m => new PlannedRun(t, m, resume => BuildConfig(r, train, t, m, requireWeights: !resume)))).ToList();
            var outcome = RunConsole.RunSuite(runs, output, device, train.Cache(r), r.GetValue(stopOnError));
            if (outcome.Interrupted) return 130;
            int code = RunConsole.WriteReport(output, output);
            return outcome.Failures.Count > 0 ? 1 : code;
        });
        return command;
    }

    static Command RecipeCommand()
    {
        var method = new Option<string>("--method") { Description = string.Join(", ", PeftMethods.Names), Required = true };
        method.AcceptOnlyFromAmong([.. PeftMethods.Names]);
        var task = new Option<string?>("--task") { Description = "A VTAB-1k task (default: the method's values without a task)" };
        var model = new Option<string>("--model") { Description = "The model (its family decides the normalisation)", DefaultValueFactory = _ => "vit_base_patch16_224" };
        var command = new Command("recipe", "Print every resolved value of a method's recipe on a task, with the official source of each, to audit a run before starting it.")
        {
            method, task, model,
        };
        command.SetAction(r =>
        {
            foreach (var line in RecipeReport.Lines(PeftMethods.Get(r.GetValue(method)!), r.GetValue(task), ImageModels.FamilyOf(r.GetValue(model)!)))
                Console.WriteLine(line);
            return 0;
        });
        return command;
    }

    static Command ReportCommand()
    {
        var runs = new Option<string>("--runs") { Description = "The runs folder (<runs>/<task>/<method>/result.json)", DefaultValueFactory = _ => "runs" };
        var output = new Option<string?>("--output") { Description = "Where to write report.md, results.csv and accuracy.svg (default: the runs folder)" };
        var command = new Command("report", "Print the results table (papers' column order, group means, published SSF/GPS beside ours) and write it as markdown, CSV and SVG.")
        {
            runs, output,
        };
        command.SetAction(r => RunConsole.WriteReport(r.GetValue(runs)!, r.GetValue(output) ?? r.GetValue(runs)!));
        return command;
    }

    /// <summary>Task folders under <paramref name="data"/>: VTAB-1k names in the papers' order, then other folders with
    /// a train800val200.txt, by name.</summary>
    static string[] FindTasks(string data)
    {
        if (!Directory.Exists(data)) throw new DirectoryNotFoundException($"--data {data}: no such folder");
        var present = Directory.GetDirectories(data).Select(Path.GetFileName).Where(n => File.Exists(Path.Combine(data, n!, "train800val200.txt"))).ToHashSet();
        var tasks = VtabTasks.All.Select(t => t.Name).Where(present.Contains).Concat(present.Where(n => VtabTasks.Find(n!) == null).Order(StringComparer.Ordinal)).ToArray();
        if (tasks.Length == 0) throw new InvalidInputException($"--data {data}", $"no task folder (a folder with train800val200.txt) found");
        return tasks!;
    }

    /// <summary>The class count: the VTAB-1k catalog's, else the task folder's task.json {"classes": N}.</summary>
    static int Classes(string taskFolder, string task)
    {
        if (VtabTasks.Find(task) is { } known) return known.Classes;
        string path = Path.Combine(taskFolder, "task.json");
        if (!File.Exists(path)) throw new InvalidInputException(taskFolder, $"'{task}' is not a VTAB-1k task and has no task.json giving its class count");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.TryGetProperty("classes", out var c) && c.TryGetInt32(out int n) && n > 0
            ? n : throw new InvalidInputException(path, $"expected {{\"classes\": N}} with N > 0");
    }

    static RunConfig BuildConfig(ParseResult r, TrainOptions train, string task, string method, bool requireWeights, string? dataFallback = null)
    {
        string data = r.GetValue(train.Data) ?? dataFallback ?? throw new ArgumentException("--data: the folder of the task folders is required to start a run");
        string folder = Path.GetFullPath(Path.Combine(data, task));
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"--task {task}: no folder {folder}");
        string? weights = CheckpointChoice.Parse(r.GetValue(train.Weights)).For(PeftMethods.Get(method));
        if (weights == null && requireWeights)
            throw new ArgumentException($"--weights: a pretrained checkpoint is required for {method} (its family: {PeftMethods.Get(method).CheckpointFamily}; " +
                                        "fine-tuning from scratch is not the VTAB protocol)");
        if (weights != null && !File.Exists(weights)) throw new FileNotFoundException($"--weights {weights}: no such file", weights);
        string model = r.GetValue(train.Model)!;
        return new RunConfig
        {
            Task = task, TaskFolder = folder, Classes = Classes(folder, task), Model = File.Exists(model) ? Path.GetFullPath(model) : model,
            Weights = weights == null ? null : Path.GetFullPath(weights), Recipe = train.Recipe(r, method, task),
            Precision = LowPrecision.Parse(r.GetValue(train.Precision)!), CudaGraph = r.GetValue(train.CudaGraph),
        };
    }

    static int Print(RunResult result)
    {
        Console.WriteLine($"{result.Task}/{result.Method}: final top-1 {result.FinalAccuracy:F2}%, best {result.BestAccuracy:F2}% (epoch {result.BestEpoch}) " +
                          $"on test; {result.TrainableParameters:N0} trainable parameters; {result.Seconds:F0} s");
        return 0;
    }
}

/// <summary><c>--weights</c>: one checkpoint for every method, or one per checkpoint family (<c>augreg=FILE original=FILE</c>).</summary>
sealed record CheckpointChoice(string? Single, IReadOnlyDictionary<string, string> ByFamily)
{
    static readonly string[] Families = ["augreg", "original"];

    public static CheckpointChoice Parse(string[]? values)
    {
        var byFamily = new Dictionary<string, string>(StringComparer.Ordinal);
        string? single = null;
        foreach (var v in values ?? [])
        {
            int eq = v.IndexOf('=');
            if (eq > 0 && Families.Contains(v[..eq])) byFamily[v[..eq]] = v[(eq + 1)..];
            else if (single == null) single = v;
            else throw new ArgumentException($"--weights: '{v}' is a second plain file; name the families instead (augreg=FILE original=FILE)");
        }
        if (single != null && byFamily.Count > 0) throw new ArgumentException("--weights: give one FILE for every method, or FAMILY=FILE pairs, not both");
        return new CheckpointChoice(single, byFamily);
    }

    /// <summary>The checkpoint for <paramref name="method"/>, or null when none was given for its family.</summary>
    public string? For(PeftMethodInfo method) => Single ?? ByFamily.GetValueOrDefault(method.CheckpointFamily);
}
