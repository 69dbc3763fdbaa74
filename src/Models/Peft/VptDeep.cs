using System.Globalization;
using Engine.Checkpoints;
using Engine.IO;
using Engine.Kernels;
using Engine.Models.Vit;

namespace Engine.Models.Peft;

/// <summary>VPT-deep's settings: prompt tokens per block and the dropout on them in training.</summary>
/// <param name="Length">Prompt tokens added at every block.</param>
/// <param name="Dropout">Dropout on the prompts (each image its own mask), in training.</param>
public sealed record VptSettings(int Length = 50, float Dropout = 0.1f)
{
    /// <summary>What is wrong with these settings, one line each (empty when valid).</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (Length is < 1 or > 4096) problems.Add($"VPT prompt length {Length} must lie in [1, 4096]");
        if (Dropout is not (>= 0 and < 1)) problems.Add($"VPT dropout {Dropout} must lie in [0, 1)");
        return problems;
    }

    /// <summary>The settings of a VPT file written by <see cref="PeftMethod.SaveTrained"/>.</summary>
    /// <exception cref="InvalidInputException">The file's metadata lacks them or holds invalid values.</exception>
    public static VptSettings FromTrainedFile(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        string Get(string key) => checkpoint.Metadata.TryGetValue(key, out var v) ? v
            : throw new InvalidInputException(path, $"no '{key}' in its metadata (not a VPT file written by SaveTrained)");
        var settings = new VptSettings(
            int.TryParse(Get("vpt_length"), NumberStyles.Integer, CultureInfo.InvariantCulture, out int length) ? length
                : throw new InvalidInputException(path, $"metadata 'vpt_length' is '{Get("vpt_length")}', not a whole number"),
            float.TryParse(Get("vpt_dropout"), NumberStyles.Float, CultureInfo.InvariantCulture, out float dropout) ? dropout
                : throw new InvalidInputException(path, $"metadata 'vpt_dropout' is '{Get("vpt_dropout")}', not a number"));
        if (settings.Problems() is [var first, ..]) throw new InvalidInputException(path, first);
        return settings;
    }

    /// <summary>The settings as the metadata of a trained file.</summary>
    internal Dictionary<string, string> ToMetadata() => new()
    {
        ["vpt_length"] = Length.ToString(CultureInfo.InvariantCulture), ["vpt_dropout"] = Dropout.ToString("R", CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// VPT-deep (visual prompt tuning): every block of a ViT runs on its tokens plus L learned prompt tokens of its own;
/// the prompts a block outputs are dropped and the next block's put in their place, so the class token never sees
/// another block's prompts. Prompts are appended after the patch tokens (the reference inserts them after the class
/// token; attention does not depend on token order and the class token is read at index 0 either way, so the logits are
/// the same). Prompts <c>blocks.{i}.prompt_embeddings</c> [1, L, C] are uniform ±√(6 / (3·p² + C)) as the reference's
/// init (p the patch size), with dropout 0.1 in training. The backbone is frozen; the prompts and the head train.
/// ViT only: Swin's reference variant puts prompts inside every attention window, which this engine's window ops do not
/// model.
/// </summary>
public sealed class VptDeep : PeftMethod
{
    readonly ulong _seed;
    readonly List<Tensor> _added = new();
    readonly Dictionary<int, Tensor> _zeros = new();
    Tensor[] _prompts = [];
    bool _applied;

    /// <summary>VPT-deep with <paramref name="settings"/> (null: 50 prompts, dropout 0.1), prompts drawn from <paramref name="seed"/>.</summary>
    /// <exception cref="ArgumentException">The settings are invalid; the message says which value.</exception>
    public VptDeep(VptSettings? settings = null, ulong seed = 42)
    {
        Settings = settings ?? new VptSettings();
        if (Settings.Problems() is [var first, ..]) throw new ArgumentException(first, nameof(settings));
        _seed = seed;
    }

    /// <summary>The settings.</summary>
    public VptSettings Settings { get; }

    /// <inheritdoc/>
    public override string Name => PeftMethods.VptDeep.Name;

    /// <inheritdoc/>
    public override IReadOnlyList<Tensor> AddedParameters => _added;

    /// <summary>Each block's prompts [1, L, C], in block order (for export).</summary>
    internal IReadOnlyList<Tensor> Prompts => _prompts;

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The model is not a ViT.</exception>
    public override void Apply(IPeftModel model)
    {
        if (_applied) throw new InvalidOperationException("VPT-deep is already applied to a model");
        if (model is not VisionTransformer vit)
            throw new ArgumentException($"VPT-deep is defined for ViT here, not for {(model as IImageClassifier)?.Family ?? model.GetType().Name} (Swin's variant puts prompts inside every attention window)");
        _applied = true;
        foreach (var p in model.Parameters) p.RequiresGrad = IsHead(p);
        var device = model.Parameters[0].Device;
        int C = vit.Config.embed_dim, L = Settings.Length, patch = vit.Config.patch_size;
        float bound = MathF.Sqrt(6f / (3 * patch * patch + C));
        _prompts = new Tensor[vit.Config.depth];
        for (int i = 0; i < _prompts.Length; i++)
        {
            var prompt = Tensor.Parameter(device, $"blocks.{i}.prompt_embeddings", 1, L, C);
            Init.Uniform(prompt, -bound, bound, _seed + (ulong)i);
            _prompts[i] = prompt;
            _added.Add(prompt);
        }
        vit.BlockInputHook = Prompted;
    }

    /// <summary>Block <paramref name="block"/>'s tokens: x [B, T, C] with the previous block's prompts (none before
    /// block 0) replaced by this block's, [B, T', C].</summary>
    Tensor Prompted(int block, Tensor x, ulong? trainSeed)
    {
        int B = x.Shape[0], T = x.Shape[1], C = x.Shape[2], L = Settings.Length;
        // kept from one forward to the next, so in memory of its own (a failed step releases the pooled tensors it made)
        if (!_zeros.TryGetValue(B, out var zero)) _zeros[B] = zero = Tensor.PersistentZeros(x.Device, B, L, C);
        using var expanded = Ops.AddPositionEmbedding(zero, _prompts[block]); // [B, L, C], the gradient summed over B
        using var dropped = trainSeed is { } seed && Settings.Dropout > 0
            ? Ops.Dropout(expanded, Settings.Dropout, CounterRng.Hash(seed, 0x5C7 + (ulong)block)) : null;
        if (block == 0) return Ops.ConcatTokens(x, dropped ?? expanded);
        using var tokens = Ops.SliceTokens(x, 0, T - L);
        return Ops.ConcatTokens(tokens, dropped ?? expanded);
    }

    /// <inheritdoc/>
    protected override IReadOnlyDictionary<string, string> TrainedMetadata => Settings.ToMetadata();

    /// <summary>Prompts cannot fold into a plain model: they are extra tokens every block attends to.</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public override IReadOnlyList<string> Merge() =>
        throw new NotSupportedException("VPT-deep's prompts are extra tokens every block attends to, which no weight of a plain model can hold");

    /// <inheritdoc/>
    public override void Dispose()
    {
        foreach (var z in _zeros.Values) z.Dispose();
        _zeros.Clear();
        base.Dispose();
    }
}
