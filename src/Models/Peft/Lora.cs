using System.Globalization;
using Engine.Checkpoints;
using Engine.IO;
using Engine.Kernels;

namespace Engine.Models.Peft;

/// <summary>
/// LoRA's settings: rank r, alpha (the path is scaled by alpha / r), dropout on the path's input, and the Linear layers
/// it adapts. A target is a site name or its tail after a dot (<c>attn.qkv</c>, <c>mlp.fc1</c>, <c>fc2</c>), optionally
/// with the slices of a fused qkv it adapts in brackets (<c>attn.qkv[q,v]</c>: q and v each get their own A and B, as
/// the VTAB LoRA baselines do).
/// </summary>
public sealed record LoraSettings
{
    /// <summary>The rank r of every low-rank path.</summary>
    public int Rank { get; init; } = 8;
    /// <summary>The path is scaled by Alpha / Rank (8 / 8 = 1 by default, the plain B·A of the VTAB baselines).</summary>
    public float Alpha { get; init; } = 8;
    /// <summary>Dropout on the path's input in training (the layer itself sees the undropped input).</summary>
    public float Dropout { get; init; }
    /// <summary>The adapted Linear layers (default: q and v of every attention's qkv).</summary>
    public IReadOnlyList<string> Targets { get; init; } = ["attn.qkv[q,v]"];

    /// <summary>The defaults for a model family: q and v of every qkv, or for ConvNeXt, which has no attention, its
    /// MLP's fc1 and fc2.</summary>
    public static LoraSettings For(string family) => family == "convnext" ? new() { Targets = ["mlp.fc1", "mlp.fc2"] } : new();

    /// <summary>The scale alpha / r applied to B·A.</summary>
    public float Scale => Alpha / Rank;

    /// <summary>What is wrong with these settings, one line each (empty when valid).</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (Rank is < 1 or > 4096) problems.Add($"LoRA rank {Rank} must lie in [1, 4096]");
        if (!float.IsFinite(Alpha) || Alpha <= 0) problems.Add($"LoRA alpha {Alpha} must be a positive number");
        if (Dropout is not (>= 0 and < 1)) problems.Add($"LoRA dropout {Dropout} must lie in [0, 1)");
        if (Targets.Count == 0) problems.Add("LoRA needs at least one target layer");
        foreach (var target in Targets)
            try { ParseTarget(target); }
            catch (ArgumentException e) { problems.Add(e.Message); }
        return problems;
    }

    /// <summary>A target's layer pattern and the qkv slices it names (null: all of the layer's outputs).</summary>
    internal static (string Layer, string[]? Slices) ParseTarget(string target)
    {
        int open = target.IndexOf('[');
        if (open < 0) return Valid(target, target, null);
        if (!target.EndsWith(']')) throw new ArgumentException($"LoRA target '{target}': a slice list is written layer[q,v]");
        var slices = target[(open + 1)..^1].Split(',', StringSplitOptions.TrimEntries);
        if (slices.Length == 0 || slices.Any(s => Array.IndexOf(QkvSlices, s) < 0) || slices.Distinct().Count() != slices.Length)
            throw new ArgumentException($"LoRA target '{target}': slices must be distinct names among q, k, v");
        return Valid(target, target[..open], slices);
    }

    static (string, string[]?) Valid(string target, string layer, string[]? slices)
    {
        if (layer.Length == 0 || layer.StartsWith('.') || layer.EndsWith('.') || layer.Any(char.IsWhiteSpace))
            throw new ArgumentException($"LoRA target '{target}' must name a layer (e.g. attn.qkv, mlp.fc1)");
        return (layer, slices);
    }

    /// <summary>The thirds of a fused qkv output, in its layout.</summary>
    internal static readonly string[] QkvSlices = ["q", "k", "v"];

    /// <summary>The settings as the metadata of a trained file.</summary>
    internal Dictionary<string, string> ToMetadata() => new()
    {
        ["lora_rank"] = Rank.ToString(CultureInfo.InvariantCulture), ["lora_alpha"] = Alpha.ToString("R", CultureInfo.InvariantCulture),
        ["lora_dropout"] = Dropout.ToString("R", CultureInfo.InvariantCulture), ["lora_targets"] = string.Join(';', Targets),
    };

    /// <summary>The settings of a LoRA file written by <see cref="PeftMethod.SaveTrained"/>.</summary>
    /// <exception cref="InvalidInputException">The file's metadata lacks them or holds invalid values.</exception>
    public static LoraSettings FromTrainedFile(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        return FromMetadata(checkpoint.Metadata, path);
    }

    /// <summary>The settings a trained file was written with.</summary>
    /// <exception cref="InvalidInputException">The metadata lacks them or holds invalid values.</exception>
    internal static LoraSettings FromMetadata(IReadOnlyDictionary<string, string> metadata, string path)
    {
        string Get(string key) => metadata.TryGetValue(key, out var v) ? v : throw new InvalidInputException(path, $"no '{key}' in its metadata (not a LoRA file written by SaveTrained)");
        float Number(string key) => float.TryParse(Get(key), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v
            : throw new InvalidInputException(path, $"metadata '{key}' is '{Get(key)}', not a number");
        var settings = new LoraSettings
        {
            Rank = int.TryParse(Get("lora_rank"), NumberStyles.Integer, CultureInfo.InvariantCulture, out int r) ? r
                : throw new InvalidInputException(path, $"metadata 'lora_rank' is '{Get("lora_rank")}', not a whole number"),
            Alpha = Number("lora_alpha"), Dropout = Number("lora_dropout"), Targets = Get("lora_targets").Split(';'),
        };
        if (settings.Problems() is [var first, ..]) throw new InvalidInputException(path, first);
        return settings;
    }
}

