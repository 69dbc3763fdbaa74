using System.Text.Json;
using Engine.Checkpoints;
using Engine.IO;
using Engine.Models.ConvNeXt;
using Engine.Models.Peft;
using Engine.Models.Swin;
using Engine.Models.Vit;

namespace Engine.Models;

/// <summary>An image classifier the training, evaluation and synthetic commands drive: ViT, Swin or ConvNeXt.</summary>
public interface IImageClassifier : IPeftModel, IDisposable
{
    /// <summary>The architecture's family: <c>vit</c>, <c>swin</c> or <c>convnext</c>.</summary>
    string Family { get; }

    /// <summary>Input side (square) and channels: images are [B, InChannels, ImageSize, ImageSize].</summary>
    int ImageSize { get; }

    /// <inheritdoc cref="ImageSize"/>
    int InChannels { get; }

    /// <summary>Total number of parameter elements.</summary>
    long ParameterCount { get; }

    /// <summary>Logits [B, classes]; a <paramref name="trainSeed"/> turns on dropout and stochastic depth, null is eval mode.</summary>
    Tensor Forward(Tensor images, ulong? trainSeed = null);

    /// <summary>Loads a checkpoint in any format the model reads.</summary>
    LoadReport Load(string path, LoadMode mode = LoadMode.Strict);

    /// <summary>Writes every parameter to a .safetensors file under its timm key (atomically).</summary>
    void Save(string path);

    /// <summary>Writes the model's config as JSON (timm's field names), which <see cref="ImageModels.Create"/> reads back.</summary>
    void SaveConfig(string path);
}

/// <summary>
/// Builds any of the three families from a preset name (<c>vit_base_patch16_224</c>, <c>swin_base_patch4_window7_224</c>,
/// <c>convnext_base</c>, ...) or a JSON config with timm's field names. A JSON config's family follows from its
/// fields: <c>window_size</c> is Swin's, <c>dims</c> ConvNeXt's, anything else is read as a ViT config.
/// </summary>
public static class ImageModels
{
    /// <summary>Every preset name, by family.</summary>
    public static IEnumerable<string> Presets => VitConfig.Presets.Keys.Concat(SwinConfig.Presets.Keys).Concat(ConvNeXtConfig.Presets.Keys);

    /// <summary>A family as prose writes it: <c>vit</c> → ViT, <c>swin</c> → Swin, <c>convnext</c> → ConvNeXt.</summary>
    public static string FamilyTitle(string family) => family switch { "vit" => "ViT", "swin" => "Swin", "convnext" => "ConvNeXt", _ => family };

    /// <summary>The family of a preset or JSON config (<c>vit</c>, <c>swin</c>, <c>convnext</c>).</summary>
    /// <exception cref="ArgumentException">Neither a preset nor an existing file.</exception>
    /// <exception cref="InvalidInputException">The file is not a JSON object.</exception>
    public static string FamilyOf(string presetOrPath)
    {
        if (VitConfig.Presets.ContainsKey(presetOrPath)) return "vit";
        if (SwinConfig.Presets.ContainsKey(presetOrPath)) return "swin";
        if (ConvNeXtConfig.Presets.ContainsKey(presetOrPath)) return "convnext";
        if (!File.Exists(presetOrPath))
            throw new ArgumentException($"'{presetOrPath}' is neither a model preset ({string.Join(", ", Presets)}) nor an existing config file");
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllText(presetOrPath));
            if (json.RootElement.ValueKind != JsonValueKind.Object) throw new JsonException("not a JSON object");
            return json.RootElement.TryGetProperty("window_size", out _) ? "swin" : json.RootElement.TryGetProperty("dims", out _) ? "convnext" : "vit";
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(presetOrPath, $"not a valid model config: {e.Message}", e);
        }
    }

    /// <summary>The head size of a checkpoint for the model <paramref name="presetOrPath"/> names: the rows of its
    /// <c>head.weight</c> (ViT, Swin, original keys) or <c>head.fc.weight</c> (timm's Swin and ConvNeXt); 0 when it has no head.</summary>
    public static int HeadClasses(string presetOrPath, string checkpointPath)
    {
        if (FamilyOf(presetOrPath) == "vit") return VisionTransformer.HeadClasses(checkpointPath);
        using var checkpoint = Checkpoint.Open(checkpointPath);
        var head = checkpoint.Entries.FirstOrDefault(e => e.Name is "head.weight" or "head.fc.weight");
        return head is { Shape.Length: 2 } ? head.Shape[0] : 0;
    }

    /// <summary>Builds the model of <paramref name="presetOrPath"/> with its head resized to <paramref name="numClasses"/>
    /// (null keeps the config's) and stochastic depth <paramref name="dropPath"/> (null keeps the config's).</summary>
    public static IImageClassifier Create(Device device, string presetOrPath, int? numClasses = null, float? dropPath = null, ulong seed = 0)
    {
        switch (FamilyOf(presetOrPath))
        {
            case "swin":
                var swin = SwinConfig.Resolve(presetOrPath);
                return new Swin.Swin(device, swin with { num_classes = numClasses ?? swin.num_classes, drop_path_rate = dropPath ?? swin.drop_path_rate }, seed);
            case "convnext":
                var convnext = ConvNeXtConfig.Resolve(presetOrPath);
                return new ConvNeXt.ConvNeXt(device, convnext with { num_classes = numClasses ?? convnext.num_classes, drop_path_rate = dropPath ?? convnext.drop_path_rate }, seed);
            default:
                var vit = VitConfig.Resolve(presetOrPath);
                return new VisionTransformer(device, vit with { num_classes = numClasses ?? vit.num_classes, drop_path_rate = dropPath ?? vit.drop_path_rate }, seed);
        }
    }
}
