using Engine.Checkpoints;
using Engine.Kernels;
using Engine.Models.Peft;
using Engine.IO;

namespace Engine.Models.Swin;

/// <summary>
/// timm's <c>SwinTransformer</c>, built only from engine ops, channels-last [B, H, W, C] throughout: patch embedding
/// (p×p stride-p conv, LayerNorm) → stages of [2×2 patch merging (LayerNorm over 4C, bias-free Linear 4C → 2C) from
/// the second stage on] and blocks x + DropPath(W-MSA(LN1(x))), x + DropPath(MLP(LN2(x))) → LayerNorm → average pool →
/// head. Window attention adds the relative position bias and, on odd blocks of stages whose grid exceeds the window,
/// runs on the cyclically shifted grid with the −100 shift mask. LayerNorm eps 1e-5, exact GELU. Parameter names are
/// timm's state-dict keys; the original (microsoft) keys load too.
/// </summary>
public sealed class Swin : IImageClassifier
{
    internal const float LayerNormEps = 1e-5f;
    /// <summary>SCT's reference enables its modules on the last 9 blocks of the third stage and every block of the fourth.</summary>
    const int SctBlocksBeforeLastStage = 9;
    /// <summary>The shift mask's value between tokens from different regions of the rolled grid (timm and the original).</summary>
    const float MaskedScore = -100f;
    readonly List<Tensor> _parameters = new();
    readonly List<FeatureSite> _sites = new();
    readonly Stage[] _stages;
    readonly FeatureSite _patchProj, _patchNorm, _norm;
    readonly Tensor? _headW, _headB;

    sealed record Block(Tensor Table, FeatureSite Norm1, FeatureSite Qkv, FeatureSite Proj, FeatureSite? AttnResidual,
        FeatureSite Norm2, FeatureSite Fc1, FeatureSite Fc2);

    sealed record Stage(int Heads, int Window, int Shift, Tensor? Mask, FeatureSite? DownNorm, Tensor? Reduction, Block[] Blocks);

    /// <summary>Builds the model with timm's initialisation from <paramref name="seed"/>: truncated-normal(0.02) weights
    /// and relative position bias tables, zero biases, unit norms.</summary>
    public Swin(Device device, SwinConfig config, ulong seed = 0)
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
        FeatureSite Site(string name, int channels, SiteProducer producer, Tensor? weight, Tensor? bias)
        {
            var site = new FeatureSite(name, channels, producer, weight, bias);
            _sites.Add(site);
            return site;
        }
        FeatureSite Norm(string name, int channels)
        {
            var w = Add(name + ".weight", channels);
            Init.Constant(w, 1f);
            return Site(name, channels, SiteProducer.LayerNorm, w, Add(name + ".bias", channels));
        }
        FeatureSite Linear(string name, int outputs, int inputs, bool bias = true) =>
            Site(name, outputs, SiteProducer.Linear, Weight(name + ".weight", outputs, inputs), bias ? Add(name + ".bias", outputs) : null);

