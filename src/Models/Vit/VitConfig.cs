using System.Text.Json;

namespace Engine.Models.Vit;

/// <summary>
/// Configuration of <see cref="VisionTransformer"/>. Field names are timm's <c>VisionTransformer</c> constructor
/// arguments, so a JSON file with those keys loads directly (<see cref="FromJson"/>); defaults are timm's.
/// </summary>
public sealed record VitConfig
{
    /// <summary>Input image side in pixels (square images).</summary>
    public int img_size { get; init; } = 224;
    /// <summary>Patch side; the patch embedding is a conv with kernel = stride = patch_size.</summary>
    public int patch_size { get; init; } = 16;
    /// <summary>Input channels.</summary>
    public int in_chans { get; init; } = 3;
    /// <summary>Classifier outputs; 0 means no head (the forward returns the pooled features).</summary>
    public int num_classes { get; init; } = 1000;
    /// <summary>Width of the residual stream.</summary>
    public int embed_dim { get; init; } = 768;
    /// <summary>Number of transformer blocks.</summary>
    public int depth { get; init; } = 12;
    /// <summary>Attention heads per block.</summary>
    public int num_heads { get; init; } = 12;
    /// <summary>MLP hidden width as a multiple of embed_dim.</summary>
    public float mlp_ratio { get; init; } = 4f;
    /// <summary>Whether qkv has a bias.</summary>
    public bool qkv_bias { get; init; } = true;
    /// <summary>Dropout before the head (timm's head_drop).</summary>
    public float drop_rate { get; init; }
    /// <summary>Dropout after adding the position embedding.</summary>
    public float pos_drop_rate { get; init; }
    /// <summary>Dropout after the attention projection and after each MLP linear.</summary>
    public float proj_drop_rate { get; init; }
    /// <summary>Stochastic depth rate of the last block; block i uses drop_path_rate·i/(depth−1) (timm's linear rule).</summary>
    public float drop_path_rate { get; init; }

    /// <summary>MLP hidden width (timm: int(embed_dim · mlp_ratio)).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int MlpHidden => (int)(embed_dim * mlp_ratio);

    /// <summary>Tokens per image, class token included.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int Tokens => (img_size / patch_size) * (img_size / patch_size) + 1;

    /// <summary>The timm presets by name.</summary>
    public static IReadOnlyDictionary<string, VitConfig> Presets { get; } = new Dictionary<string, VitConfig>
    {
        ["vit_tiny_patch16_224"] = new() { embed_dim = 192, depth = 12, num_heads = 3 },
        ["vit_small_patch16_224"] = new() { embed_dim = 384, depth = 12, num_heads = 6 },
        ["vit_base_patch16_224"] = new() { embed_dim = 768, depth = 12, num_heads = 12 },
    };

    /// <summary>A preset name or the path of a JSON config file.</summary>
    /// <exception cref="ArgumentException">Neither a preset nor a readable, valid config file.</exception>
    public static VitConfig Resolve(string presetOrPath)
    {
        if (Presets.TryGetValue(presetOrPath, out var preset)) return preset;
        if (File.Exists(presetOrPath)) return FromJson(presetOrPath);
        throw new ArgumentException($"'{presetOrPath}' is neither a ViT preset ({string.Join(", ", Presets.Keys)}) nor an existing config file");
    }

    /// <summary>Reads a JSON object with timm's field names; unknown keys are errors (they are usually typos).</summary>
    public static VitConfig FromJson(string path) => ConfigFile.Read<VitConfig>(path, "ViT", (c, source) => c.Validate(source));

    /// <summary>Writes the config as JSON with timm's field names (readable by <see cref="FromJson"/>), atomically.</summary>
    public void Save(string path) => ConfigFile.Write(path, this);

    /// <summary>Checks the fields are consistent; <paramref name="source"/> names the config in the error.</summary>
    public VitConfig Validate(string source = "ViT config")
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new ArgumentException($"{source}: {problem}");
        }
        Require(embed_dim is > 0 and <= ConfigFile.MaxWidth && depth is >= 0 and <= ConfigFile.MaxDepth,
            $"embed_dim {embed_dim} and depth {depth} must lie in [1, {ConfigFile.MaxWidth}] and [0, {ConfigFile.MaxDepth}]");
        ConfigFile.CheckBounds(source, img_size, in_chans, num_classes, mlp_ratio, (double)depth * embed_dim * embed_dim * (4 + 2 * mlp_ratio));
        Require(img_size > 0 && patch_size > 0 && img_size % patch_size == 0, $"img_size {img_size} must be a positive multiple of patch_size {patch_size}");
        Require(in_chans > 0 && embed_dim > 0 && depth >= 0 && num_classes >= 0, "in_chans and embed_dim must be positive, depth and num_classes non-negative");
        Require(num_heads > 0 && embed_dim % num_heads == 0, $"embed_dim {embed_dim} must be divisible by num_heads {num_heads}");
        Require(MlpHidden > 0, $"mlp_ratio {mlp_ratio} gives no MLP hidden units");
        foreach (var (name, rate) in new[] { ("drop_rate", drop_rate), ("pos_drop_rate", pos_drop_rate), ("proj_drop_rate", proj_drop_rate), ("drop_path_rate", drop_path_rate) })
            Require(rate is >= 0f and < 1f, $"{name} {rate} must be in [0, 1)");
        return this;
    }
}
