using Engine.Checkpoints;
using Engine.Kernels;
using Engine.Models.Peft;
using Engine.IO;

namespace Engine.Models.ConvNeXt;

/// <summary>
/// timm's <c>ConvNeXt</c>, built only from engine ops, channels-last throughout:
/// stem (4×4 stride-4 conv, LayerNorm) → stages of [optional downsample (LayerNorm, 2×2 stride-2 conv)] and blocks
/// x + DropPath(γ ⊙ fc2(GELU(fc1(LN(dwconv7×7(x)))))) → global average pool → LayerNorm → head. LayerNorm eps 1e-6,
/// exact GELU. Parameter names are timm's state-dict keys; the original (facebookresearch) keys load too.
/// </summary>
public sealed class ConvNeXt : IImageClassifier
{
    internal const float LayerNormEps = 1e-6f;
    readonly List<Tensor> _parameters = new();
    readonly List<FeatureSite> _sites = new();
    readonly Stage[] _stages;
    readonly FeatureSite _stemConv, _stemNorm, _output;
    readonly Tensor _headNormW, _headNormB;
    readonly Tensor? _headW, _headB;

    sealed record Block(Tensor Gamma, Tensor Zero, FeatureSite Dw, FeatureSite Norm, FeatureSite Fc1, FeatureSite Fc2);

    sealed record Stage(FeatureSite? DownNorm, FeatureSite? DownConv, Block[] Blocks);

    /// <summary>Builds the model with timm's initialisation from <paramref name="seed"/>: truncated-normal(0.02) conv
    /// and linear weights, zero biases, unit norms, layer scale at <see cref="ConvNeXtConfig.ls_init_value"/>.</summary>
    public ConvNeXt(Device device, ConvNeXtConfig config, ulong seed = 0)
    {
        Config = config.Validate();
        ulong next = seed;
        Tensor Add(string name, params int[] shape)
        {
            var t = Tensor.Parameter(device, name, shape);
            _parameters.Add(t);
            return t;
        }
        Tensor Weight(string name, params int[] shape)
        {
            var t = Add(name, shape);
            Init.TruncatedNormal(t, 0.02f, next++);
            return t;
        }
        Tensor Filled(string name, int n, float value)
        {
            var t = Add(name, n);
            Init.Constant(t, value);
            return t;
        }
        FeatureSite Site(string name, int channels, SiteProducer producer, Tensor? weight, Tensor? bias)
        {
            var site = new FeatureSite(name, channels, producer, weight, bias);
            _sites.Add(site);
            return site;
        }
        FeatureSite Norm(string name, int channels) => Site(name, channels, SiteProducer.LayerNorm, Filled(name + ".weight", channels, 1f), Add(name + ".bias", channels));
        FeatureSite Conv(string name, int channels, params int[] shape) => Site(name, channels, SiteProducer.Linear, Weight(name + ".weight", shape), Add(name + ".bias", channels));

        // Registration order is timm's state-dict order (a module's own parameters before its children's).
        var dims = config.dims;
        _stemConv = Conv("stem.0", dims[0], dims[0], config.in_chans, ConvNeXtConfig.StemPatch, ConvNeXtConfig.StemPatch);
        _stemNorm = Norm("stem.1", dims[0]);
        _stages = new Stage[dims.Length];
        for (int s = 0; s < dims.Length; s++)
        {
            string p = $"stages.{s}.";
            FeatureSite? downNorm = null, downConv = null;
            if (s > 0)
            {
                downNorm = Norm(p + "downsample.0", dims[s - 1]);
                downConv = Conv(p + "downsample.1", dims[s], dims[s], dims[s - 1], 2, 2);
            }
            var blocks = new Block[config.depths[s]];
            int C = dims[s], hidden = config.mlp_ratio * C;
            for (int j = 0; j < blocks.Length; j++)
            {
                string b = $"{p}blocks.{j}.";
                var gamma = Filled(b + "gamma", C, config.ls_init_value);
                blocks[j] = new Block(gamma, Tensor.Zeros(device, C),
                    Conv(b + "conv_dw", C, C, 1, config.kernel_size, config.kernel_size), Norm(b + "norm", C),
                    Conv(b + "mlp.fc1", hidden, hidden, C), Conv(b + "mlp.fc2", C, C, hidden));
            }
            _stages[s] = new Stage(downNorm, downConv, blocks);
        }
        _output = Site($"stages.{dims.Length - 1}", dims[^1], SiteProducer.StageOutput, null, null);
        _headNormW = Filled("head.norm.weight", dims[^1], 1f);
        _headNormB = Add("head.norm.bias", dims[^1]);
        if (config.num_classes > 0)
        {
            _headW = Weight("head.fc.weight", config.num_classes, dims[^1]);
            _headB = Add("head.fc.bias", config.num_classes);
        }
    }

