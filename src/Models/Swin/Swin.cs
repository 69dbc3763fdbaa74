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
/// timm's state-dict keys; the original (microsoft) keys load too. Feature sites: patch_embed.proj and .norm; per block
/// norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2 (SSF's), plus attn_residual on SCT's blocks (the last 9 of the
/// third stage and all of the last); each patch merging's norm; the final norm. Every token is pooled, so every site
/// always sees them all (<see cref="IPeftModel.KeepEveryToken"/> has no effect).
/// </summary>
public sealed class Swin : ImageClassifier
{
    internal const float LayerNormEps = 1e-5f;
    /// <summary>SCT's reference enables its modules on the last 9 blocks of the third stage and every block of the fourth.</summary>
    const int SctBlocksBeforeLastStage = 9;
    /// <summary>The shift mask's value between tokens from different regions of the rolled grid (timm and the original).</summary>
    const float MaskedScore = -100f;
    readonly Stage[] _stages;
    readonly FeatureSite _patchProj, _patchNorm, _norm;

    sealed record Block(Tensor Table, FeatureSite Norm1, FeatureSite Qkv, FeatureSite Proj, FeatureSite? AttnResidual,
        FeatureSite Norm2, FeatureSite Fc1, FeatureSite Fc2);

    sealed record Stage(int Heads, int Window, int Shift, Tensor? Mask, FeatureSite? DownNorm, Tensor? Reduction, Block[] Blocks);

    /// <summary>Builds the model with timm's initialisation from <paramref name="seed"/>: truncated-normal(0.02) weights
    /// and relative position bias tables, zero biases, unit norms.</summary>
    public Swin(Device device, SwinConfig config, ulong seed = 0) : base(device, seed)
    {
        Config = config.Validate();
        // Registration order is timm's state-dict order.
        int p = config.patch_size;
        _patchProj = AddLinearSite("patch_embed.proj", config.embed_dim, true, config.embed_dim, config.in_chans, p, p);
        _patchNorm = AddNormSite("patch_embed.norm", config.embed_dim);
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
                downNorm = AddNormSite(prefix + "downsample.norm", 4 * config.Dim(s - 1));
                reduction = AddWeight(prefix + "downsample.reduction.weight", C, 4 * config.Dim(s - 1));
            }
            var blocks = new Block[config.depths[s]];
            for (int j = 0; j < blocks.Length; j++)
            {
                string b = $"{prefix}blocks.{j}.";
                bool sct = s == stages - 1 || (s == stages - 2 && j >= blocks.Length - SctBlocksBeforeLastStage);
                var norm1 = AddNormSite(b + "norm1", C);
                var table = AddWeight(b + "attn.relative_position_bias_table", (2 * window - 1) * (2 * window - 1), heads);
                blocks[j] = new Block(table, norm1, AddLinearSite(b + "attn.qkv", 3 * C, config.qkv_bias, 3 * C, C), AddLinearSite(b + "attn.proj", C, true, C, C),
                    sct ? AddSite(b + "attn_residual", C, SiteProducer.Residual, null, null) : null,
                    AddNormSite(b + "norm2", C), AddLinearSite(b + "mlp.fc1", hidden, true, hidden, C), AddLinearSite(b + "mlp.fc2", C, true, C, hidden));
            }
            var mask = shift > 0 && blocks.Length > 1 ? ShiftMask(device, config.Resolution(s), window, shift) : null;
            _stages[s] = new Stage(heads, window, shift, mask, downNorm, reduction, blocks);
        }
        _norm = AddNormSite("norm", config.Dim(stages - 1));
        AddHead("head.fc", config.num_classes, config.Dim(stages - 1), config.drop_rate);
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
    public override string Family => "swin";

    /// <inheritdoc/>
    public override int ImageSize => Config.img_size;

    /// <inheritdoc/>
    public override int InChannels => Config.in_chans;

    /// <inheritdoc/>
    public override void SaveConfig(string path) => ConfigFile.Write(path, Config);

    /// <inheritdoc/>
    public override IEnumerable<Tensor> SparseGradientWeights =>
        base.SparseGradientWeights.Concat(_stages.Where(st => st.Reduction != null).Select(st => st.Reduction!)); // a Linear with no site of its own

    /// <summary>The tokens after the final norm, averaged, [B, C] (timm's forward_features + pooling).</summary>
    private protected override Tensor Features(Tensor images, ulong? trainSeed)
    {
        int B = images.Shape[0], side = Config.img_size / Config.patch_size;
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
    public override LoadReport Load(string path, LoadMode mode = LoadMode.Strict)
    {
        using var checkpoint = Checkpoint.Open(path);
        bool original = checkpoint.Find("head.weight") != null || checkpoint.Find("layers.0.downsample.reduction.weight") != null;
        var entries = checkpoint.Entries.Where(e => !IsBuffer(e.Name))
            .Select(e => original ? new CheckpointEntry(TimmKey(e.Name), e.Shape, e.DType, e.ReadInto) : e).ToList();
        return LoadEntries(entries, path, mode, "head.fc.weight", "head.fc.bias");
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

    private protected override void DisposeBuffers()
    {
        foreach (var s in _stages) s.Mask?.Dispose();
    }
}
