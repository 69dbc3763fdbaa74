using System.Globalization;
using Engine.Checkpoints;
using Engine.IO;
using Engine.Kernels;

namespace Engine.Models.Peft;

/// <summary>A bottleneck adapter's settings: its width, the scale of its output and the dropout after its activation.</summary>
/// <param name="Bottleneck">Width d of the bottleneck (down [d, C], up [C, d]).</param>
/// <param name="Scale">Factor on the adapter's output (AdaptFormer's s).</param>
/// <param name="Dropout">Dropout after the ReLU, in training.</param>
public sealed record AdapterSettings(int Bottleneck, float Scale, float Dropout)
{
    /// <summary>What is wrong with these settings, one line each (empty when valid).</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (Bottleneck is < 1 or > 65536) problems.Add($"adapter bottleneck {Bottleneck} must lie in [1, 65536]");
        if (!float.IsFinite(Scale) || Scale <= 0) problems.Add($"adapter scale {Scale} must be a positive number");
        if (Dropout is not (>= 0 and < 1)) problems.Add($"adapter dropout {Dropout} must lie in [0, 1)");
        return problems;
    }

    /// <summary>The settings as the metadata of a trained file.</summary>
    internal Dictionary<string, string> ToMetadata() => new()
    {
        ["adapter_bottleneck"] = Bottleneck.ToString(CultureInfo.InvariantCulture), ["adapter_scale"] = Scale.ToString("R", CultureInfo.InvariantCulture),
        ["adapter_dropout"] = Dropout.ToString("R", CultureInfo.InvariantCulture),
    };

    /// <summary>The settings of an adapter file written by <see cref="PeftMethod.SaveTrained"/>.</summary>
    /// <exception cref="InvalidInputException">The file's metadata lacks them or holds invalid values.</exception>
    public static AdapterSettings FromTrainedFile(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        string Get(string key) => checkpoint.Metadata.TryGetValue(key, out var v) ? v
            : throw new InvalidInputException(path, $"no '{key}' in its metadata (not an adapter file written by SaveTrained)");
        float Number(string key) => float.TryParse(Get(key), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v
            : throw new InvalidInputException(path, $"metadata '{key}' is '{Get(key)}', not a number");
        var settings = new AdapterSettings(int.TryParse(Get("adapter_bottleneck"), NumberStyles.Integer, CultureInfo.InvariantCulture, out int d) ? d
            : throw new InvalidInputException(path, $"metadata 'adapter_bottleneck' is '{Get("adapter_bottleneck")}', not a whole number"),
            Number("adapter_scale"), Number("adapter_dropout"));
        if (settings.Problems() is [var first, ..]) throw new InvalidInputException(path, first);
        return settings;
    }
}

/// <summary>
/// A bottleneck adapter on every block's MLP branch: a(z) = s·up(dropout(act(down(z)))) with down [d, C] + bias
/// (kaiming-uniform, a = √5: ±1/√C; bias 0) and up [C, d] + bias (zero, so training starts from the pretrained model),
/// added to the branch's output. <see cref="Adapter"/> reads the branch's output (sequential, after the MLP);
/// <see cref="AdaptFormer"/> reads the branch's input (parallel to the MLP); act is GELU or ReLU. The backbone is
/// frozen; the adapters and the head train. Neither merges (the bottleneck is not linear): load the trained file with
/// the method, or export it as explicit nodes.
/// </summary>
public abstract class BottleneckAdapter : PeftMethod
{
    /// <summary>One block's adapter: its fc2 site, module name, weights, dropout stream, and the constant scale vector.</summary>
    internal sealed record Module(FeatureSite Fc2, string Prefix, Tensor DownWeight, Tensor DownBias, Tensor UpWeight, Tensor UpBias, ulong Stream,
        Tensor Scale, Tensor Zero);

    readonly ulong _seed;
    readonly List<Tensor> _added = new(), _constants = new();
    readonly Dictionary<string, Module> _byFc2 = new(StringComparer.Ordinal);
    bool _applied;

    /// <summary>An adapter with <paramref name="settings"/>, down-projections drawn from <paramref name="seed"/>.</summary>
    /// <exception cref="ArgumentException">The settings are invalid; the message says which value.</exception>
    protected BottleneckAdapter(AdapterSettings settings, ulong seed)
    {
        if (settings.Problems() is [var first, ..]) throw new ArgumentException(first, nameof(settings));
        Settings = settings;
        _seed = seed;
    }

    /// <summary>The settings.</summary>
    public AdapterSettings Settings { get; }

    /// <summary>True when the adapter reads the branch's input (parallel), false for its output (sequential).</summary>
    public abstract bool Parallel { get; }

    /// <summary>The activation between the projections: exact GELU (true) or ReLU (false).</summary>
    public abstract bool Gelu { get; }

    /// <summary>The module name after the block's prefix (<c>adapter</c>, AdaptFormer's <c>adaptmlp</c>).</summary>
    protected abstract string ModuleName { get; }

    /// <inheritdoc/>
    public override IReadOnlyList<Tensor> AddedParameters => _added;

    /// <summary>Each block's adapter, by its fc2 site (for export).</summary>
    internal IReadOnlyDictionary<string, Module> Modules => _byFc2;

