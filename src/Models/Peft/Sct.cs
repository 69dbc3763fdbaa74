using Engine.Autograd;
using Engine.Checkpoints;
using Engine.IO;

namespace Engine.Models.Peft;

/// <summary>
/// SCT (Salient Channel Tuning): on the residual stream after each block's attention add, the K selected channels of
/// every token go through a K×K linear map with bias whose output is added back onto the same channels
/// (<see cref="Ops.ChannelAdapter"/>). The channels come from <see cref="SctSelection.Compute"/>. The backbone is
/// frozen; the K×K maps (weight truncated-normal 0.02, bias 0) and the head train. The head is re-initialised as the
/// official code's <c>reset_classifier</c> does, with <c>nn.Linear</c>'s default: weight and bias uniform ±1/√fan_in.
/// </summary>
public sealed class Sct : PeftMethod
{
    readonly IReadOnlyDictionary<string, int[]> _selection;
    readonly ulong _seed;
    readonly List<Tensor> _added = new(), _indices = new();
    readonly Dictionary<string, (Tensor Index, Tensor Weight, Tensor Bias)> _bySite = new(StringComparer.Ordinal);
    bool _applied;

    /// <summary>SCT on the sites of <paramref name="selection"/> (site name → channels, e.g. from
    /// <see cref="SctSelection.Compute"/> or <see cref="SctSelection.Read"/>), with weights drawn from <paramref name="seed"/>.</summary>
    public Sct(IReadOnlyDictionary<string, int[]> selection, ulong seed = 42)
    {
        if (selection.Count == 0) throw new ArgumentException("SCT needs a channel selection for at least one site", nameof(selection));
        _selection = selection;
        _seed = seed;
    }

    /// <inheritdoc/>
    public override string Name => PeftMethods.Sct.Name;

    /// <inheritdoc/>
    public override IReadOnlyList<Tensor> AddedParameters => _added;

    /// <summary>The selected channels per site.</summary>
    public IReadOnlyDictionary<string, int[]> Selection => _selection;

    /// <summary>The module at each site once applied: its channel index [K], weight [K, K] and bias [K] (for export).</summary>
    internal IReadOnlyDictionary<string, (Tensor Index, Tensor Weight, Tensor Bias)> Modules => _bySite;

    /// <inheritdoc/>
    public override void Apply(IPeftModel model)
    {
        if (_applied) throw new InvalidOperationException("SCT is already applied to a model");
        var sites = SctSelection.Sites(model).ToDictionary(s => s.Name, StringComparer.Ordinal);
        foreach (var (name, channels) in _selection)
        {
            if (!sites.TryGetValue(name, out var site))
                throw new ArgumentException($"SCT selection names site '{name}', which the model does not have (its SCT sites: {string.Join(", ", sites.Keys)})");
            if (channels.Length == 0 || channels.Any(c => c < 0 || c >= site.Channels) || channels.Distinct().Count() != channels.Length)
                throw new ArgumentException($"SCT selection for '{name}' must be distinct channels in [0, {site.Channels}), got {channels.Length} entries");
        }
        _applied = true;
        ulong stream = _seed;
        foreach (var p in model.Parameters)
        {
            p.RequiresGrad = IsHead(p);
            if (!p.RequiresGrad) continue;
            var weight = model.Parameters.First(w => IsHead(w) && w.Rank == 2);
            float bound = 1f / MathF.Sqrt(weight.Shape[1]); // fan_in of the head's weight, for its bias too
            Init.Uniform(p, -bound, bound, stream++);
        }
        var device = model.Parameters[0].Device;
        foreach (var site in model.Sites.Where(s => _selection.ContainsKey(s.Name)))
        {
            var channels = _selection[site.Name];
            int K = channels.Length;
            string prefix = SctSelection.ModulePrefix(site.Name);
            var index = Tensor.FromArray(device, channels, K);
            index.Name = prefix + ".sct_index";
            var weight = Tensor.Parameter(device, prefix + ".sct_attn.weight", K, K);
            Init.TruncatedNormal(weight, 0.02f, stream++);
            var bias = Tensor.Parameter(device, prefix + ".sct_attn.bias", K);
            _indices.Add(index);
            _added.Add(weight);
            _added.Add(bias);
            _bySite[site.Name] = (index, weight, bias);
        }
        model.SiteHook = (site, x) => _bySite.TryGetValue(site.Name, out var m) ? Ops.ChannelAdapter(x, m.Index, m.Weight, m.Bias) : x;
    }