        // Registration order is timm's state-dict order.
        int p = config.patch_size;
        _patchProj = Site("patch_embed.proj", config.embed_dim, SiteProducer.Linear,
            Weight("patch_embed.proj.weight", config.embed_dim, config.in_chans, p, p), Add("patch_embed.proj.bias", config.embed_dim));
        _patchNorm = Norm("patch_embed.norm", config.embed_dim);
        int stages = config.depths.Length;
        _stages = new Stage[stages];
        for (int s = 0; s < stages; s++)
        {
            string prefix = $"layers.{s}.";
            int C = config.Dim(s), heads = config.num_heads[s], hidden = (int)MathF.Round(config.mlp_ratio * C);
            var (window, shift) = config.WindowOf(s);
            FeatureSite? downNorm = null;
            Tensor? reduction = null;
            if (s > 0)
            {
                downNorm = Norm(prefix + "downsample.norm", 4 * config.Dim(s - 1));
                reduction = Weight(prefix + "downsample.reduction.weight", C, 4 * config.Dim(s - 1));
            }
            var blocks = new Block[config.depths[s]];
            for (int j = 0; j < blocks.Length; j++)
            {
                string b = $"{prefix}blocks.{j}.";
                bool sct = s == stages - 1 || (s == stages - 2 && j >= blocks.Length - SctBlocksBeforeLastStage);
                var norm1 = Norm(b + "norm1", C);
                var table = Weight(b + "attn.relative_position_bias_table", (2 * window - 1) * (2 * window - 1), heads);
                blocks[j] = new Block(table, norm1, Linear(b + "attn.qkv", 3 * C, C, config.qkv_bias), Linear(b + "attn.proj", C, C),
                    sct ? Site(b + "attn_residual", C, SiteProducer.Residual, null, null) : null,
                    Norm(b + "norm2", C), Linear(b + "mlp.fc1", hidden, C), Linear(b + "mlp.fc2", C, hidden));
            }
            var mask = shift > 0 && blocks.Length > 1 ? ShiftMask(device, config.Resolution(s), window, shift) : null;
            _stages[s] = new Stage(heads, window, shift, mask, downNorm, reduction, blocks);
        }
        _norm = Norm("norm", config.Dim(stages - 1));
        if (config.num_classes > 0)
        {
            _headW = Weight("head.fc.weight", config.num_classes, config.Dim(stages - 1));
            _headB = Add("head.fc.bias", config.num_classes);
        }
    }

    /// <summary>
    /// The attention mask of a shifted stage, [nW, T, T]: the rolled grid is cut into regions by the rows and columns
    /// [0, R−ws), [R−ws, R−shift), [R−shift, R); within each window, token pairs from different regions get −100.
    /// </summary>
    static Tensor ShiftMask(Device device, int resolution, int window, int shift)
    {
        static int Region(int v, int r, int ws, int s) => v < r - ws ? 0 : v < r - s ? 1 : 2;
        int perSide = resolution / window, T = window * window;
        var mask = new float[perSide * perSide * T * T];
        var label = new int[T];
        for (int w = 0; w < perSide * perSide; w++)
        {
            for (int t = 0; t < T; t++)
                label[t] = 3 * Region(w / perSide * window + t / window, resolution, window, shift) + Region(w % perSide * window + t % window, resolution, window, shift);
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++)
                    mask[((long)w * T + i) * T + j] = label[i] == label[j] ? 0f : MaskedScore;
        }
        return Tensor.FromArray(device, mask, perSide * perSide, T, T);
    }

    /// <summary>The configuration.</summary>
    public SwinConfig Config { get; }

    /// <summary>Stage <paramref name="stage"/>'s shift mask [nW, T, T] as values (null when the stage never shifts), for export.</summary>
    internal float[]? ShiftMaskValues(int stage) => _stages[stage].Mask?.ToArray();

    /// <inheritdoc/>
    public IReadOnlyList<Tensor> Parameters => _parameters;

    /// <inheritdoc/>
    public string Family => "swin";

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
        ?? throw new KeyNotFoundException($"Swin has no parameter '{name}'");

    /// <summary>Every feature site: patch_embed.proj and .norm; per block norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
    /// mlp.fc2 (SSF's), plus attn_residual on SCT's blocks (the last 9 of the third stage and all of the last);
    /// each patch merging's norm; the final norm.</summary>
    public IReadOnlyList<FeatureSite> Sites => _sites;

    /// <inheritdoc/>
    public Func<FeatureSite, Tensor, Tensor>? SiteHook { get; set; }

    /// <inheritdoc cref="IPeftModel.KeepEveryToken"/>
    /// <remarks>No effect here (Swin pools every token: it always runs them all).</remarks>
    public bool KeepEveryToken { get; set; }

    /// <inheritdoc/>
    public Func<FeatureSite, ChannelAffine?>? SiteAffine { get; set; }

    /// <inheritdoc/>
    public LinearSiteHook? LinearHook { get; set; }

    /// <inheritdoc/>
    public MlpBranchHook? MlpHook { get; set; }

    /// <inheritdoc/>
    public int NumPrefixTokens => 0;

    /// <inheritdoc/>
    public IEnumerable<Tensor> SparseGradientWeights =>
        _sites.Where(s => s.Producer == SiteProducer.Linear && s.Weight != null).Select(s => s.Weight!)
            .Concat(_stages.Where(st => st.Reduction != null).Select(st => st.Reduction!)); // a Linear with no site of its own

    /// <summary>Logits [B, num_classes] for images [B, in_chans, img_size, img_size] (NCHW, normalised); with
    /// num_classes 0, the pooled features. A <paramref name="trainSeed"/> turns on stochastic depth and head dropout;
    /// null is eval mode.</summary>
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
        int size = Config.img_size, side = size / Config.patch_size;
        if (images.Rank != 4 || images.Shape[1] != Config.in_chans || images.Shape[2] != size || images.Shape[3] != size)
            throw new ArgumentException($"Swin input {images.Describe()} must be [B, {Config.in_chans}, {size}, {size}]");
        int B = images.Shape[0];
        using var folds = this.FoldSiteAffines(); // SSF's scales and shifts into every layer at once
        Tensor x;
        using (var tokens = this.Produce(_patchProj, (w, b) => Ops.PatchEmbed(images, w!, b)))
        using (var grid = tokens.Reshape(B, side, side, Config.embed_dim))
            x = this.Produce(_patchNorm, (w, b) => Ops.LayerNorm(grid, w, b, LayerNormEps));
        int total = Config.depths.Sum(), index = 0;
        foreach (var stage in _stages)
        {
            if (stage.DownNorm != null)
            {
                using var merged = Ops.PatchMerge(x);
                x.Dispose();
                using var normed = this.Produce(stage.DownNorm, (w, b) => Ops.LayerNorm(merged, w, b, LayerNormEps));
                x = Ops.Linear(normed, stage.Reduction!);
            }
            for (int j = 0; j < stage.Blocks.Length; j++)
            {
                var block = stage.Blocks[j];
                float rate = total > 1 ? Config.drop_path_rate * index / (total - 1) : Config.drop_path_rate;
                ulong site = 16 + 4 * (ulong)index;
                x = SiteComputation.Residual(x, WindowAttention(x, stage, block, j % 2 == 1 ? stage.Shift : 0, trainSeed), rate, trainSeed, site);
                if (block.AttnResidual != null) x = this.Transform(block.AttnResidual, x);
                x = Mlp(x, block, trainSeed, rate, site + 1);
                index++;
            }
        }
        using (x)
        using (var normed = this.Produce(_norm, (w, b) => Ops.LayerNorm(x, w, b, LayerNormEps)))
        using (var tokens = normed.Reshape(B, normed.Shape[1] * normed.Shape[2], normed.Shape[3]))
            return Ops.MeanTokens(tokens);
    }

    /// <summary>proj(attention(qkv(window partition(LN1(x))))) with the bias (and the mask when shifted), windows
    /// reversed back onto the grid: [B,H,W,C] → [B,H,W,C].</summary>
    Tensor WindowAttention(Tensor x, Stage stage, Block b, int shift, ulong? trainSeed)
    {
        int H = x.Shape[1], W = x.Shape[2];
        using var h = this.Produce(b.Norm1, (w, bias) => Ops.LayerNorm(x, w, bias, LayerNormEps));
        using var windows = Ops.WindowPartition(h, stage.Window, shift);
        using var qkv = this.ProduceLinear(b.Qkv, windows, trainSeed);
        using var relative = Ops.RelativePositionBias(b.Table, stage.Window);
        using var attended = Ops.Attention(qkv, stage.Heads, relative, shift > 0 ? stage.Mask : null, gemmInput: this.OnlyProductsReadLinearInputs());
        using var projected = this.ProduceLinear(b.Proj, attended, trainSeed);
        return Ops.WindowReverse(projected, H, W, shift);
    }

    /// <summary>x + DropPath(fc2(GELU(fc1(LN2(x))))), [B,H,W,C], the MLP hook before the sum; the add inside fc2 when
    /// nothing stands between it and the sum (no hook, no drop path drawn). LN2's and GELU's outputs 16-bit under bf16
    /// or fp16 GEMMs when only fc1 and fc2 read them. Disposes x.</summary>
    Tensor Mlp(Tensor x, Block b, ulong? trainSeed, float dropPath, ulong site)
    {
        bool sixteen = this.OnlyProductsReadLinearInputs();
        using var h = this.Produce(b.Norm2, (w, bias) => Ops.LayerNorm(x, w, bias, LayerNormEps, sixteen));
        using var g = this.ProduceGelu(b.Fc1, h, trainSeed, sixteen);
        if (this.JoinsBranchesInLayers() && (!trainSeed.HasValue || dropPath == 0))
        {
            using (x) return this.ProduceLinearResidual(b.Fc2, g, x);
        }
        return SiteComputation.Residual(x, this.MlpBranch(b.Fc2, x, this.ProduceLinear(b.Fc2, g, trainSeed), trainSeed), dropPath, trainSeed, site);
    }

    /// <summary>
    /// Loads a checkpoint: timm safetensors, or the original PyTorch .pth (the state dict under 'model'), whose keys
    /// are renamed to timm's (layers.N.downsample → layers.N+1.downsample, head → head.fc). The buffers
    /// <c>relative_position_index</c> and <c>attn_mask</c> are recomputed, never loaded, so either format may hold them.
    /// In <see cref="LoadMode.NewHead"/> the classifier keeps its fresh initialisation.
    /// </summary>
    /// <exception cref="InvalidInputException">The file is malformed or does not fit; one message lists every problem.</exception>
    public LoadReport Load(string path, LoadMode mode = LoadMode.Strict)
    {
        using var checkpoint = Checkpoint.Open(path);
        bool original = checkpoint.Find("head.weight") != null || checkpoint.Find("layers.0.downsample.reduction.weight") != null;
        var entries = checkpoint.Entries.Where(e => !IsBuffer(e.Name))
            .Select(e => original ? new CheckpointEntry(TimmKey(e.Name), e.Shape, e.DType, e.ReadInto) : e).ToList();
        var skip = mode == LoadMode.NewHead ? new HashSet<string> { "head.fc.weight", "head.fc.bias" } : null;
        if (skip != null) entries.RemoveAll(e => skip.Contains(e.Name));
        return StateDict.Load(_parameters, entries, path, strict: mode != LoadMode.NonStrict, skip);
    }

    static bool IsBuffer(string key) =>
        key.EndsWith(".relative_position_index", StringComparison.Ordinal) || key.EndsWith(".attn_mask", StringComparison.Ordinal) || key == "attn_mask";

    /// <summary>The timm key of an original Swin key.</summary>
    public static string TimmKey(string key)
    {
        var parts = key.Split('.');
        if (parts is ["layers", var n, "downsample", .. var rest] && int.TryParse(n, out int stage))
            return string.Join('.', ["layers", (stage + 1).ToString(), "downsample", .. rest]);
        if (parts is ["head", .. var tail]) return string.Join('.', ["head", "fc", .. tail]);
        return key;
    }

    /// <summary>Writes every parameter to a .safetensors file under its timm key (atomically).</summary>
    public void Save(string path) => SafeTensors.Write(path, _parameters);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var p in _parameters) p.Dispose();
        foreach (var s in _stages) s.Mask?.Dispose();
        _parameters.Clear();
    }
}