    /// <summary>The configuration.</summary>
    public ConvNeXtConfig Config { get; }

    /// <inheritdoc/>
    public IReadOnlyList<Tensor> Parameters => _parameters;

    /// <inheritdoc/>
    public string Family => "convnext";

    /// <inheritdoc/>
    public int ImageSize => Config.img_size;

    /// <inheritdoc/>
    public int InChannels => Config.in_chans;

    /// <inheritdoc/>
    public void SaveConfig(string path) => ConfigFile.Write(path, Config);

    /// <inheritdoc/>
    public long ParameterCount => _parameters.Sum(p => p.Count);

    /// <summary>The parameter with timm key <paramref name="name"/>.</summary>
    public Tensor this[string name] => _parameters.FirstOrDefault(p => p.Name == name)
        ?? throw new KeyNotFoundException($"ConvNeXt has no parameter '{name}'");

    /// <inheritdoc/>
    public IReadOnlyList<FeatureSite> Sites => _sites;

    /// <inheritdoc/>
    public Func<FeatureSite, Tensor, Tensor>? SiteHook { get; set; }

    /// <inheritdoc cref="IPeftModel.KeepEveryToken"/>
    /// <remarks>No effect here (ConvNeXt pools every position: it always runs them all).</remarks>
    public bool KeepEveryToken { get; set; }

    /// <inheritdoc/>
    public Func<FeatureSite, ChannelAffine?>? SiteAffine { get; set; }

    /// <inheritdoc/>
    public LinearSiteHook? LinearHook { get; set; }

    /// <inheritdoc/>
    public MlpBranchHook? MlpHook { get; set; }

    /// <inheritdoc/>
    public int NumPrefixTokens => 0;

    /// <summary>Logits [B, num_classes] for images [B, in_chans, img_size, img_size] (NCHW, normalised); with
    /// num_classes 0, the pooled, normalised features. A <paramref name="trainSeed"/> turns on stochastic depth and
    /// head dropout; null is eval mode.</summary>
    public Tensor Forward(Tensor images, ulong? trainSeed = null)
    {
        var features = ForwardFeatures(images, trainSeed);
        if (_headW == null) return features;
        using (features)
        {
            using var dropped = trainSeed.HasValue && Config.drop_rate > 0 ? Ops.Dropout(features, Config.drop_rate, CounterRng.Hash(trainSeed.Value, 1)) : null;
            return Ops.Linear(dropped ?? features, _headW, _headB);
        }
    }

    /// <inheritdoc/>
    public Tensor ForwardFeatures(Tensor images, ulong? trainSeed = null)
    {
        int size = Config.img_size, side = size / ConvNeXtConfig.StemPatch;
        if (images.Rank != 4 || images.Shape[1] != Config.in_chans || images.Shape[2] != size || images.Shape[3] != size)
            throw new ArgumentException($"ConvNeXt input {images.Describe()} must be [B, {Config.in_chans}, {size}, {size}]");
        int B = images.Shape[0];
        using var folds = this.FoldSiteAffines(); // SSF's scales and shifts into every layer at once
        Tensor x;
        using (var tokens = this.Produce(_stemConv, (w, b) => Ops.PatchEmbed(images, w!, b)))
        using (var grid = tokens.Reshape(B, side, side, Config.dims[0]))
            x = this.Produce(_stemNorm, (w, b) => Ops.LayerNorm(grid, w, b, LayerNormEps));
        int total = Config.depths.Sum(), index = 0;
        foreach (var stage in _stages)
        {
            if (stage.DownNorm != null)
            {
                using var normed = this.Produce(stage.DownNorm, (w, b) => Ops.LayerNorm(x, w, b, LayerNormEps));
                x.Dispose();
                x = this.Produce(stage.DownConv!, (w, b) => Ops.PatchConv(normed, w!, b));
            }
            foreach (var block in stage.Blocks)
            {
                float rate = total > 1 ? Config.drop_path_rate * index / (total - 1) : Config.drop_path_rate;
                // The branch joins the stream inside fc2's pass when nothing stands between them (no hook, no drop path).
                bool join = this.JoinsBranchesInLayers() && (!trainSeed.HasValue || rate == 0);
                x = join ? Branch(x, block, trainSeed, join: true)
                    : SiteComputation.Residual(x, Branch(x, block, trainSeed, join: false), rate, trainSeed, 16 + (ulong)index);
                index++;
            }
        }
        x = this.Transform(_output, x);
        using (x)
        using (var pooled = Ops.MeanTokens(x))
            return Ops.LayerNorm(pooled, _headNormW, _headNormB, LayerNormEps);
    }

