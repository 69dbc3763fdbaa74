using System.Text.Json;
using System.Text.Json.Serialization;
using Engine.IO;
using Engine.Kernels;
using Engine.Models.Peft;

namespace Engine.Models.Training;

/// <summary>
/// Everything that decides a fine-tuning run's result, written to the run folder's <c>config.json</c> when the run
/// starts and read back to resume it: the task, the model and its pretrained weights, and the method's recipe (with
/// any overrides already applied).
/// </summary>
public sealed record RunConfig
{
    /// <summary>The task's name (a VTAB-1k folder name, or a synthetic task's).</summary>
    public required string Task { get; init; }
    /// <summary>The task folder (absolute), holding the list files and images.</summary>
    public required string TaskFolder { get; init; }
    /// <summary>Number of classes (the head's size); labels must lie in [0, Classes).</summary>
    public required int Classes { get; init; }
    /// <summary>A ViT preset name or a config.json path.</summary>
    public required string Model { get; init; }
    /// <summary>The pretrained checkpoint (absolute), or null to start from the model's random initialisation.</summary>
    public string? Weights { get; init; }
    /// <summary>The method's recipe: optimizer, schedule, batch size, regularisation, selection size.</summary>
    public required PeftRecipe Recipe { get; init; }
    /// <summary>The split trained on (the papers: train800val200).</summary>
    public string TrainSplit { get; init; } = "train800val200";
    /// <summary>The split evaluated (the papers: test).</summary>
    public string TestSplit { get; init; } = "test";
    /// <summary>Images per evaluation batch.</summary>
    public int EvalBatchSize { get; init; } = 100;
    /// <summary>The format of the GEMMs' operands while training and evaluating (mixed precision, fp32 accumulation);
    /// fp16 trains with dynamic loss scaling.</summary>
    public Precision Precision { get; init; } = Precision.FP32;
    /// <summary>On a CUDA device, replay each training step (forward, loss, backward, AdamW) from a captured CUDA graph
    /// (<see cref="TrainStep.CudaGraph"/>); dropout and drop path then draw other masks than without it.</summary>
    public bool CudaGraph { get; init; }

    /// <summary>JSON options shared by every run file: indented, enums by name.</summary>
    public static JsonSerializerOptions Json { get; } = new() { WriteIndented = true, Converters = { new JsonStringEnumConverter() } };

    /// <summary>Writes the config atomically.</summary>
    public void Save(string path) => AtomicFile.Write(path, s => JsonSerializer.Serialize(s, this, Json));

    /// <summary>What is wrong with this config, one line each naming the field (empty when it is valid): the recipe's
    /// problems, a class count in [1, 10⁶], an evaluation batch ≥ 1, and split names that are plain file names (a split
    /// names the list file <c>&lt;split&gt;.txt</c> inside the task folder, never a path).</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (Recipe == null) problems.Add("Recipe is missing");
        else problems.AddRange(Recipe.Problems().Select(p => $"{nameof(Recipe)}.{p}"));
        if (Classes is < 1 or > 1_000_000) problems.Add($"{nameof(Classes)} {Classes} must lie in [1, 1000000]");
        if (EvalBatchSize is < 1 or > PeftRecipe.MaxBatchSize) problems.Add($"{nameof(EvalBatchSize)} {EvalBatchSize} must lie in [1, {PeftRecipe.MaxBatchSize}]");
        foreach (var (field, split) in new[] { (nameof(TrainSplit), TrainSplit), (nameof(TestSplit), TestSplit) })
            if (!IsPlainName(split)) problems.Add($"{field} '{split}' must be a plain name (no path separator, no '..')");
        if (string.IsNullOrEmpty(Task) || string.IsNullOrEmpty(TaskFolder) || string.IsNullOrEmpty(Model)) problems.Add("Task, TaskFolder and Model must be given");
        return problems;
    }

    /// <summary>True for a file name with no directory part, not <c>.</c> or <c>..</c>, no NUL.</summary>
    static bool IsPlainName(string? name) =>
        !string.IsNullOrEmpty(name) && name is not ("." or "..") && name.IndexOfAny(['/', '\\', '\0']) < 0;

    /// <summary>Throws <see cref="ArgumentException"/> listing <see cref="Problems"/> (a config about to start a run).</summary>
    public void Validate()
    {
        var problems = Problems();
        if (problems.Count > 0) throw new ArgumentException($"invalid run config: {string.Join("; ", problems)}");
    }

    /// <summary>Reads a config written by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidInputException">The file is not a valid run config (the message names it and the field).</exception>
    public static RunConfig Load(string path)
    {
        RunConfig? config;
        try
        {
            config = JsonSerializer.Deserialize<RunConfig>(File.ReadAllText(path), Json);
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(path, $"not a valid run config ({e.Message})", e);
        }
        if (config == null) throw new InvalidInputException(path, "empty run config");
        var problems = config.Problems();
        if (problems.Count > 0) throw new InvalidInputException(path, $"invalid run config: {string.Join("; ", problems)}");
        return config;
    }
}