    /// <inheritdoc/>
    protected override List<(Tensor Tensor, bool Owned)> TrainedState(IPeftModel model) =>
        [.. base.TrainedState(model), .. _indices.Select(i => (i, false))];

    /// <inheritdoc/>
    protected override void LoadTrained(IPeftModel model, IReadOnlyList<CheckpointEntry> entries, string path)
    {
        var saved = SctSelection.FromEntries(entries, path);
        foreach (var (site, channels) in _selection)
            if (!saved.TryGetValue(site, out var other) || !other.SequenceEqual(channels))
                throw new InvalidInputException(path, $"was trained with another channel selection for '{site}' (build SCT from SctSelection.Read of this file)");
        base.LoadTrained(model, [.. entries.Where(e => !SctSelection.IsIndexKey(e.Name))], path);
    }

    /// <summary>SCT cannot fold: its map of selected channels adds onto the residual stream, which no layer of a plain
    /// model can absorb.</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public override IReadOnlyList<string> Merge() =>
        throw new NotSupportedException("SCT's module adds a linear map of selected channels onto the residual stream, which no layer of a plain model can absorb");

    /// <inheritdoc/>
    public override void Dispose()
    {
        foreach (var i in _indices) i.Dispose();
        base.Dispose();
    }
}

/// <summary>
/// SCT's channel selection by the class-aware importance score: forward images in eval mode, take the features at
/// every SCT site (the residual stream after the attention add) without the prefix (class) tokens, and for each class
/// c and channel d compute the L2 norm over that class's images and tokens; the score of d is the unweighted mean over
/// the classes present; the top K channels are kept, in ascending order. Saved as <c>{module}.sct_index</c> int32 [K].
/// </summary>
public static class SctSelection
{
    /// <summary>The paper's K: 96 of ViT-B's 768 channels.</summary>
    public const int DefaultK = 96;

    const string IndexSuffix = ".sct_index";

    /// <summary>The sites SCT acts on: the residual sum after each block's attention.</summary>
    public static IEnumerable<FeatureSite> Sites(IPeftModel model) =>
        model.Sites.Where(s => s.Producer == SiteProducer.Residual && s.Name.EndsWith(".attn_residual", StringComparison.Ordinal));

    /// <summary>The stage of a site: its name before <c>.blocks.</c> (<c>layers.2.blocks.9.attn_residual</c> →
    /// <c>layers.2</c>), or empty for a model with one stage (ViT's <c>blocks.3.attn_residual</c>).</summary>
    public static string StageOf(string site)
    {
        int at = site.IndexOf(".blocks.", StringComparison.Ordinal);
        return at < 0 ? "" : site[..at];
    }

    /// <summary>The block owning a site: <c>blocks.3.attn_residual</c> → <c>blocks.3</c>.</summary>
    public static string ModulePrefix(string site) => site[..site.LastIndexOf('.')];

    internal static bool IsIndexKey(string name) => name.EndsWith(IndexSuffix, StringComparison.Ordinal);

    /// <summary>
    /// Scores every channel at every SCT site over <paramref name="batches"/> (images [B, C, H, W] with one label per
    /// image) and keeps the top <paramref name="k"/> per site. The model runs in eval mode with no gradients; any hook or affine
    /// already installed is bypassed for the pass (the scores are the plain model's) and restored after.
    /// </summary>
    /// <param name="model">The model; its SCT sites are the residual sums named <c>*.attn_residual</c>.</param>
    /// <param name="batches">Images and labels.</param>
    /// <param name="k">Channels kept per site.</param>
    /// <param name="kByStage">K for the sites of a stage, overriding <paramref name="k"/> there (Swin: <c>layers.3</c> → 192;
    /// a site's stage is its name before <c>.blocks.</c>). Null: <paramref name="k"/> everywhere.</param>
    public static Dictionary<string, int[]> Compute(IPeftModel model, IEnumerable<(Tensor Images, int[] Labels)> batches, int k = DefaultK,
        IReadOnlyDictionary<string, int>? kByStage = null)
    {
        var sites = Sites(model).ToList();
        if (sites.Count == 0) throw new ArgumentException("the model has no SCT sites (residual sums after attention)");
        var stages = sites.Select(s => StageOf(s.Name)).ToHashSet();
        foreach (var stage in (kByStage?.Keys ?? []).Where(st => !stages.Contains(st)))
            throw new ArgumentException($"SCT K per stage names '{stage}', which has no SCT site (stages with sites: {string.Join(", ", stages)})");
        int KOf(FeatureSite s) => kByStage != null && kByStage.TryGetValue(StageOf(s.Name), out int sk) ? sk : k;
        foreach (var s in sites.Where(s => KOf(s) < 1 || KOf(s) > s.Channels))
            throw new ArgumentOutOfRangeException(nameof(k), KOf(s), $"SCT K for {s.Name} must be in [1, {s.Channels}]");
        // Per site, per class: Σ x² over the class's images and patch tokens, per channel (in double).
        var sums = sites.ToDictionary(s => s.Name, _ => new Dictionary<int, double[]>(), StringComparer.Ordinal);
        int[] labels = [];
        var bypass = model.Bypass();
        bool keepEveryToken = model.KeepEveryToken;
        model.KeepEveryToken = true; // the statistics sum over every patch token at every site, the last block's too
        model.SiteHook = (site, x) =>
        {
            if (sums.TryGetValue(site.Name, out var byClass)) Accumulate(byClass, x, labels, model.NumPrefixTokens);
            return x;
        };
        try
        {
            using var _ = Tape.NoGrad();
            foreach (var (images, batchLabels) in batches)
            {
                if (batchLabels.Length != images.Shape[0])
                    throw new ArgumentException($"SCT selection: a batch of {images.Shape[0]} images came with {batchLabels.Length} labels");
                labels = batchLabels;
                model.ForwardFeatures(images).Dispose();
            }
        }
        finally
        {
            bypass.Dispose();
            model.KeepEveryToken = keepEveryToken;
        }
        if (sums[sites[0].Name].Count == 0) throw new ArgumentException("SCT selection: no images were given");
        return sites.ToDictionary(s => s.Name, s => TopChannels(Scores(sums[s.Name].Values), KOf(s)), StringComparer.Ordinal);
    }

