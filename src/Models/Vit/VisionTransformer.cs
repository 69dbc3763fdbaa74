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
/// Train mode (a seed passed to <see cref="Forward"/>) enables dropout and stochastic depth; eval mode is deterministic.
/// </summary>
public sealed class VisionTransformer : IImageClassifier
{
    internal const float LayerNormEps = 1e-6f;
    readonly List<Tensor> _parameters = new();
    readonly Tensor _patchW, _patchB, _cls, _pos, _normW, _normB;
    readonly Tensor? _headW, _headB;
    readonly Block[] _blocks;
    readonly FeatureSite _patchSite, _normSite;
    readonly List<FeatureSite> _sites = new();

    sealed record Block(Tensor Norm1W, Tensor Norm1B, Tensor QkvW, Tensor? QkvB, Tensor ProjW, Tensor ProjB,
        Tensor Norm2W, Tensor Norm2B, Tensor Fc1W, Tensor Fc1B, Tensor Fc2W, Tensor Fc2B)
    {
        /// <summary>norm1, attn.qkv, attn.proj, norm2, mlp.fc1 (before GELU), mlp.fc2, then the sum after attention.</summary>
        public FeatureSite[] Sites = [];
    }

    /// <summary>Builds the model with timm's initialisation from <paramref name="seed"/>: truncated-normal(0.02)
    /// linear, patch and position weights, cls_token Normal(1e-6), zero biases, unit norm weights.</summary>
    public VisionTransformer(Device device, VitConfig config, ulong seed = 0)
    {
        Config = config.Validate();
        int C = config.embed_dim, H = config.MlpHidden, p = config.patch_size;
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
        Tensor Ones(string name, int n)
        {
            var t = Add(name, n);
            Init.Constant(t, 1f);
            return t;
        }
        // Registration order is timm's state-dict order.
        _cls = Add("cls_token", 1, 1, C);
        Init.Normal(_cls, 1e-6f, next++);
        _pos = Weight("pos_embed", 1, config.Tokens, C);
        _patchW = Weight("patch_embed.proj.weight", C, config.in_chans, p, p);
        _patchB = Add("patch_embed.proj.bias", C);
        _blocks = new Block[config.depth];
        for (int i = 0; i < config.depth; i++)
        {
            string b = $"blocks.{i}.";
            _blocks[i] = new Block(Ones(b + "norm1.weight", C), Add(b + "norm1.bias", C),
                Weight(b + "attn.qkv.weight", 3 * C, C), config.qkv_bias ? Add(b + "attn.qkv.bias", 3 * C) : null,
                Weight(b + "attn.proj.weight", C, C), Add(b + "attn.proj.bias", C),
                Ones(b + "norm2.weight", C), Add(b + "norm2.bias", C),
                Weight(b + "mlp.fc1.weight", H, C), Add(b + "mlp.fc1.bias", H),
                Weight(b + "mlp.fc2.weight", C, H), Add(b + "mlp.fc2.bias", C));
        }
        _normW = Ones("norm.weight", C);
        _normB = Add("norm.bias", C);
        // Feature sites in forward order (the SSF insertion points, and the residual after attention for SCT).
        _patchSite = Site("patch_embed", C, SiteProducer.Linear, _patchW, _patchB);
        for (int i = 0; i < config.depth; i++)
        {
            var b = _blocks[i];
            string n = $"blocks.{i}.";
            b.Sites =
            [
                Site(n + "norm1", C, SiteProducer.LayerNorm, b.Norm1W, b.Norm1B),
                Site(n + "attn.qkv", 3 * C, SiteProducer.Linear, b.QkvW, b.QkvB),
                Site(n + "attn.proj", C, SiteProducer.Linear, b.ProjW, b.ProjB),
                Site(n + "attn_residual", C, SiteProducer.Residual, null, null),
                Site(n + "norm2", C, SiteProducer.LayerNorm, b.Norm2W, b.Norm2B),
                Site(n + "mlp.fc1", H, SiteProducer.Linear, b.Fc1W, b.Fc1B),
                Site(n + "mlp.fc2", C, SiteProducer.Linear, b.Fc2W, b.Fc2B),
            ];
        }
        _normSite = Site("norm", C, SiteProducer.LayerNorm, _normW, _normB);
        if (config.num_classes > 0)
        {
            _headW = Weight("head.weight", config.num_classes, C);
            _headB = Add("head.bias", config.num_classes);
        }
    }

