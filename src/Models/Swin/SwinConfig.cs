namespace Engine.Models.Swin;

/// <summary>
/// timm's <c>SwinTransformer</c> constructor arguments (field names kept): a p×p patch embedding with norm, stages of
/// window-attention blocks with widths embed_dim·2^s, 2×2 patch merging at the start of every stage after the first,
/// final norm, average pool, head.
/// </summary>
public sealed record SwinConfig
{
    /// <summary>Input image side (square).</summary>
    public int img_size { get; init; } = 224;
    /// <summary>Patch side of the embedding convolution (kernel = stride).</summary>
    public int patch_size { get; init; } = 4;
    /// <summary>Input channels.</summary>
    public int in_chans { get; init; } = 3;
    /// <summary>Classifier outputs (0: the pooled, normalised features).</summary>
    public int num_classes { get; init; } = 1000;
    /// <summary>Width of the first stage; stage s has embed_dim·2^s channels.</summary>
    public int embed_dim { get; init; } = 96;
    /// <summary>Blocks per stage.</summary>
    public int[] depths { get; init; } = [2, 2, 6, 2];
    /// <summary>Attention heads per stage.</summary>
    public int[] num_heads { get; init; } = [3, 6, 12, 24];
    /// <summary>Window side; a stage whose grid is no larger uses its whole grid as one window and never shifts.</summary>
    public int window_size { get; init; } = 7;
    /// <summary>MLP hidden width as a multiple of the stage width.</summary>
    public float mlp_ratio { get; init; } = 4f;
    /// <summary>Whether qkv has a bias.</summary>
    public bool qkv_bias { get; init; } = true;
    /// <summary>Stochastic depth of the last block, rising linearly from 0 over all blocks.</summary>
    public float drop_path_rate { get; init; }
    /// <summary>Dropout before the classifier.</summary>
    public float drop_rate { get; init; }

    /// <summary>timm's presets (<c>swin_*_patch4_window7_224</c>).</summary>
    public static IReadOnlyDictionary<string, SwinConfig> Presets { get; } = new Dictionary<string, SwinConfig>
    {
        ["swin_tiny_patch4_window7_224"] = new() { embed_dim = 96, depths = [2, 2, 6, 2], num_heads = [3, 6, 12, 24] },
        ["swin_small_patch4_window7_224"] = new() { embed_dim = 96, depths = [2, 2, 18, 2], num_heads = [3, 6, 12, 24] },
        ["swin_base_patch4_window7_224"] = new() { embed_dim = 128, depths = [2, 2, 18, 2], num_heads = [4, 8, 16, 32] },
    };

    /// <summary>Stage s's width.</summary>
    public int Dim(int stage) => embed_dim << stage;

    /// <summary>Stage s's grid side.</summary>
    public int Resolution(int stage) => img_size / patch_size >> stage;

    /// <summary>Stage s's (window, shift for odd blocks): timm shrinks the window to the grid, and then never shifts.</summary>
    public (int Window, int Shift) WindowOf(int stage)
    {
        int r = Resolution(stage);
        return r <= window_size ? (r, 0) : (window_size, window_size / 2);
    }

    /// <summary>A preset name or a JSON config path (timm's field names; unknown keys are errors).</summary>
    public static SwinConfig Resolve(string presetOrPath)
    {
        if (Presets.TryGetValue(presetOrPath, out var preset)) return preset;
        if (!File.Exists(presetOrPath))
            throw new ArgumentException($"'{presetOrPath}' is neither a Swin preset ({string.Join(", ", Presets.Keys)}) nor an existing config file");
        return ConfigFile.Read<SwinConfig>(presetOrPath, "Swin", (c, source) => c.Validate(source));
    }

    /// <summary>Checks the fields are consistent; <paramref name="source"/> names the config in the error.</summary>
    public SwinConfig Validate(string source = "Swin config")
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new ArgumentException($"{source}: {problem}");
        }
        Require(depths != null && num_heads != null, "depths and num_heads must be lists");
        Require(depths!.Length is > 0 and <= ConfigFile.MaxStages && depths.Length == num_heads!.Length,
            $"depths ({depths.Length}) and num_heads ({num_heads!.Length}) must list the same 1 to {ConfigFile.MaxStages} stages");
        Require(depths.All(d => d is >= 0 and <= ConfigFile.MaxDepth) && num_heads.All(h => h is > 0 and <= ConfigFile.MaxWidth),
            $"depths must lie in [0, {ConfigFile.MaxDepth}] and num_heads in [1, {ConfigFile.MaxWidth}]");
        Require(embed_dim is > 0 and <= ConfigFile.MaxWidth >> 3, $"embed_dim {embed_dim} must lie in [1, {ConfigFile.MaxWidth >> 3}]");
        Require(patch_size is > 0 and <= ConfigFile.MaxImageSide && window_size is > 0 and <= ConfigFile.MaxImageSide, "patch_size and window_size must be positive and at most the largest image side");
        ConfigFile.CheckBounds(source, img_size, in_chans, num_classes, mlp_ratio,
            depths.Select((d, s) => (double)d * Dim(s) * Dim(s) * (4 + 2 * mlp_ratio)).Sum());
        Require(embed_dim > 0 && patch_size > 0 && window_size > 0 && in_chans > 0 && num_classes >= 0, "embed_dim, patch_size, window_size and in_chans must be positive, num_classes non-negative");
        Require(img_size > 0 && img_size % (patch_size << (depths.Length - 1)) == 0,
            $"img_size {img_size} must be a multiple of {patch_size << (depths.Length - 1)} (the patch size, then 2 per later stage)");
        for (int s = 0; s < depths.Length; s++)
        {
            Require(Dim(s) % num_heads[s] == 0, $"stage {s}: width {Dim(s)} is not divisible by {num_heads[s]} heads");
            Require(Resolution(s) % WindowOf(s).Window == 0, $"stage {s}: its {Resolution(s)}×{Resolution(s)} grid is not divisible into {window_size}×{window_size} windows");
        }
        Require(mlp_ratio > 0 && Math.Abs(mlp_ratio * embed_dim - MathF.Round(mlp_ratio * embed_dim)) < 1e-3, $"mlp_ratio {mlp_ratio} must give a whole hidden width");
        Require(drop_path_rate is >= 0f and < 1f && drop_rate is >= 0f and < 1f, "drop rates must be in [0, 1)");
        return this;
    }
}
