using Engine.Checkpoints;
using Engine.Imaging;
using Engine.Kernels;
using Engine.Models.Peft;
using Engine.IO;

namespace Engine.Models.Vit;

/// <summary>
/// timm's <c>VisionTransformer</c> (class-token pooling), built only from engine ops:
/// patch embedding (conv kernel = stride = patch) → prepend cls_token → + pos_embed → dropout →
/// depth × [x += DropPath(Attn(LN1(x))); x += DropPath(MLP(LN2(x)))] → LN → take token 0 → dropout → head.
/// LayerNorm eps 1e-6, qkv laid out q|k|v, scale head_dim^−½, exact GELU. Parameter names are timm's state-dict keys.
/// Train mode (a seed passed to <see cref="ImageClassifier.Forward"/>) enables dropout and stochastic depth; eval mode is deterministic.
/// </summary>
public sealed class VisionTransformer : ImageClassifier
{
    internal const float LayerNormEps = 1e-6f;
    readonly Tensor _patchW, _patchB, _cls, _pos, _normW, _normB;
    readonly Block[] _blocks;
    readonly FeatureSite _patchSite, _normSite;

    sealed record Block(Tensor Norm1W, Tensor Norm1B, Tensor QkvW, Tensor? QkvB, Tensor ProjW, Tensor ProjB,
        Tensor Norm2W, Tensor Norm2B, Tensor Fc1W, Tensor Fc1B, Tensor Fc2W, Tensor Fc2B)
    {
        /// <summary>norm1, attn.qkv, attn.proj, norm2, mlp.fc1 (before GELU), mlp.fc2, then the sum after attention.</summary>
        public FeatureSite[] Sites = [];
    }

    /// <summary>Builds the model with timm's initialisation from <paramref name="seed"/>: truncated-normal(0.02)
    /// linear, patch and position weights, cls_token Normal(1e-6), zero biases, unit norm weights.</summary>
    public VisionTransformer(Device device, VitConfig config, ulong seed = 0) : base(device, seed)
    {
        Config = config.Validate();
        int C = config.embed_dim, H = config.MlpHidden, p = config.patch_size;
        // Registration order is timm's state-dict order.
        _cls = AddParameter("cls_token", 1, 1, C);
        Init.Normal(_cls, 1e-6f, NextSeed());
        _pos = AddWeight("pos_embed", 1, config.Tokens, C);
        _patchW = AddWeight("patch_embed.proj.weight", C, config.in_chans, p, p);
        _patchB = AddParameter("patch_embed.proj.bias", C);
        _blocks = new Block[config.depth];
        for (int i = 0; i < config.depth; i++)
        {
            string b = $"blocks.{i}.";
            _blocks[i] = new Block(AddFilled(b + "norm1.weight", C, 1f), AddParameter(b + "norm1.bias", C),
                AddWeight(b + "attn.qkv.weight", 3 * C, C), config.qkv_bias ? AddParameter(b + "attn.qkv.bias", 3 * C) : null,
                AddWeight(b + "attn.proj.weight", C, C), AddParameter(b + "attn.proj.bias", C),
                AddFilled(b + "norm2.weight", C, 1f), AddParameter(b + "norm2.bias", C),
                AddWeight(b + "mlp.fc1.weight", H, C), AddParameter(b + "mlp.fc1.bias", H),
                AddWeight(b + "mlp.fc2.weight", C, H), AddParameter(b + "mlp.fc2.bias", C));
        }
        _normW = AddFilled("norm.weight", C, 1f);
        _normB = AddParameter("norm.bias", C);
        // Feature sites in forward order (the SSF insertion points, and the residual after attention for SCT).
        _patchSite = AddSite("patch_embed", C, SiteProducer.Linear, _patchW, _patchB);
        for (int i = 0; i < config.depth; i++)
        {
            var b = _blocks[i];
            string n = $"blocks.{i}.";
            b.Sites =
            [
                AddSite(n + "norm1", C, SiteProducer.LayerNorm, b.Norm1W, b.Norm1B),
                AddSite(n + "attn.qkv", 3 * C, SiteProducer.Linear, b.QkvW, b.QkvB),
                AddSite(n + "attn.proj", C, SiteProducer.Linear, b.ProjW, b.ProjB),
                AddSite(n + "attn_residual", C, SiteProducer.Residual, null, null),
                AddSite(n + "norm2", C, SiteProducer.LayerNorm, b.Norm2W, b.Norm2B),
                AddSite(n + "mlp.fc1", H, SiteProducer.Linear, b.Fc1W, b.Fc1B),
                AddSite(n + "mlp.fc2", C, SiteProducer.Linear, b.Fc2W, b.Fc2B),
            ];
        }
        _normSite = AddSite("norm", C, SiteProducer.LayerNorm, _normW, _normB);
        AddHead("head", config.num_classes, C, config.drop_rate);
    }

