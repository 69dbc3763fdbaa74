using System.CommandLine;
using System.Globalization;
using Engine.Models;
using Engine.Models.Peft;

namespace Engine.Cli;

/// <summary>Options several commands share, so their names, help and defaults cannot drift apart.</summary>
public static class CommonOptions
{
    /// <summary><c>--model</c>: a ViT, Swin or ConvNeXt preset or a JSON config (required).</summary>
    public static Option<string> Model() => new("--model")
    {
        Description = $"A ViT, Swin or ConvNeXt preset ({string.Join(", ", ImageModels.Presets)}) or a JSON config with timm's field names",
        Required = true,
    };

    /// <summary><c>--precision</c>: the GEMM operand precision of a training run (<see cref="Engine.Kernels.Precision"/>).</summary>
    public static Option<string> Precision() => new Option<string>("--precision")
    {
        Description = "Mixed precision: the format of the GEMMs' operands (fp32 accumulation; everything else fp32): fp32, tf32, " +
                      "bf16 (fp32's range, 8-bit significand) or fp16 (trained with dynamic loss scaling)",
        DefaultValueFactory = _ => "fp32",
    }.AcceptOnlyFromAmong("fp32", "tf32", "bf16", "fp16");

    /// <summary><c>--cuda-graph</c>: replay training steps from a CUDA graph (<see cref="Engine.Models.Training.TrainStep.CudaGraph"/>).</summary>
    public static Option<bool> CudaGraph() => new("--cuda-graph")
    {
        Description = "On a CUDA device: capture a training step (forward, loss, backward, AdamW) once and replay it as one CUDA graph " +
                      "(one launch per step instead of one per kernel; dropout and drop path draw new masks at every replay)",
    };

    /// <summary><c>--stage-k</c>: SCT's K for the blocks of named stages, as STAGE=K.</summary>
    public static Option<string[]> StageK() => new("--stage-k")
    {
        Description = "SCT's K for one stage's blocks, as STAGE=K (Swin: --stage-k layers.2=64 layers.3=128); other blocks use --k",
        AllowMultipleArgumentsPerToken = true,
    };

    /// <summary>Parses <see cref="StageK"/>'s values; null when none were given.</summary>
    /// <exception cref="ArgumentException">A value is not STAGE=K with K ≥ 1.</exception>
    public static Dictionary<string, int>? ParseStageK(string[]? values)
    {
        if (values is not { Length: > 0 }) return null;
        var byStage = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var v in values)
        {
            var parts = v.Split('=');
            if (parts.Length != 2 || parts[0].Length == 0 || !int.TryParse(parts[1], out int k) || k < 1)
                throw new ArgumentException($"--stage-k: '{v}' is not STAGE=K with K ≥ 1 (for example layers.3=128)");
            byStage[parts[0]] = k;
        }
        return byStage;
    }

    /// <summary><c>--threads</c>: CPU threads for kernels and image decoding, all by default; a global option, applied once
    /// by <see cref="ApplyThreads"/> before any command runs.</summary>
    public static Option<int> Threads { get; } = new Option<int>("--threads")
    {
        Description = "CPU threads for kernels and image decoding", DefaultValueFactory = _ => Environment.ProcessorCount, Recursive = true,
    }.AtLeast(1);

    /// <summary><c>--verbose</c>: say more about the set-up (which device was chosen and why); a global option.</summary>
    public static Option<bool> Verbose { get; } = new("--verbose") { Description = "Say which device was chosen and why", Recursive = true };

    /// <summary>True when <see cref="Verbose"/> was given (set once the command line is parsed).</summary>
    public static bool IsVerbose { get; private set; }

    /// <summary>Applies the global options: <see cref="Threads"/> and <see cref="Verbose"/>.</summary>
    public static void ApplyGlobals(ParseResult parse)
    {
        ApplyThreads(parse);
        IsVerbose = parse.GetValue(Verbose);
    }

    /// <summary>Sets the engine's CPU thread count from <see cref="Threads"/> (at least 1: checked while parsing).</summary>
    public static void ApplyThreads(ParseResult parse) => Engine.Kernels.Cpu.CpuParallel.Threads = parse.GetValue(Threads);

    /// <summary>Refuses an output path that is one of the command's input files (the same file by path or through a
    /// link), or whose folder does not exist, before any work is done.</summary>
    /// <exception cref="ArgumentException">Names both options.</exception>
    public static void RequireSeparateOutput(string outputOption, string output, params (string Option, string? Path)[] inputs)
    {
        string target = Resolve(output);
        foreach (var (option, path) in inputs)
            if (path != null && (File.Exists(path) || Directory.Exists(path)) && Resolve(path) == target)
                throw new ArgumentException($"{outputOption} {output} is the {option} input: writing it would destroy it; choose another {outputOption}");
        string? folder = Path.GetDirectoryName(Path.GetFullPath(output));
        if (folder != null && !Directory.Exists(folder)) throw new ArgumentException($"{outputOption} {output}: the folder {folder} does not exist");
        if (Directory.Exists(output)) throw new ArgumentException($"{outputOption} {output} is a folder; give a file name");
    }

    // The full path with every link resolved (an output that does not exist yet is its full path).
    static string Resolve(string path)
    {
        var info = new FileInfo(Path.GetFullPath(path));
        return (info.Exists ? info.ResolveLinkTarget(returnFinalTarget: true)?.FullName : null) ?? info.FullName;
    }

    /// <summary>
    /// Parses an option's values given per method as METHOD=VALUE (for example <c>--k sct=8 gps=1</c>), or, when
    /// <paramref name="allowPlain"/>, one plain VALUE for every method. Returns the plain value (or null) and the
    /// per-method values.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown method, a malformed pair or a value that breaks the rule; the
    /// message names the option.</exception>
    public static (double? All, Dictionary<string, double> ByMethod) ParsePerMethod(string option, string[]? values, Func<double, bool> ok,
        string rule, bool allowPlain, string example)
    {
        double? all = null;
        var byMethod = new Dictionary<string, double>(StringComparer.Ordinal);
        string form = allowPlain ? "VALUE or METHOD=VALUE" : "METHOD=VALUE";
        foreach (var v in values ?? [])
        {
            var parts = v.Split('=');
            string text = parts[^1];
            if (parts.Length > 2 || (parts.Length == 1 && !allowPlain) || (parts.Length == 2 && PeftMethods.Find(parts[0]) == null) ||
                !double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
                throw new ArgumentException($"{option}: '{v}' is not {form} with a method of {string.Join(", ", PeftMethods.Names)} (for example {example})");
            if (!ok(value)) throw new ArgumentException($"{option}: '{v}': the value {rule}");
            if (parts.Length == 1) all = value;
            else byMethod[parts[0]] = value;
        }
        return (all, byMethod);
    }
}

