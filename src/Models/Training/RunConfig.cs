using System.Text.Json;
using System.Text.Json.Serialization;
using Engine.IO;
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

    /// <summary>JSON options shared by every run file: indented, enums by name.</summary>
    public static JsonSerializerOptions Json { get; } = new() { WriteIndented = true, Converters = { new JsonStringEnumConverter() } };

    /// <summary>Writes the config atomically.</summary>
    public void Save(string path) => AtomicFile.Write(path, s => JsonSerializer.Serialize(s, this, Json));

    /// <summary>Reads a config written by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid run config (the message names it).</exception>
    public static RunConfig Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<RunConfig>(File.ReadAllText(path), Json) ?? throw new JsonException("empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a valid run config ({e.Message})", e);
        }
    }
}