/// <summary>
/// LoRA (low-rank adaptation): each adapted Linear layer (or slice of a fused qkv) computes W·x + b + (α/r)·B·A·x with
/// the frozen W, A [r, in] (kaiming-uniform, a = √5: uniform ±1/√in) and B [out, r] (zero, so training starts from the
/// pretrained model). The path runs as two small GEMMs into the layer's output (<see cref="Ops.Lora"/>); ΔW is never
/// formed in training. The backbone is frozen; A, B and the head train. Parameters are named
/// <c>{layer}.lora_A</c> / <c>{layer}.lora_B</c>, or <c>{layer}.lora_A_q</c> / <c>{layer}.lora_B_q</c> for a qkv slice.
/// <see cref="Merge"/> folds W += (α/r)·B·A exactly, leaving a plain model.
/// </summary>
public sealed class Lora : PeftMethod
{
    /// <summary>One low-rank path: its layer, the first output column it adds to, A, B and its dropout stream.</summary>
    sealed record Module(FeatureSite Site, int Column, Tensor A, Tensor B, ulong Stream);

    readonly LoraSettings _settings;
    readonly ulong _seed;
    readonly List<Tensor> _added = new();
    readonly Dictionary<string, List<Module>> _bySite = new(StringComparer.Ordinal);
    IPeftModel? _model;

    /// <summary>LoRA with <paramref name="settings"/> (null: rank 8, alpha 8 on q and v of every qkv), A drawn from <paramref name="seed"/>.</summary>
    /// <exception cref="ArgumentException">The settings are invalid; the message says which value.</exception>
    public Lora(LoraSettings? settings = null, ulong seed = 42)
    {
        _settings = settings ?? new LoraSettings();
        if (_settings.Problems() is [var first, ..]) throw new ArgumentException(first, nameof(settings));
        _seed = seed;
    }

    /// <inheritdoc/>
    public override string Name => PeftMethods.Lora.Name;

    /// <summary>The settings.</summary>
    public LoraSettings Settings => _settings;

    /// <inheritdoc/>
    public override IReadOnlyList<Tensor> AddedParameters => _added;

    static readonly System.Text.RegularExpressions.Regex BlockPrefix = new(@"^(.*\.)?blocks\.\d+\.");