    /// <summary>The configuration.</summary>
    public VitConfig Config { get; }

    /// <summary>Called with each block's index, its input tokens [B, T, C] and the train seed (null in eval mode);
    /// returns the tokens the block runs on (VPT-deep appends its prompts here). The class token stays token 0.
    /// Null: none.</summary>
    public Func<int, Tensor, ulong?, Tensor>? BlockInputHook { get; set; }

    /// <inheritdoc/>
    public override string Family => "vit";

    /// <inheritdoc/>
    public override int ImageSize => Config.img_size;

    /// <inheritdoc/>
    public override int InChannels => Config.in_chans;

    /// <inheritdoc/>
    public override void SaveConfig(string path) => Config.Save(path);

    /// <inheritdoc/>
    public override int NumPrefixTokens => 1;

    /// <summary>The class token after the final norm, [B, embed_dim] (timm's forward_features + pooling).</summary>
    private protected override Tensor Features(Tensor images, ulong? trainSeed)
    {
        Tensor x;
        using (var patches = this.Produce(_patchSite, (w, bias) => Ops.PatchEmbed(images, w!, bias)))
        using (var withCls = Ops.PrependToken(patches, _cls))
            x = Drop(Ops.AddPositionEmbedding(withCls, _pos), Config.pos_drop_rate, trainSeed, site: 2);
        for (int i = 0; i < _blocks.Length; i++)
        {
            var b = _blocks[i];
            float dropPath = _blocks.Length > 1 ? Config.drop_path_rate * i / (_blocks.Length - 1) : Config.drop_path_rate;
            ulong site = 16 + 8 * (ulong)i;
            if (BlockInputHook?.Invoke(i, x, trainSeed) is { } tokens && !ReferenceEquals(tokens, x))
            {
                x.Dispose();
                x = tokens;
            }
            // Only the class token leaves the last block. Its attention reads every token, but the projection, the
            // residuals, the MLP and the final norm need only the class row, so they run on it alone (ViT-B/16: 6% of
            // the forward's products), with its values and every gradient bit for bit the full block's. Not while a
            // hook observes every token, nor in training where a mask drawn per element (dropout at the projection or
            // the MLP, or inside a Linear or MLP hook: LoRA's, an adapter's) would see another shape; stochastic depth
            // draws one per image.
            bool classRowOnly = i == _blocks.Length - 1 && !KeepEveryToken
                && (!trainSeed.HasValue || Config.proj_drop_rate == 0 && LinearHook == null && MlpHook == null);
            // The branches join the stream inside proj and fc2 (the add in the layer's own pass) when nothing stands
            // between the layer and the sum: no hook observes the branch, no drop path or dropout is drawn.
            bool join = this.JoinsBranchesInLayers() && (!trainSeed.HasValue || dropPath == 0 && Config.proj_drop_rate == 0);
            x = this.Transform(b.Sites[3], Attention(x, b, trainSeed, site, classRowOnly, dropPath, join));
            x = Mlp(x, b, trainSeed, site + 3, dropPath, join);
        }
        var last = x;
        using var normed = this.Produce(_normSite, (w, bias) => Ops.LayerNorm(last, w, bias, LayerNormEps));
        x.Dispose();
        return Ops.TakeToken(normed, 0);
    }

    /// <summary>x + the attention branch of block b (drop path, the residual join) for every token of x, or
    /// (classRowOnly) for the class token alone, [B, 1, C]: every token's keys and values, the class token's context
    /// projected. Inside proj when <paramref name="join"/>. Disposes x.</summary>
    Tensor Attention(Tensor x, Block b, ulong? seed, ulong site, bool classRowOnly, float dropPath, bool join)
    {
        bool sixteen = this.OnlyProductsReadLinearInputs();
        // q|k|v in 16 bits where both attention paths read them so (tensor cores): half the bytes written and read, and
        // no conversion pass before the products.
        bool sixteenQkv = sixteen && x.Device.Kernels.FusedAttentionKeepsSixteenBits(Config.embed_dim / Config.num_heads, bias: false);
        Tensor a;
        using (var h = this.Produce(b.Sites[0], (w, bias) => Ops.LayerNorm(x, w, bias, LayerNormEps, sixteen)))
        using (var qkv = this.ProduceLinear(b.Sites[1], h, seed, gemmInput: sixteenQkv))
            a = Ops.Attention(qkv, Config.num_heads, gemmInput: sixteen && !classRowOnly); // the class row is sliced first
        if (classRowOnly)
        {
            a = ClassRow(a);
            x = ClassRow(x);
        }
        using (a)
        {
            if (!join) return SiteComputation.Residual(x, Drop(this.ProduceLinear(b.Sites[2], a, seed), Config.proj_drop_rate, seed, site), dropPath, seed, site + 2);
            using (x) return this.ProduceLinearResidual(b.Sites[2], a, x);
        }
    }

