namespace Engine.Models.Demo;

/// <summary>Configuration of <see cref="TinyTransformer"/> (timm-style field names).</summary>
public sealed record TinyTransformerConfig
{
    /// <summary>Features per input token.</summary>
    public int in_features { get; init; } = 8;
    /// <summary>Tokens per sequence.</summary>
    public int num_tokens { get; init; } = 16;
    /// <summary>Width of the residual stream.</summary>
    public int embed_dim { get; init; } = 32;
    /// <summary>Transformer blocks.</summary>
    public int depth { get; init; } = 2;
    /// <summary>Attention heads.</summary>
    public int num_heads { get; init; } = 2;
    /// <summary>MLP hidden width as a multiple of embed_dim.</summary>
    public int mlp_ratio { get; init; } = 2;
    /// <summary>Output classes.</summary>
    public int num_classes { get; init; } = 4;
    /// <summary>Stochastic depth rate of the last block (linear from 0).</summary>
    public float drop_path_rate { get; init; }
}

/// <summary>
/// A small pre-norm transformer classifier over token sequences, built only from engine ops: token embedding
/// (Linear) + class token + position embedding, blocks x += Attn(LN(x)); x += MLP(LN(x)), final LN, class-token
/// head. It is the engine's smoke-test model (README demo, determinism and memory tests); ViT arrives with its own issue.
/// </summary>
public sealed class TinyTransformer : IDisposable
{
    readonly List<Tensor> _parameters = new();
    readonly Tensor _embedW, _embedB, _cls, _pos, _normW, _normB, _headW, _headB;
    readonly Block[] _blocks;

    sealed record Block(Tensor Norm1W, Tensor Norm1B, Tensor QkvW, Tensor QkvB, Tensor ProjW, Tensor ProjB,
        Tensor Norm2W, Tensor Norm2B, Tensor Fc1W, Tensor Fc1B, Tensor Fc2W, Tensor Fc2B);

    /// <summary>Builds the model with seeded initialisation (truncated normal 0.02 weights, zero biases, unit norms).</summary>
    public TinyTransformer(Device device, TinyTransformerConfig config, ulong seed)
    {
        Config = config;
        int C = config.embed_dim, H = C * config.mlp_ratio;
        ulong next = seed;
        Tensor Weight(string name, params int[] shape)
        {
            var t = Add(name, shape);
            Init.TruncatedNormal(t, 0.02f, next++);
            return t;
        }
        Tensor Add(string name, params int[] shape)
        {
            var t = Tensor.Parameter(device, name, shape);
            _parameters.Add(t);
            return t;
        }
        Tensor Ones(string name, int n)
        {
            var t = Add(name, n);
            Init.Constant(t, 1f);
            return t;
        }
        _embedW = Weight("embed.weight", C, config.in_features);
        _embedB = Add("embed.bias", C);
        _cls = Weight("cls_token", 1, 1, C);
        _pos = Weight("pos_embed", 1, config.num_tokens + 1, C);
        _blocks = new Block[config.depth];
        for (int i = 0; i < config.depth; i++)
        {
            string p = $"blocks.{i}.";
            _blocks[i] = new Block(Ones(p + "norm1.weight", C), Add(p + "norm1.bias", C),
                Weight(p + "attn.qkv.weight", 3 * C, C), Add(p + "attn.qkv.bias", 3 * C),
                Weight(p + "attn.proj.weight", C, C), Add(p + "attn.proj.bias", C),
                Ones(p + "norm2.weight", C), Add(p + "norm2.bias", C),
                Weight(p + "mlp.fc1.weight", H, C), Add(p + "mlp.fc1.bias", H),
                Weight(p + "mlp.fc2.weight", C, H), Add(p + "mlp.fc2.bias", C));
        }
        _normW = Ones("norm.weight", C);
        _normB = Add("norm.bias", C);
        _headW = Weight("head.weight", config.num_classes, C);
        _headB = Add("head.bias", config.num_classes);
    }

    /// <summary>The configuration.</summary>
    public TinyTransformerConfig Config { get; }

    /// <summary>Every parameter, in definition order (names as in timm where they exist).</summary>
    public IReadOnlyList<Tensor> Parameters => _parameters;

    /// <summary>Parameter by name.</summary>
    public Tensor this[string name] => _parameters.FirstOrDefault(p => p.Name == name)
        ?? throw new KeyNotFoundException($"TinyTransformer has no parameter '{name}'");

    /// <summary>Logits [B, classes] for tokens [B, num_tokens, in_features]. With <paramref name="dropSeed"/> set,
    /// stochastic depth is active (training); otherwise the forward is deterministic (eval).</summary>
    public Tensor Forward(Tensor tokens, ulong? dropSeed = null)
    {
        using var embedded = Ops.Linear(tokens, _embedW, _embedB);
        using var withCls = Ops.PrependToken(embedded, _cls);
        var x = Ops.AddPositionEmbedding(withCls, _pos);
        for (int i = 0; i < _blocks.Length; i++)
        {
            var b = _blocks[i];
            float dropRate = _blocks.Length > 1 ? Config.drop_path_rate * i / (_blocks.Length - 1) : Config.drop_path_rate;
            ulong? seed = dropSeed.HasValue ? dropSeed.Value * 1000 + (ulong)i * 2 : null;
            x = Residual(x, Attention(x, b), dropRate, seed);
            x = Residual(x, Mlp(x, b), dropRate, seed + 1);
        }
        using var normed = Ops.LayerNorm(x, _normW, _normB, 1e-6f);
        x.Dispose();
        using var cls = Ops.TakeToken(normed, 0);
        return Ops.Linear(cls, _headW, _headB);
    }

    Tensor Attention(Tensor x, Block b)
    {
        using var h = Ops.LayerNorm(x, b.Norm1W, b.Norm1B, 1e-6f);
        using var qkv = Ops.Linear(h, b.QkvW, b.QkvB);
        using var a = Ops.Attention(qkv, Config.num_heads);
        return Ops.Linear(a, b.ProjW, b.ProjB);
    }

    static Tensor Mlp(Tensor x, Block b)
    {
        using var h = Ops.LayerNorm(x, b.Norm2W, b.Norm2B, 1e-6f);
        using var f1 = Ops.Linear(h, b.Fc1W, b.Fc1B);
        using var g = Ops.Gelu(f1);
        return Ops.Linear(g, b.Fc2W, b.Fc2B);
    }

    /// <summary>x + DropPath(branch); disposes both inputs (the tape keeps what backward needs).</summary>
    static Tensor Residual(Tensor x, Tensor branch, float dropRate, ulong? seed)
    {
        using var dropped = seed.HasValue && dropRate > 0 ? Ops.DropPath(branch, dropRate, seed.Value) : null;
        var y = Ops.Add(x, dropped ?? branch);
        x.Dispose();
        branch.Dispose();
        return y;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var p in _parameters) p.Dispose();
        _parameters.Clear();
    }
}