    /// <summary>The sites LoRA can adapt: Linear layers on token features (2-d weights), not the patch embedding or convolutions.</summary>
    public static IEnumerable<FeatureSite> LinearLayers(IPeftModel model) =>
        model.Sites.Where(s => s.Producer == SiteProducer.Linear && s.Weight is { Rank: 2 });

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">A target matches no Linear layer, or names qkv slices of a layer that is not a qkv.</exception>
    public override void Apply(IPeftModel model)
    {
        if (_model != null) throw new InvalidOperationException("LoRA is already applied to a model");
        var layers = LinearLayers(model).ToList();
        var plan = new List<(FeatureSite Site, string? Slice)>();
        foreach (var target in _settings.Targets)
        {
            var (layer, slices) = LoraSettings.ParseTarget(target);
            var matched = layers.Where(s => s.Name == layer || s.Name.EndsWith("." + layer, StringComparison.Ordinal)).ToList();
            if (matched.Count == 0)
                throw new ArgumentException($"LoRA target '{target}' matches no Linear layer (the model's, per block: {string.Join(", ", layers.Select(s => BlockPrefix.Replace(s.Name, "")).Distinct())})");
            foreach (var site in matched)
            {
                if (slices != null && (!site.Name.EndsWith("qkv", StringComparison.Ordinal) || site.Channels % 3 != 0))
                    throw new ArgumentException($"LoRA target '{target}': slices q, k, v apply to a fused qkv layer, not to {site.Name}");
                foreach (var slice in slices ?? [null!])
                    if (!plan.Contains((site, slice))) plan.Add((site, slice));
            }
        }
        _model = model;
        foreach (var p in model.Parameters) p.RequiresGrad = IsHead(p);
        var device = model.Parameters[0].Device;
        int r = _settings.Rank;
        ulong stream = _seed;
        foreach (var (site, slice) in plan.OrderBy(p => layers.IndexOf(p.Site)).ThenBy(p => Array.IndexOf(LoraSettings.QkvSlices, p.Slice)))
        {
            int inputs = site.Weight!.Shape[1], width = slice == null ? site.Channels : site.Channels / 3;
            int column = slice == null ? 0 : Array.IndexOf(LoraSettings.QkvSlices, slice) * width;
            string suffix = slice == null ? "" : "_" + slice;
            var a = Tensor.Parameter(device, $"{site.Name}.lora_A{suffix}", r, inputs);
            var b = Tensor.Parameter(device, $"{site.Name}.lora_B{suffix}", width, r);
            float bound = 1f / MathF.Sqrt(inputs); // kaiming_uniform_(a=√5): gain √(2/6), bound gain·√(3/fan_in)
            Init.Uniform(a, -bound, bound, stream++);
            _added.Add(a);
            _added.Add(b);
            if (!_bySite.TryGetValue(site.Name, out var list)) _bySite[site.Name] = list = new();
            list.Add(new Module(site, column, a, b, stream++));
        }
        model.LinearHook = Forward;
    }

    Tensor Forward(FeatureSite site, Tensor x, Tensor y, ulong? trainSeed)
    {
        if (!_bySite.TryGetValue(site.Name, out var modules)) return y;
        var z = y;
        foreach (var m in modules)
        {
            using var dropped = trainSeed is { } seed && _settings.Dropout > 0 ? Ops.Dropout(x, _settings.Dropout, CounterRng.Hash(seed, m.Stream)) : null;
            var next = Ops.Lora(z, dropped ?? x, m.A, m.B, _settings.Scale, m.Column);
            if (!ReferenceEquals(z, y)) z.Dispose();
            z = next;
        }
        return z;
    }

    /// <inheritdoc/>
    protected override IReadOnlyDictionary<string, string> TrainedMetadata => _settings.ToMetadata();

    /// <summary>
    /// W[column + j, :] += (α/r)·Σ_q B[j, q]·A[q, :] for every path (summed in double), then the paths are removed: the
    /// plain model computes what it computed with LoRA.
    /// </summary>
    /// <returns>Empty: nothing stays outside the model's own layers.</returns>
    /// <exception cref="InvalidOperationException">LoRA was not applied.</exception>
    public override IReadOnlyList<string> Merge()
    {
        var model = _model ?? throw new InvalidOperationException("LoRA must be applied to a model before merging");
        foreach (var modules in _bySite.Values)
        {
            var weight = modules[0].Site.Weight!;
            float[] w = weight.ToArray();
            int inputs = weight.Shape[1], r = _settings.Rank;
            foreach (var m in modules)
            {
                float[] a = m.A.ToArray(), b = m.B.ToArray();
                int width = m.B.Shape[0];
                for (int j = 0; j < width; j++)
                    for (int k = 0; k < inputs; k++)
                    {
                        double delta = 0;
                        for (int q = 0; q < r; q++) delta += (double)b[j * r + q] * a[q * inputs + k];
                        w[(long)(m.Column + j) * inputs + k] += (float)(_settings.Scale * delta);
                    }
            }
            weight.CopyFrom(w);
        }
        _bySite.Clear();
        model.LinearHook = null;
        return [];
    }
}