    /// <summary>The class token of x [B, T, C] as [B, 1, C]; disposes x.</summary>
    static Tensor ClassRow(Tensor x)
    {
        using (x) return Ops.SliceTokens(x, 0, 1);
    }

    /// <summary>x + fc2(drop(GELU(fc1(LN2(x))))) after drop, the MLP hook and drop path; inside fc2 when
    /// <paramref name="join"/>. LN2's and GELU's outputs are 16-bit under bf16 or fp16 GEMMs when only fc1 and fc2 read
    /// them (no hooks; no dropout between GELU and fc2). Disposes x.</summary>
    Tensor Mlp(Tensor x, Block b, ulong? seed, ulong site, float dropPath, bool join)
    {
        bool sixteen = this.OnlyProductsReadLinearInputs(), dropping = seed.HasValue && Config.proj_drop_rate > 0;
        using var h = this.Produce(b.Sites[4], (w, bias) => Ops.LayerNorm(x, w, bias, LayerNormEps, sixteen));
        using var g = Drop(this.ProduceGelu(b.Sites[5], h, seed, sixteen && !dropping), Config.proj_drop_rate, seed, site);
        if (join)
        {
            using (x) return this.ProduceLinearResidual(b.Sites[6], g, x);
        }
        var branch = Drop(this.MlpBranch(b.Sites[6], x, this.ProduceLinear(b.Sites[6], g, seed), seed), Config.proj_drop_rate, seed, site + 1);
        return SiteComputation.Residual(x, branch, dropPath, seed, site + 3);
    }

    /// <summary>Dropout in train mode, from the call site's own stream; otherwise x itself (no view, so eval and
    /// zero-rate training record nothing extra). Takes ownership of x: disposes it when it returns a new tensor.</summary>
    static Tensor Drop(Tensor x, float p, ulong? seed, ulong site)
    {
        if (!seed.HasValue || p == 0) return x;
        using (x) return Ops.Dropout(x, p, CounterRng.Hash(seed.Value, site));
    }


    /// <summary>
    /// Loads a timm-keyed .safetensors or a Google .npz checkpoint (keys and layouts mapped). A position embedding
    /// for another grid is resampled: antialiased bicubic for safetensors (timm's checkpoint filter), bilinear for
    /// npz (timm's npz loader). In <see cref="LoadMode.NewHead"/> the head keeps its fresh initialisation.
    /// </summary>
    /// <exception cref="InvalidInputException">The file is malformed or does not fit; one message lists every problem.</exception>
    public override LoadReport Load(string path, LoadMode mode = LoadMode.Strict)
    {
        using var checkpoint = Checkpoint.Open(path);
        bool npz = checkpoint.Format == "npz";
        var entries = GoogleVitNpz.TimmEntries(checkpoint);
        int posAt = entries.FindIndex(e => e.Name == "pos_embed");
        if (posAt >= 0 && !entries[posAt].Shape.SequenceEqual(_pos.Shape) && SquareGrid(entries[posAt]) is int grid)
            entries[posAt] = ResizePosEmbed(entries[posAt], grid, bicubic: !npz);
        return LoadEntries(entries, path, mode, "head.weight", "head.bias");
    }

    /// <summary>The class count of the classifier head stored in a .safetensors or Google .npz checkpoint (0 when it has
    /// none), so a model can be built to match before loading.</summary>
    public static int HeadClasses(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        var head = GoogleVitNpz.TimmEntries(checkpoint).Find(e => e.Name == "head.weight");
        return head is { Shape.Length: 2 } ? head.Shape[0] : 0;
    }

    /// <summary>g when a checkpoint's pos_embed is [1, 1 + g·g, embed_dim] (a class row and a square grid), else null
    /// (then the strict load reports the shape mismatch with every other problem).</summary>
    int? SquareGrid(CheckpointEntry e)
    {
        if (e.Shape.Length != 3 || e.Shape[0] != 1 || e.Shape[2] != Config.embed_dim || e.Shape[1] < 2) return null;
        int grid = (int)Math.Round(Math.Sqrt(e.Shape[1] - 1));
        return grid * grid + 1 == e.Shape[1] ? grid : null;
    }

    /// <summary>pos_embed [1, 1 + g·g, D] → [1, Tokens, D]: the class row is kept, the g×g grid resampled.</summary>
    CheckpointEntry ResizePosEmbed(CheckpointEntry e, int grid, bool bicubic)
    {
        int D = Config.embed_dim, side = Config.img_size / Config.patch_size;
        return new CheckpointEntry("pos_embed", [1, Config.Tokens, D], e.DType, dst =>
        {
            var src = e.Read();
            src.AsSpan(0, D).CopyTo(dst);
            var g = src.AsSpan(D);
            var resized = bicubic ? Resample.Bicubic(g, grid, grid, D, side, side) : Resample.Bilinear(g, grid, grid, D, side, side);
            resized.CopyTo(dst[D..]);
        });
    }
}
