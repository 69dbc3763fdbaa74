using Engine.Checkpoints;
using Engine.Kernels;
using Engine.Models.Peft;
using Engine.IO;

namespace Engine.Models.ConvNeXt;

/// <summary>
/// timm's <c>ConvNeXt</c>, built only from engine ops, channels-last throughout:
/// stem (4×4 stride-4 conv, LayerNorm) → stages of [optional downsample (LayerNorm, 2×2 stride-2 conv)] and blocks
/// x + DropPath(γ ⊙ fc2(GELU(fc1(LN(dwconv7×7(x)))))) → global average pool → LayerNorm → head. LayerNorm eps 1e-6,
/// exact GELU. Parameter names are timm's state-dict keys; the original (facebookresearch) keys load too. Every
/// position is pooled, so every site always sees them all (<see cref="IPeftModel.KeepEveryToken"/> has no effect).
/// </summary>
public sealed class ConvNeXt : ImageClassifier
{
    internal const float LayerNormEps = 1e-6f;
    readonly Stage[] _stages;
    readonly FeatureSite _stemConv, _stemNorm, _output;
    readonly Tensor _headNormW, _headNormB;

    sealed record Block(Tensor Gamma, Tensor Zero, FeatureSite Dw, FeatureSite Norm, FeatureSite Fc1, FeatureSite Fc2);

    sealed record Stage(FeatureSite? DownNorm, FeatureSite? DownConv, Block[] Blocks);

    /// <summary>Builds the model with timm's initialisation from <paramref name="seed"/>: truncated-normal(0.02) conv
    /// and linear weights, zero biases, unit norms, layer scale at <see cref="ConvNeXtConfig.ls_init_value"/>.</summary>
    public ConvNeXt(Device device, ConvNeXtConfig config, ulong seed = 0) : base(device, seed)
    {
        Config = config.Validate();

        // Registration order is timm's state-dict order (a module's own parameters before its children's).
        var dims = config.dims;
        _stemConv = AddLinearSite("stem.0", dims[0], true, dims[0], config.in_chans, ConvNeXtConfig.StemPatch, ConvNeXtConfig.StemPatch);
        _stemNorm = AddNormSite("stem.1", dims[0]);
        _stages = new Stage[dims.Length];
        for (int s = 0; s < dims.Length; s++)
        {
            string p = $"stages.{s}.";
            FeatureSite? downNorm = null, downConv = null;
            if (s > 0)
            {
                downNorm = AddNormSite(p + "downsample.0", dims[s - 1]);
                downConv = AddLinearSite(p + "downsample.1", dims[s], true, dims[s], dims[s - 1], 2, 2);
            }
            var blocks = new Block[config.depths[s]];
            int C = dims[s], hidden = config.mlp_ratio * C;
            for (int j = 0; j < blocks.Length; j++)
            {
                string b = $"{p}blocks.{j}.";
                var gamma = AddFilled(b + "gamma", C, config.ls_init_value);
                blocks[j] = new Block(gamma, Tensor.Zeros(device, C),
                    AddLinearSite(b + "conv_dw", C, true, C, 1, config.kernel_size, config.kernel_size), AddNormSite(b + "norm", C),
                    AddLinearSite(b + "mlp.fc1", hidden, true, hidden, C), AddLinearSite(b + "mlp.fc2", C, true, C, hidden));
            }
            _stages[s] = new Stage(downNorm, downConv, blocks);
        }
        _output = AddSite($"stages.{dims.Length - 1}", dims[^1], SiteProducer.StageOutput, null, null);
        _headNormW = AddFilled("head.norm.weight", dims[^1], 1f);
        _headNormB = AddParameter("head.norm.bias", dims[^1]);
        AddHead("head.fc", config.num_classes, dims[^1], config.drop_rate);
    }

    /// <summary>The configuration.</summary>
    public ConvNeXtConfig Config { get; }

    /// <inheritdoc/>
    public override string Family => "convnext";

    /// <inheritdoc/>
    public override int ImageSize => Config.img_size;

    /// <inheritdoc/>
    public override int InChannels => Config.in_chans;

    /// <inheritdoc/>
    public override void SaveConfig(string path) => ConfigFile.Write(path, Config);

    /// <summary>The last stage's output averaged over positions, then the head's norm, [B, C].</summary>
    private protected override Tensor Features(Tensor images, ulong? trainSeed)
    {
        int B = images.Shape[0], side = Config.img_size / ConvNeXtConfig.StemPatch;
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
    public override LoadReport Load(string path, LoadMode mode = LoadMode.Strict)
    {
        using var checkpoint = Checkpoint.Open(path);
        bool original = checkpoint.Find("downsample_layers.0.0.weight") != null;
        var entries = checkpoint.Entries.Select(e => original ? new CheckpointEntry(TimmKey(e.Name), e.Shape, e.DType, e.ReadInto) : e).ToList();
        return LoadEntries(entries, path, mode, "head.fc.weight", "head.fc.bias");
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

    private protected override void DisposeBuffers()
    {
        foreach (var b in _stages.SelectMany(s => s.Blocks)) b.Zero.Dispose();
    }
}