    /// <summary>γ ⊙ fc2(GELU(fc1(LN(dwconv(x))))), [B,H,W,C]; LN's and GELU's outputs 16-bit under bf16 or fp16 GEMMs
    /// when only fc1 and fc2 read them. With <paramref name="join"/>, x + that, the add in fc2's pass (x is disposed).</summary>
    Tensor Branch(Tensor x, Block b, ulong? trainSeed, bool join)
    {
        int pad = Config.kernel_size / 2;
        bool sixteen = this.OnlyProductsReadLinearInputs();
        using var dw = this.Produce(b.Dw, (w, bias) => Ops.DepthwiseConv2d(x, w!, bias, pad));
        using var normed = this.Produce(b.Norm, (w, bias) => Ops.LayerNorm(dw, w, bias, LayerNormEps, sixteen));
        using var activated = this.ProduceGelu(b.Fc1, normed, trainSeed, sixteen);
        if (join)
        {
            using (x) return this.ProduceLinearScaled(b.Fc2, activated, b.Gamma, b.Zero, trainSeed, residual: x);
        }
        return this.MlpBranch(b.Fc2, x, this.ProduceLinearScaled(b.Fc2, activated, b.Gamma, b.Zero, trainSeed), trainSeed);
    }

    /// <summary>
    /// Loads a checkpoint: timm safetensors, or the original PyTorch .pth (the state dict under 'model'), whose keys
    /// are renamed to timm's (downsample_layers.0 → stem, downsample_layers.N.M → stages.N.downsample.M,
    /// stages.s.j → stages.s.blocks.j, dwconv → conv_dw, pwconv1/2 → mlp.fc1/2, norm → head.norm, head → head.fc).
    /// In <see cref="LoadMode.NewHead"/> the classifier keeps its fresh initialisation.
    /// </summary>
    /// <exception cref="InvalidInputException">The file is malformed or does not fit; one message lists every problem.</exception>
    public LoadReport Load(string path, LoadMode mode = LoadMode.Strict)
    {
        using var checkpoint = Checkpoint.Open(path);
        bool original = checkpoint.Find("downsample_layers.0.0.weight") != null;
        var entries = checkpoint.Entries.Select(e => original ? new CheckpointEntry(TimmKey(e.Name), e.Shape, e.DType, e.ReadInto) : e).ToList();
        var skip = mode == LoadMode.NewHead ? new HashSet<string> { "head.fc.weight", "head.fc.bias" } : null;
        if (skip != null) entries.RemoveAll(e => skip.Contains(e.Name));
        return StateDict.Load(_parameters, entries, path, strict: mode != LoadMode.NonStrict, skip);
    }

    /// <summary>The timm key of an original ConvNeXt key.</summary>
    public static string TimmKey(string key)
    {
        var parts = key.Split('.');
        if (parts is ["downsample_layers", "0", var m, .. var rest0]) return string.Join('.', ["stem", m, .. rest0]);
        if (parts is ["downsample_layers", var n, var m2, .. var rest1]) return string.Join('.', ["stages", n, "downsample", m2, .. rest1]);
        if (parts is ["stages", var s, var j, .. var rest2])
        {
            string inner = string.Join('.', rest2).Replace("dwconv.", "conv_dw.").Replace("pwconv1.", "mlp.fc1.").Replace("pwconv2.", "mlp.fc2.");
            return $"stages.{s}.blocks.{j}.{inner}";
        }
        if (parts is ["norm", .. var rest3]) return string.Join('.', ["head", "norm", .. rest3]);
        if (parts is ["head", .. var rest4]) return string.Join('.', ["head", "fc", .. rest4]);
        return key;
    }

    /// <summary>Writes every parameter to a .safetensors file under its timm key (atomically).</summary>
    public void Save(string path) => SafeTensors.Write(path, _parameters);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var p in _parameters) p.Dispose();
        foreach (var b in _stages.SelectMany(s => s.Blocks)) b.Zero.Dispose();
        _parameters.Clear();
    }
}
