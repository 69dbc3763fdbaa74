using System.Text.Json;
using System.Text.Json.Serialization;

namespace Engine.Models;

/// <summary>Model configs as JSON files with timm's field names (ViT, Swin, ConvNeXt).</summary>
static class ConfigFile
{
    /// <summary>Reads <paramref name="path"/> as a <typeparamref name="T"/>; unknown keys are errors (usually typos).</summary>
    /// <exception cref="ArgumentException">Not a valid <paramref name="kind"/> config; the message names the file.</exception>
    public static T Read<T>(string path, string kind) where T : class
    {
        var options = new JsonSerializerOptions { UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow };
        try
        {
            return JsonSerializer.Deserialize<T>(File.ReadAllText(path), options) ?? throw new JsonException("the file holds null");
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"{path}: not a valid {kind} config: {e.Message}");
        }
    }

    /// <summary>Writes <paramref name="config"/> to <paramref name="path"/> as indented JSON, atomically.</summary>
    public static void Write<T>(string path, T config) =>
        Engine.IO.AtomicFile.Write(path, s => JsonSerializer.Serialize(s, config, new JsonSerializerOptions { WriteIndented = true }));
}