    FeatureSite Site(string name, int channels, SiteProducer producer, Tensor? weight, Tensor? bias)
    {
        var site = new FeatureSite(name, channels, producer, weight, bias);
        _sites.Add(site);
        return site;
    }

    /// <summary>The configuration.</summary>
    public VitConfig Config { get; }

    /// <inheritdoc/>
    public IReadOnlyList<FeatureSite> Sites => _sites;

    /// <inheritdoc/>
    public Func<FeatureSite, Tensor, Tensor>? SiteHook { get; set; }

    /// <inheritdoc/>
    public bool KeepEveryToken { get; set; }

    /// <inheritdoc/>
    public Func<FeatureSite, ChannelAffine?>? SiteAffine { get; set; }

    /// <inheritdoc/>
    public LinearSiteHook? LinearHook { get; set; }

    /// <inheritdoc/>
    public MlpBranchHook? MlpHook { get; set; }

    /// <summary>Called with each block's index, its input tokens [B, T, C] and the train seed (null in eval mode);
    /// returns the tokens the block runs on (VPT-deep appends its prompts here). The class token stays token 0.
    /// Null: none.</summary>
    public Func<int, Tensor, ulong?, Tensor>? BlockInputHook { get; set; }

    /// <summary>Every parameter in timm's state-dict order, named by its key.</summary>
    public IReadOnlyList<Tensor> Parameters => _parameters;

    /// <inheritdoc/>
    public string Family => "vit";

    /// <inheritdoc/>
    public int ImageSize => Config.img_size;

    /// <inheritdoc/>
    public int InChannels => Config.in_chans;

    /// <inheritdoc/>
    public void SaveConfig(string path) => Config.Save(path);

    /// <inheritdoc/>
    public long ParameterCount => _parameters.Sum(p => p.Count);

    /// <summary>The parameter with timm key <paramref name="name"/>.</summary>
    public Tensor this[string name] => _parameters.FirstOrDefault(p => p.Name == name)
        ?? throw new KeyNotFoundException($"VisionTransformer has no parameter '{name}'");

    /// <summary>Logits [B, num_classes] for images [B, in_chans, img_size, img_size] (NCHW, normalised); with
    /// num_classes 0, the pooled features [B, embed_dim]. A <paramref name="trainSeed"/> turns on dropout and
    /// stochastic depth, with masks drawn from it; null is eval mode.</summary>
    public Tensor Forward(Tensor images, ulong? trainSeed = null)
    {
        var features = ForwardFeatures(images, trainSeed);
        if (_headW == null) return features;
        using var dropped = Drop(features, Config.drop_rate, trainSeed, site: 1);
        return Ops.Linear(dropped, _headW, _headB);
    }

    /// <inheritdoc/>
    public int NumPrefixTokens => 1;

    /// <summary>The class token after the final norm, [B, embed_dim] (timm's forward_features + pooling).</summary>
    public Tensor ForwardFeatures(Tensor images, ulong? trainSeed = null)
    {
        int s = Config.img_size;
        if (images.Rank != 4 || images.Shape[1] != Config.in_chans || images.Shape[2] != s || images.Shape[3] != s)
            throw new ArgumentException($"ViT input {images.Describe()} must be [B, {Config.in_chans}, {s}, {s}]");
        using var folds = this.FoldSiteAffines(); // SSF's scales and shifts into every layer at once
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
    public LoadReport Load(string path, LoadMode mode = LoadMode.Strict)
    {
        using var checkpoint = Checkpoint.Open(path);
        bool npz = checkpoint.Format == "npz";
        var entries = GoogleVitNpz.TimmEntries(checkpoint);
        int posAt = entries.FindIndex(e => e.Name == "pos_embed");
        if (posAt >= 0 && !entries[posAt].Shape.SequenceEqual(_pos.Shape) && SquareGrid(entries[posAt]) is int grid)
            entries[posAt] = ResizePosEmbed(entries[posAt], grid, bicubic: !npz);
        var skip = mode == LoadMode.NewHead ? new HashSet<string> { "head.weight", "head.bias" } : null;
        if (skip != null) entries.RemoveAll(e => skip.Contains(e.Name));
        return StateDict.Load(_parameters, entries, path, strict: mode != LoadMode.NonStrict, skip);
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

    /// <summary>Writes every parameter to a .safetensors file under its timm key (atomically).</summary>
    public void Save(string path) => SafeTensors.Write(path, _parameters);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var p in _parameters) p.Dispose();
        _parameters.Clear();
    }
}
