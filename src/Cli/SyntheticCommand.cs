using System.CommandLine;
using Engine.Data;
using Engine.Kernels.Cpu;
using Engine.Models;
using Engine.Models.Peft;
using Engine.Models.Synthetic;
using Engine.Models.Training;
using Engine.Models.Vit;

namespace Engine.Cli;

/// <summary><c>peft synthetic</c>: the project's main job on any machine. Generates the synthetic VTAB-style tasks,
/// fine-tunes the shipped small pretrained ViT on each with every method, and prints the table.
/// <c>peft synthetic pretrain</c> reproduces the shipped model.</summary>
public static class SyntheticCommand
{
    /// <summary>The shipped pretrained model (config.json, weights.safetensors), relative to the repository root.</summary>
    public const string ShippedModel = "models/synthetic-vit";

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var output = new Option<string>("--output") { Description = "Folder for the generated tasks (data/) and the runs (runs/)", DefaultValueFactory = _ => "synthetic" };
        var modelDir = new Option<string>("--model-dir")
        {
            Description = "The pretrained model: a folder with config.json and weights.safetensors (ViT, Swin or ConvNeXt; shipped: " +
                          "models/synthetic-vit, models/synthetic-swin, models/synthetic-convnext)",
            DefaultValueFactory = _ => ShippedModel,
        };
        var epochs = new Option<int>("--epochs") { Description = "Fine-tuning epochs per run (1 warmup epoch, then cosine)", DefaultValueFactory = _ => DefaultEpochs };
        var tasks = new Option<string[]>("--tasks") { Description = $"Tasks (default: all: {string.Join(", ", SyntheticTasks.All.Select(t => t.Name))})", AllowMultipleArgumentsPerToken = true };
        var methods = new Option<string[]>("--methods") { Description = "Methods (default: linear full bias ssf sct gps; no sct for ConvNeXt)", AllowMultipleArgumentsPerToken = true };
        var lr = new Option<string[]>("--lr")
        {
            Description = "Learning rates per method, as METHOD=LR (default: full 1e-3, the others 3e-2); e.g. --lr ssf=0.01 gps=0.01",
            AllowMultipleArgumentsPerToken = true,
        };
        var threads = CommonOptions.Threads();
        var device = DeviceOption.Create();
        var command = new Command("synthetic", "The main job on any machine: generate seven VTAB-style tasks, fine-tune the shipped small pretrained ViT on each " +
                                               "with every method (durable runs: interrupted ones resume), and print the table. 'synthetic pretrain' remakes the model.")
        {
            output, modelDir, epochs, tasks, methods, lr, threads, device,
        };
        command.Subcommands.Add(PretrainCommand());
        command.SetAction(r =>
        {
            CpuParallel.Threads = r.GetValue(threads);
            return Run(r.GetValue(output)!, r.GetValue(modelDir)!, r.GetValue(epochs), r.GetValue(tasks), r.GetValue(methods), ParseRates(r.GetValue(lr)),
                r.GetValue(threads), r.GetValue(device)!);
        });
        return command;
    }

    static Dictionary<string, float> ParseRates(string[]? values)
    {
        var rates = new Dictionary<string, float>(StringComparer.Ordinal);
        foreach (var v in values ?? [])
        {
            var parts = v.Split('=');
            if (parts.Length != 2 || !PeftRecipe.Methods.Contains(parts[0]) ||
                !float.TryParse(parts[1], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out float rate) || !(rate > 0))
                throw new ArgumentException($"--lr: '{v}' is not METHOD=LR with a method of {string.Join(", ", PeftRecipe.Methods)} and LR > 0 (for example ssf=0.01)");
            rates[parts[0]] = rate;
        }
        return rates;
    }

    /// <summary>Fine-tuning epochs per run by default (sized so the whole suite takes about ten minutes on 2 cores).</summary>
    public const int DefaultEpochs = 15;

    /// <summary>The synthetic suite's recipe for a method: the method's optimizer and weight-decay rule from the papers'
    /// recipes, with a schedule and learning rates scaled to a short run of a small model.</summary>
    public static PeftRecipe Recipe(string method, int epochs) => PeftRecipe.For(method) with
    {
        Epochs = epochs, WarmupEpochs = 1, CooldownEpochs = 0, WarmupLearningRate = 1e-5f, MinLearningRate = 1e-5f, ScheduleLagsOneEpoch = false,
        BatchSize = 32, EvalEveryEpochs = 1, DropPath = 0f, LabelSmoothing = 0f, Normalization = "inception", Augment = false,
        LearningRate = method switch { "full" => 1e-3f, _ => 3e-2f },
        WeightDecay = method == "gps" ? 0f : 1e-4f,
        K = method switch { "sct" => 8, "gps" => 1, _ => 0 }, // SCT: 8 of 64 channels, the papers' 96 of 768
    };

    static int Run(string output, string modelDir, int epochs, string[]? taskNames, string[]? methodNames, Dictionary<string, float> rates,
        int threads, string deviceName)
    {
        string config = Path.Combine(modelDir, "config.json"), weights = Path.Combine(modelDir, "weights.safetensors");
        if (!File.Exists(config) || !File.Exists(weights))
            throw new FileNotFoundException($"--model-dir {modelDir}: needs config.json and weights.safetensors (run from the repository root, or make them with 'peft synthetic pretrain')");
        if (epochs < 1) throw new ArgumentException($"--epochs must be at least 1 (got {epochs})");
        var tasks = taskNames is { Length: > 0 } ? taskNames : [.. SyntheticTasks.All.Select(t => t.Name)];
        foreach (var t in tasks.Where(t => SyntheticTasks.All.All(s => s.Name != t)))
            throw new ArgumentException($"--tasks: unknown synthetic task '{t}' (known: {string.Join(", ", SyntheticTasks.All.Select(s => s.Name))})");
        bool hasSct = ImageModels.FamilyOf(config) != "convnext"; // SCT's sites: ViT's blocks and Swin's last stages
        var methods = methodNames is { Length: > 0 } ? methodNames : hasSct ? ["linear", "full", "bias", "ssf", "sct", "gps"] : ["linear", "full", "bias", "ssf", "gps"];
        if (!hasSct && methods.Contains("sct")) throw new ArgumentException($"--methods: SCT is defined for ViT and Swin only; {config} is a ConvNeXt");
        foreach (var m in methods.Where(m => !PeftRecipe.Methods.Contains(m)))
            throw new ArgumentException($"--methods: unknown method '{m}' (use {string.Join(", ", PeftRecipe.Methods)})");
        var device = DeviceOption.Resolve(deviceName);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string data = Path.Combine(output, "data"), runs = Path.Combine(output, "runs");
        Console.WriteLine($"synthetic suite: {tasks.Length} tasks × {methods.Length} methods, {epochs} epochs each, from {weights}, on {device}");
        SyntheticTasks.Write(data, log: line => Console.WriteLine($"  {line}"), tasks: tasks);
        var plan = tasks.SelectMany(t => methods.Select(m => (t, m, (Func<bool, RunConfig>)(_ => new RunConfig
        {
            Task = t, TaskFolder = Path.GetFullPath(Path.Combine(data, t)), Classes = SyntheticTasks.All.First(s => s.Name == t).Classes,
            Model = Path.GetFullPath(config), Weights = Path.GetFullPath(weights), Recipe = rates.TryGetValue(m, out float rate) ? Recipe(m, epochs) with { LearningRate = rate } : Recipe(m, epochs), EvalBatchSize = 250,
        })))).ToList();
        if (!VtabCommand.RunSuite(plan, runs, device, Path.Combine(output, "cache"), threads)) return 130;
        VtabCommand.WriteReport(runs, runs);
        Console.WriteLine(TransferVerdict(VtabReport.Collect(runs)));
        Console.WriteLine($"synthetic suite done in {clock.Elapsed.TotalMinutes:F1} min");
        return 0;
    }

    /// <summary>One honest line per method: its mean best accuracy over the structured tasks that linear probing ran,
    /// against linear probing's.</summary>
    public static string TransferVerdict(VtabReport report)
    {
        var structured = SyntheticTasks.All.Where(t => t.Group == VtabGroup.Structured).Select(t => t.Name).ToHashSet();
        var tasks = report.Results.Where(r => r.Method == "linear" && structured.Contains(r.Task)).Select(r => r.Task).ToHashSet();
        if (tasks.Count == 0) return "Structured tasks: no linear-probing run to compare with.";
        double? Mean(string method)
        {
            var values = report.Results.Where(r => r.Method == method && tasks.Contains(r.Task)).Select(r => r.BestAccuracy).ToList();
            return values.Count == tasks.Count ? values.Average() : null;
        }
        double linear = Mean("linear")!.Value;
        var lines = new List<string> { $"Structured tasks ({string.Join(", ", tasks.Order())}), mean best top-1: linear probing {linear:F1}%." };
        foreach (var method in new[] { "full", "bias", "ssf", "sct", "gps" })
            if (Mean(method) is double m)
                lines.Add($"  {method}: {m:F1}% ({m - linear:+0.0;-0.0} points): {(m > linear ? "beats" : "does NOT beat")} linear probing");
        return string.Join("\n", lines);
    }

    static Command PretrainCommand()
    {
        var output = new Option<string>("--output") { Description = "Folder for config.json and weights.safetensors", DefaultValueFactory = _ => ShippedModel };
        var model = new Option<string?>("--model")
        {
            Description = "The architecture: a preset or a JSON config with timm's field names (ViT, Swin or ConvNeXt; e.g. " +
                          "models/configs/synthetic-swin.json); default: the shipped ViT's (32×32, patch 8, width 64, depth 4)",
        };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps", DefaultValueFactory = _ => new SyntheticPretraining.Options().Steps };
        var batch = new Option<int>("--batch-size") { Description = "Images per step", DefaultValueFactory = _ => new SyntheticPretraining.Options().BatchSize };
        var lr = new Option<float>("--lr") { Description = "Peak AdamW learning rate", DefaultValueFactory = _ => new SyntheticPretraining.Options().LearningRate };
        var seed = new Option<ulong>("--seed") { Description = "Seed of everything", DefaultValueFactory = _ => new SyntheticPretraining.Options().Seed };
        var threads = CommonOptions.Threads();
        var device = DeviceOption.Create();
        var command = new Command("pretrain", $"Pretrain a small model on the synthetic source task ({SyntheticTasks.Source.Description}, {SyntheticTasks.Source.Classes} classes, " +
                                              "images generated on the fly) and write it; this is how the shipped models were made.")
        {
            output, model, steps, batch, lr, seed, threads, device,
        };
        command.SetAction(r =>
        {
            CpuParallel.Threads = r.GetValue(threads);
            var options = new SyntheticPretraining.Options { Steps = r.GetValue(steps), BatchSize = r.GetValue(batch), LearningRate = r.GetValue(lr), Seed = r.GetValue(seed) };
            if (options.Steps < 1 || options.BatchSize < 1) throw new ArgumentException("--steps and --batch-size must be at least 1");
            var dev = DeviceOption.Resolve(r.GetValue(device)!);
            string? architecture = r.GetValue(model);
            using IImageClassifier net = architecture == null
                ? new VisionTransformer(dev, SyntheticPretraining.Config, options.Seed)
                : ImageModels.Create(dev, architecture, SyntheticTasks.Source.Classes, seed: options.Seed);
            Console.WriteLine($"pretraining a {net.Family} ({architecture ?? "the shipped ViT config"}, {net.ImageSize}×{net.ImageSize}, {net.ParameterCount:N0} parameters) " +
                              $"for {options.Steps} steps of {options.BatchSize} on {dev}");
            double accuracy = SyntheticPretraining.Run(net, options, dev, Console.WriteLine);
            string dir = r.GetValue(output)!;
            Directory.CreateDirectory(dir);
            net.SaveConfig(Path.Combine(dir, "config.json"));
            net.Save(Path.Combine(dir, "weights.safetensors"));
            Console.WriteLine($"held-out source accuracy {accuracy:F1}%; wrote {dir}/config.json and {dir}/weights.safetensors");
            return 0;
        });
        return command;
    }
}
