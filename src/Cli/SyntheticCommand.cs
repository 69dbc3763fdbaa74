using Engine.Kernels;
using System.CommandLine;
using Engine.Data;
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
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var output = new Option<string>("--output") { Description = "Folder for the generated tasks (data/) and the runs (runs/)", DefaultValueFactory = _ => "synthetic" };
        var modelDir = new Option<string>("--model-dir")
        {
            Description = "The pretrained model: a folder with config.json and weights.safetensors (ViT, Swin or ConvNeXt; shipped: " +
                          "models/synthetic-vit, models/synthetic-swin, models/synthetic-convnext)",
            DefaultValueFactory = _ => SyntheticSuite.ShippedModel,
        };
        var epochs = new Option<int>("--epochs") { Description = "Fine-tuning epochs per run (1 warmup epoch, then cosine)", DefaultValueFactory = _ => SyntheticSuite.DefaultEpochs }.AtLeast(1);
        var tasks = new Option<string[]>("--tasks") { Description = $"Tasks (default: all: {string.Join(", ", SyntheticTasks.All.Select(t => t.Name))})", AllowMultipleArgumentsPerToken = true };
        var methods = new Option<string[]>("--methods")
        {
            Description = $"Methods (default: {string.Join(" ", SyntheticSuite.Methods("vit").Select(m => m.Name))}; no sct for ConvNeXt; also: " +
                          $"{string.Join(" ", PeftMethods.All.Except(PeftMethods.Default).Select(m => m.Name))})",
            AllowMultipleArgumentsPerToken = true,
        };
        var lr = new Option<string[]>("--lr")
        {
            Description = $"Learning rates per method, as METHOD=LR (default: {string.Join(", ", PeftMethods.All.Select(m => $"{m.Name} {m.Synthetic.LearningRate:G3}"))}); e.g. --lr ssf=0.01 gps=0.01",
            AllowMultipleArgumentsPerToken = true,
        }.PerMethod(v => double.IsFinite(v) && v > 0, "must be a finite number above 0", allowPlain: false, "ssf=0.01");
        var device = DeviceOption.Create();
        var precision = CommonOptions.Precision();
        var cudaGraph = CommonOptions.CudaGraph();
        var methodSettings = new MethodOptions();
        var command = new Command("synthetic", "The main job on any machine: generate seven VTAB-style tasks, fine-tune the shipped small pretrained ViT on each " +
                                               "with every method (durable runs: interrupted ones resume), and print the table. 'synthetic pretrain' remakes the model.")
        {
            output, modelDir, epochs, tasks, methods, lr, device, precision, cudaGraph,
        };
        methodSettings.AddTo(command);
        command.Subcommands.Add(PretrainCommand());
        command.SetAction(r => Run(r.GetValue(output)!, r.GetValue(modelDir)!, r.GetValue(epochs), r.GetValue(tasks), r.GetValue(methods),
            ParseRates(r.GetValue(lr)), r.GetValue(device)!, LowPrecision.Parse(r.GetValue(precision)!), r.GetValue(cudaGraph),
            recipe => methodSettings.Apply(r, recipe)));
        return command;
    }

    static Dictionary<string, float> ParseRates(string[]? values) =>
        CommonOptions.ParsePerMethod("--lr", values, v => double.IsFinite(v) && v > 0, "must be a finite number above 0", allowPlain: false, "ssf=0.01")
            .ByMethod.ToDictionary(p => p.Key, p => (float)p.Value);

    static int Run(string output, string modelDir, int epochs, string[]? taskNames, string[]? methodNames, Dictionary<string, float> rates, string deviceName,
        Precision precision, bool cudaGraph, Func<PeftRecipe, PeftRecipe> methodOptions)
    {
        string config = Path.Combine(modelDir, "config.json"), weights = Path.Combine(modelDir, "weights.safetensors");
        if (!File.Exists(config) || !File.Exists(weights))
            throw new FileNotFoundException($"--model-dir {modelDir}: needs config.json and weights.safetensors (run from the repository root, or make them with 'peft synthetic pretrain')");
        if (epochs < 1) throw new ArgumentException($"--epochs must be at least 1 (got {epochs})");
        var tasks = taskNames is { Length: > 0 } ? taskNames : [.. SyntheticTasks.All.Select(t => t.Name)];
        foreach (var t in tasks.Where(t => SyntheticTasks.All.All(s => s.Name != t)))
            throw new ArgumentException($"--tasks: unknown synthetic task '{t}' (known: {string.Join(", ", SyntheticTasks.All.Select(s => s.Name))})");
        string family = ImageModels.FamilyOf(config);
        foreach (var m in (methodNames ?? []).Where(m => PeftMethods.Find(m) == null))
            throw new ArgumentException($"--methods: unknown method '{m}' (use {string.Join(", ", PeftMethods.Names)})");
        var methods = methodNames is { Length: > 0 } ? [.. methodNames.Select(PeftMethods.Get)] : SyntheticSuite.Methods(family);
        foreach (var m in methods.Where(m => !m.AppliesTo(family)))
            throw new ArgumentException($"--methods: {m.Title} is defined for {string.Join(" and ", m.Families.Select(ImageModels.FamilyTitle))} only; {config} is a {ImageModels.FamilyTitle(family)}");
        var device = DeviceOption.Resolve(deviceName);
        if (cudaGraph && device is not CudaDevice)
            throw new ArgumentException($"--cuda-graph: needs a CUDA device (--device cuda or emulated-cuda), not {device.Name}");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string data = Path.Combine(output, "data"), runs = Path.Combine(output, "runs");
        Console.WriteLine($"synthetic suite: {tasks.Length} tasks × {methods.Count} methods, {epochs} epochs each, from {weights}, on {device}" +
                          (precision == Precision.FP32 ? "" : $", GEMM operands in {precision.Name()}"));
        SyntheticTasks.Write(data, log: line => Console.WriteLine($"  {line}"), tasks: tasks);
        var plan = tasks.SelectMany(t => methods.Select(m => new PlannedRun(t, m.Name, _ => new RunConfig
        {
            Task = t, TaskFolder = Path.GetFullPath(Path.Combine(data, t)), Classes = SyntheticTasks.All.First(s => s.Name == t).Classes,
            Model = Path.GetFullPath(config), Weights = Path.GetFullPath(weights), EvalBatchSize = 250,
            Recipe = methodOptions(SyntheticSuite.Recipe(m, epochs, family)) with { LearningRate = rates.TryGetValue(m.Name, out float rate) ? rate : m.Synthetic.LearningRate },
            Precision = precision, CudaGraph = cudaGraph,
        }))).ToList();
        var outcome = RunConsole.RunSuite(plan, runs, device, Path.Combine(output, "cache"), stopOnError: false);
        if (outcome.Interrupted) return 130;
        RunConsole.WriteReport(runs, runs);
        Console.WriteLine(SyntheticSuite.TransferVerdict(VtabReport.Collect(runs)));
        Console.WriteLine($"synthetic suite done in {clock.Elapsed.TotalMinutes:F1} min");
        return outcome.Failures.Count > 0 ? 1 : 0;
    }

    static Command PretrainCommand()
    {
        var output = new Option<string>("--output") { Description = "Folder for config.json and weights.safetensors", DefaultValueFactory = _ => SyntheticSuite.ShippedModel };
        var model = new Option<string?>("--model")
        {
            Description = "The architecture: a preset or a JSON config with timm's field names (ViT, Swin or ConvNeXt; e.g. " +
                          "models/configs/synthetic-swin.json); default: the shipped ViT's (32×32, patch 8, width 64, depth 4)",
        };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps", DefaultValueFactory = _ => new SyntheticPretraining.Options().Steps }.AtLeast(1);
        var batch = new Option<int>("--batch-size") { Description = "Images per step", DefaultValueFactory = _ => new SyntheticPretraining.Options().BatchSize }.AtLeast(1);
        var lr = new Option<float>("--lr") { Description = "Peak AdamW learning rate", DefaultValueFactory = _ => new SyntheticPretraining.Options().LearningRate }.Positive();
        var seed = new Option<ulong>("--seed") { Description = "Seed of everything", DefaultValueFactory = _ => new SyntheticPretraining.Options().Seed };
        var device = DeviceOption.Create();
        var command = new Command("pretrain", $"Pretrain a small model on the synthetic source task ({SyntheticTasks.Source.Description}, {SyntheticTasks.Source.Classes} classes, " +
                                              "images generated on the fly) and write it; this is how the shipped models were made.")
        {
            output, model, steps, batch, lr, seed, device,
        };
        command.SetAction(r =>
        {
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
