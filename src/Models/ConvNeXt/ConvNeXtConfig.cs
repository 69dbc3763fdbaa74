namespace Engine.Models.ConvNeXt;

/// <summary>
/// timm's <c>ConvNeXt</c> constructor arguments (field names kept): a 4×4 stride-4 stem, stages of blocks with widths
/// <see cref="dims"/>, 2×2 stride-2 downsampling between stages, 7×7 depthwise convolutions, 4× MLPs and layer scale.
/// </summary>
public sealed record ConvNeXtConfig
{
    /// <summary>Input image side (square).</summary>
    public int img_size { get; init; } = 224;
    /// <summary>Input channels.</summary>
    public int in_chans { get; init; } = 3;
    /// <summary>Classifier outputs (0: the pooled, normalised features).</summary>
    public int num_classes { get; init; } = 1000;
    /// <summary>Blocks per stage.</summary>
    public int[] depths { get; init; } = [3, 3, 9, 3];
    /// <summary>Channels per stage.</summary>
    public int[] dims { get; init; } = [96, 192, 384, 768];
    /// <summary>Depthwise kernel size.</summary>
    public int kernel_size { get; init; } = 7;
    /// <summary>Initial layer-scale value (checkpoints hold trained values).</summary>
    public float ls_init_value { get; init; } = 1e-6f;
    /// <summary>MLP hidden width as a multiple of the stage width.</summary>
    public int mlp_ratio { get; init; } = 4;
    /// <summary>Stochastic depth of the last block, rising linearly from 0 over all blocks.</summary>
    public float drop_path_rate { get; init; }
    /// <summary>Dropout before the classifier.</summary>
    public float drop_rate { get; init; }

    /// <summary>The stem's patch size (kernel = stride).</summary>
    public const int StemPatch = 4;

    /// <summary>timm's presets.</summary>
    public static IReadOnlyDictionary<string, ConvNeXtConfig> Presets { get; } = new Dictionary<string, ConvNeXtConfig>
    {
        ["convnext_tiny"] = new() { depths = [3, 3, 9, 3], dims = [96, 192, 384, 768] },
        ["convnext_small"] = new() { depths = [3, 3, 27, 3], dims = [96, 192, 384, 768] },
        ["convnext_base"] = new() { depths = [3, 3, 27, 3], dims = [128, 256, 512, 1024] },
    };

    /// <summary>A preset name or a JSON config path (timm's field names; unknown keys are errors).</summary>
    public static ConvNeXtConfig Resolve(string presetOrPath)
    {
        if (Presets.TryGetValue(presetOrPath, out var preset)) return preset;
        if (!File.Exists(presetOrPath))
            throw new ArgumentException($"'{presetOrPath}' is neither a ConvNeXt preset ({string.Join(", ", Presets.Keys)}) nor an existing config file");
        return ConfigFile.Read<ConvNeXtConfig>(presetOrPath, "ConvNeXt", (c, source) => c.Validate(source));
    }

    /// <summary>Checks the fields are consistent; <paramref name="source"/> names the config in the error.</summary>
    public ConvNeXtConfig Validate(string source = "ConvNeXt config")
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new ArgumentException($"{source}: {problem}");
        }
        Require(depths != null && dims != null, "depths and dims must be lists");
        Require(depths!.Length is > 0 and <= ConfigFile.MaxStages && depths.Length == dims!.Length,
            $"depths ({depths.Length}) and dims ({dims!.Length}) must list the same 1 to {ConfigFile.MaxStages} stages");
        Require(depths.All(d => d is >= 0 and <= ConfigFile.MaxDepth) && dims.All(d => d is > 0 and <= ConfigFile.MaxWidth),
            $"depths must lie in [0, {ConfigFile.MaxDepth}] and dims in [1, {ConfigFile.MaxWidth}]");
        Require(kernel_size is > 0 and <= 63, $"kernel_size {kernel_size} must lie in [1, 63]");
        ConfigFile.CheckBounds(source, img_size, in_chans, num_classes, mlp_ratio,
            depths.Select((d, s) => (double)d * dims[s] * dims[s] * 2 * mlp_ratio).Sum());
        int reduction = StemPatch << (depths.Length - 1);
        Require(img_size > 0 && img_size % reduction == 0, $"img_size {img_size} must be a multiple of {reduction} (stem 4, then 2 per later stage)");
        Require(kernel_size % 2 == 1 && kernel_size > 0, $"kernel_size {kernel_size} must be odd");
        Require(in_chans > 0 && num_classes >= 0 && mlp_ratio > 0, "in_chans and mlp_ratio must be positive, num_classes non-negative");
        Require(drop_path_rate is >= 0f and < 1f && drop_rate is >= 0f and < 1f, "drop rates must be in [0, 1)");
        return this;
    }
}