    static void Accumulate(Dictionary<int, double[]> byClass, Tensor x, int[] labels, int prefixTokens)
    {
        int B = x.Shape[0], C = x.Shape[^1];
        long tokens = x.Count / ((long)B * C);
        var values = x.ToArray();
        for (int b = 0; b < B; b++)
        {
            if (!byClass.TryGetValue(labels[b], out var acc)) byClass[labels[b]] = acc = new double[C];
            for (long t = prefixTokens; t < tokens; t++)
            {
                long row = (b * tokens + t) * C;
                for (int c = 0; c < C; c++) acc[c] += (double)values[row + c] * values[row + c];
            }
        }
    }

    /// <summary>The class-aware importance score per channel: the mean over classes of √(Σ x²) (per-class L2 norms).</summary>
    public static double[] Scores(IEnumerable<double[]> perClassSumSquares)
    {
        var list = perClassSumSquares.ToList();
        var score = new double[list[0].Length];
        foreach (var acc in list)
            for (int c = 0; c < score.Length; c++) score[c] += Math.Sqrt(acc[c]) / list.Count;
        return score;
    }

    /// <summary>The <paramref name="k"/> highest-scoring channels (ties to the lower channel), in ascending order.</summary>
    public static int[] TopChannels(double[] scores, int k) =>
        [.. Enumerable.Range(0, scores.Length).OrderByDescending(c => scores[c]).ThenBy(c => c).Take(k).Order()];

    /// <summary>Writes a selection as safetensors (<c>{module}.sct_index</c> int32 [K] per site), atomically.</summary>
    public static void Save(string path, IReadOnlyDictionary<string, int[]> selection, IReadOnlyDictionary<string, string>? metadata = null) =>
        SelectionFile.Write(path, PeftMethods.Sct.Name, selection.Select(kv => (ModulePrefix(kv.Key) + IndexSuffix, kv.Value, new[] { kv.Value.Length })), metadata);

    /// <summary>Reads the selection from a file of <see cref="Save"/> or a trained SCT file (site name → channels).</summary>
    /// <exception cref="InvalidInputException">The file holds no <c>*.sct_index</c> tensor, or one is not a vector.</exception>
    public static Dictionary<string, int[]> Read(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        var selection = FromEntries(checkpoint.Entries, path);
        if (selection.Count == 0) throw new InvalidInputException(path, $"holds no '*{IndexSuffix}' tensor (not an SCT selection)");
        return selection;
    }

    internal static Dictionary<string, int[]> FromEntries(IEnumerable<CheckpointEntry> entries, string path)
    {
        var selection = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var e in entries.Where(e => IsIndexKey(e.Name)))
        {
            if (e.Shape.Length != 1) throw new InvalidInputException(path, $"'{e.Name}' is {e.ShapeText}, an SCT index must be [K]");
            selection[e.Name[..^IndexSuffix.Length] + ".attn_residual"] = SelectionFile.ReadIndices(e, path);
        }
        return selection;
    }
}