    /// <inheritdoc/>
    public override void Apply(IPeftModel model)
    {
        if (_applied) throw new InvalidOperationException($"{Name} is already applied to a model");
        var fc2Sites = model.Sites.Where(s => s.Name.EndsWith(".mlp.fc2", StringComparison.Ordinal) && s.Weight is { Rank: 2 }).ToList();
        if (fc2Sites.Count == 0) throw new ArgumentException($"{Name}: the model has no MLP branch (no *.mlp.fc2 Linear layer)");
        _applied = true;
        foreach (var p in model.Parameters) p.RequiresGrad = IsHead(p);
        var device = model.Parameters[0].Device;
        int d = Settings.Bottleneck;
        ulong stream = _seed;
        foreach (var fc2 in fc2Sites)
        {
            int C = fc2.Channels;
            string prefix = fc2.Name[..^".mlp.fc2".Length] + "." + ModuleName;
            var downWeight = Tensor.Parameter(device, prefix + ".down_proj.weight", d, C);
            var downBias = Tensor.Parameter(device, prefix + ".down_proj.bias", d);
            var upWeight = Tensor.Parameter(device, prefix + ".up_proj.weight", C, d);
            var upBias = Tensor.Parameter(device, prefix + ".up_proj.bias", C);
            float bound = 1f / MathF.Sqrt(C); // kaiming_uniform_(a=√5)
            Init.Uniform(downWeight, -bound, bound, stream++);
            _added.AddRange([downWeight, downBias, upWeight, upBias]);
            var scale = Tensor.Zeros(device, C);
            Init.Constant(scale, Settings.Scale);
            var zero = Tensor.Zeros(device, C);
            _constants.AddRange([scale, zero]);
            _byFc2[fc2.Name] = new Module(fc2, prefix, downWeight, downBias, upWeight, upBias, stream++, scale, zero);
        }
        model.MlpHook = Forward;
    }

    Tensor Forward(FeatureSite fc2, Tensor input, Tensor output, ulong? trainSeed)
    {
        if (!_byFc2.TryGetValue(fc2.Name, out var m)) return output;
        var source = Parallel ? input : output;
        using var down = Gelu ? null : Ops.Linear(source, m.DownWeight, m.DownBias);
        using var activated = Gelu ? Ops.LinearGelu(source, m.DownWeight, m.DownBias) : Ops.Relu(down!);
        using var dropped = trainSeed is { } seed && Settings.Dropout > 0 ? Ops.Dropout(activated, Settings.Dropout, CounterRng.Hash(seed, m.Stream)) : null;
        using var up = Ops.Linear(dropped ?? activated, m.UpWeight, m.UpBias);
        using var scaled = Settings.Scale != 1f ? Ops.ScaleShift(up, m.Scale, m.Zero) : null;
        return Ops.Add(output, scaled ?? up);
    }

    /// <inheritdoc/>
    protected override IReadOnlyDictionary<string, string> TrainedMetadata => Settings.ToMetadata();

    /// <summary>A bottleneck adapter cannot fold: its activation is not linear.</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public override IReadOnlyList<string> Merge() =>
        throw new NotSupportedException($"{Name}'s bottleneck has a {(Gelu ? "GELU" : "ReLU")}, which no linear layer of a plain model can absorb; export it with its modules as explicit nodes");

    /// <inheritdoc/>
    public override void Dispose()
    {
        foreach (var t in _constants) t.Dispose();
        base.Dispose();
    }
}

/// <summary>
/// The sequential bottleneck adapter of the VTAB baselines (the VPT repository's Pfeiffer-style adapter, one per block
/// after the MLP): the MLP branch's output z becomes z + up(GELU(down(z))), bottleneck 8 by default. Modules
/// <c>blocks.{i}.adapter.down_proj</c> and <c>blocks.{i}.adapter.up_proj</c>. The VPT repository zero-initialises both
/// projections (so only the up-projection's bias ever gets a gradient there); here down is kaiming-uniform and up zero,
/// as LoRA and AdaptFormer do, so the whole adapter trains.
/// </summary>
public sealed class Adapter(AdapterSettings? settings = null, ulong seed = 42) : BottleneckAdapter(settings ?? Defaults, seed)
{
    /// <summary>Bottleneck 8, scale 1, no dropout.</summary>
    public static AdapterSettings Defaults { get; } = new(8, 1f, 0f);

    /// <inheritdoc/>
    public override string Name => PeftMethods.Adapter.Name;

    /// <inheritdoc/>
    public override bool Parallel => false;

    /// <inheritdoc/>
    public override bool Gelu => true;

    /// <inheritdoc/>
    protected override string ModuleName => "adapter";
}

/// <summary>
/// AdaptFormer: a bottleneck beside every block's MLP, reading the branch's input x (the residual stream before the
/// norm) and adding s·up(dropout(ReLU(down(x)))) to the MLP's output, bottleneck 64, s = 0.1, dropout 0.1 by default
/// (the official <c>adaptmlp</c> modules, <c>blocks.{i}.adaptmlp.down_proj</c> / <c>up_proj</c>). The reference adds it
/// after the branch's stochastic depth; here the branch's stochastic depth covers it too (the same in eval mode and
/// at drop path 0).
/// </summary>
public sealed class AdaptFormer(AdapterSettings? settings = null, ulong seed = 42) : BottleneckAdapter(settings ?? Defaults, seed)
{
    /// <summary>Bottleneck 64, scale 0.1, dropout 0.1.</summary>
    public static AdapterSettings Defaults { get; } = new(64, 0.1f, 0.1f);

    /// <inheritdoc/>
    public override string Name => PeftMethods.AdaptFormer.Name;

    /// <inheritdoc/>
    public override bool Parallel => true;

    /// <inheritdoc/>
    public override bool Gelu => false;

    /// <inheritdoc/>
    protected override string ModuleName => "adaptmlp";
}
