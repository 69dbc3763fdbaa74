using System.CommandLine;
using Engine.Models;
using Engine.Models.Vit;

namespace Engine.Cli;

/// <summary>Options several commands share, so their names, help and defaults cannot drift apart.</summary>
public static class CommonOptions
{
    /// <summary><c>--model</c>: a ViT preset or a JSON config (required); <paramref name="anyFamily"/>: Swin and ConvNeXt too.</summary>
    public static Option<string> Model(bool anyFamily = true) => new("--model")
    {
        Description = $"A {(anyFamily ? "ViT, Swin or ConvNeXt" : "ViT")} preset ({string.Join(", ", anyFamily ? ImageModels.Presets : VitConfig.Presets.Keys)}) " +
                      "or a JSON config with timm's field names",
        Required = true,
    };

    /// <summary><c>--threads</c>: CPU threads, all by default.</summary>
    public static Option<int> Threads() => new("--threads") { Description = "CPU threads (default: all)", DefaultValueFactory = _ => Environment.ProcessorCount };
}