/// <summary>The settings of the baselines that take any (LoRA: <c>--lora-rank</c>, <c>--lora-alpha</c>,
/// <c>--lora-dropout</c>, <c>--lora-targets</c>; Adapter and AdaptFormer: <c>--adapter-bottleneck</c>,
/// <c>--adapter-scale</c>, <c>--adapter-dropout</c>; VPT-deep: <c>--vpt-length</c>, <c>--vpt-dropout</c>) on the command line, applied to the recipes of those methods' runs;
/// other methods ignore them.</summary>
public sealed class MethodOptions
{
    readonly Option<int?> _rank = new Option<int?>("--lora-rank") { Description = "LoRA: rank r of each low-rank path (default 8)" }.AtLeast(1);
    readonly Option<float?> _alpha = new Option<float?>("--lora-alpha") { Description = "LoRA: the path is scaled by alpha / r (default 8)" }.Positive();
    readonly Option<float?> _dropout = new Option<float?>("--lora-dropout") { Description = "LoRA: dropout on the path's input in training (default 0)" }.Fraction();
    readonly Option<string[]> _targets = new("--lora-targets")
    {
        Description = "LoRA: the Linear layers it adapts, by name or its tail, with qkv slices in brackets (default: attn.qkv[q,v]; " +
                      "ConvNeXt, which has no attention: mlp.fc1 mlp.fc2); e.g. --lora-targets 'attn.qkv[q,v]' mlp.fc1",
        AllowMultipleArgumentsPerToken = true,
    };
    readonly Option<int?> _bottleneck = new Option<int?>("--adapter-bottleneck") { Description = "Adapter / AdaptFormer: the bottleneck's width (default 8 / 64)" }.AtLeast(1);
    readonly Option<float?> _scale = new Option<float?>("--adapter-scale") { Description = "Adapter / AdaptFormer: factor on the adapter's output (default 1 / 0.1)" }.Positive();
    readonly Option<float?> _adapterDropout = new Option<float?>("--adapter-dropout") { Description = "Adapter / AdaptFormer: dropout after the activation in training (default 0.1)" }.Fraction();
    readonly Option<int?> _vptLength = new Option<int?>("--vpt-length") { Description = "VPT-deep: prompt tokens per block (default 50)" }.AtLeast(1);
    readonly Option<float?> _vptDropout = new Option<float?>("--vpt-dropout") { Description = "VPT-deep: dropout on the prompts in training (default 0.1)" }.Fraction();

    /// <summary>Adds the options to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { _rank, _alpha, _dropout, _targets, _bottleneck, _scale, _adapterDropout, _vptLength, _vptDropout })
            command.Options.Add(option);
    }

    /// <summary><paramref name="recipe"/> with the options given applied to its LoRA, adapter or VPT settings (unchanged
    /// for other methods).</summary>
    /// <exception cref="ArgumentException">The resulting settings are invalid; the message names the value.</exception>
    public PeftRecipe Apply(ParseResult r, PeftRecipe recipe)
    {
        if (recipe.Lora is { } lora)
        {
            lora = lora with
            {
                Rank = r.GetValue(_rank) ?? lora.Rank, Alpha = r.GetValue(_alpha) ?? lora.Alpha, Dropout = r.GetValue(_dropout) ?? lora.Dropout,
                Targets = r.GetValue(_targets) is { Length: > 0 } targets ? targets : lora.Targets,
            };
            if (lora.Problems() is [var first, ..]) throw new ArgumentException($"--lora-*: {first}");
            recipe = recipe with { Lora = lora };
        }
        if (recipe.Adapter is { } adapter)
        {
            adapter = new AdapterSettings(r.GetValue(_bottleneck) ?? adapter.Bottleneck, r.GetValue(_scale) ?? adapter.Scale,
                r.GetValue(_adapterDropout) ?? adapter.Dropout);
            if (adapter.Problems() is [var first, ..]) throw new ArgumentException($"--adapter-*: {first}");
            recipe = recipe with { Adapter = adapter };
        }
        if (recipe.Vpt is { } vpt)
        {
            vpt = new VptSettings(r.GetValue(_vptLength) ?? vpt.Length, r.GetValue(_vptDropout) ?? vpt.Dropout);
            if (vpt.Problems() is [var first, ..]) throw new ArgumentException($"--vpt-*: {first}");
            recipe = recipe with { Vpt = vpt };
        }
        return recipe;
    }
}
