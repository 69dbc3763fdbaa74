using System.Text.Json;
using System.Text.Json.Serialization;
using Engine.IO;

namespace Engine.Models;

/// <summary>Model configs as JSON files with timm's field names (ViT, Swin, ConvNeXt).</summary>
static class ConfigFile
{
    /// <summary>The most parameters a config may describe (8.6·10⁹, far beyond this machine's memory): an absurd
    /// config is refused before anything is allocated.</summary>
    public const double MaxParameters = 1L << 33;

    /// <summary>Largest width, depth, head count, class count, stage count, image side and MLP ratio a config may hold.</summary>
    public const int MaxWidth = 1 << 16, MaxDepth = 1024, MaxClasses = 1_000_000, MaxStages = 8, MaxImageSide = 8192, MaxMlpRatio = 64;

    /// <summary>Reads <paramref name="path"/> as a <typeparamref name="T"/> (unknown keys are errors: usually typos) and
    /// checks it with <paramref name="validate"/>.</summary>
    /// <exception cref="InvalidInputException">Not a valid <paramref name="kind"/> config; the message names the file and the field.</exception>
    public static T Read<T>(string path, string kind, Func<T, string, T> validate) where T : class
    {
        var options = new JsonSerializerOptions { UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow };
        T config;
        try
        {
            config = JsonSerializer.Deserialize<T>(File.ReadAllText(path), options) ?? throw new JsonException("the file holds null");
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(path, $"not a valid {kind} config: {e.Message}", e);
        }
        try
        {
            return validate(config, path);
        }
        catch (ArgumentException e)
        {
            throw new InvalidInputException(path, e.Message.StartsWith(path + ": ", StringComparison.Ordinal) ? e.Message[(path.Length + 2)..] : e.Message, e);
        }
    }

    /// <summary>Throws unless the fields shared by every family are within bounds: the image, the channels, the classes,
    /// the MLP ratio and the estimated parameter count.</summary>
    public static void CheckBounds(string source, int imgSize, int inChans, int numClasses, float mlpRatio, double parameters)
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new ArgumentException($"{source}: {problem}");
        }
        Require(imgSize is > 0 and <= MaxImageSide, $"img_size {imgSize} must lie in [1, {MaxImageSide}]");
        Require(inChans is > 0 and <= 64, $"in_chans {inChans} must lie in [1, 64]");
        Require(numClasses is >= 0 and <= MaxClasses, $"num_classes {numClasses} must lie in [0, {MaxClasses}]");
        Require(float.IsFinite(mlpRatio) && mlpRatio is > 0 and <= MaxMlpRatio, $"mlp_ratio {mlpRatio} must lie in (0, {MaxMlpRatio}]");
        Require(parameters <= MaxParameters, $"describes about {parameters:G3} parameters, more than the {MaxParameters:G3} allowed");
    }

    /// <summary>Writes <paramref name="config"/> to <paramref name="path"/> as indented JSON, atomically.</summary>
    public static void Write<T>(string path, T config) =>
        Engine.IO.AtomicFile.Write(path, s => JsonSerializer.Serialize(s, config, new JsonSerializerOptions { WriteIndented = true }));
}
