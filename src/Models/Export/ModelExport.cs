using Engine.Models.Vit;

namespace Engine.Models.Export;

/// <summary>How <see cref="ModelExport.ToOnnx"/> writes a model.</summary>
public sealed record OnnxExportOptions
{
    /// <summary>The ONNX opset (17 or newer: LayerNormalization).</summary>
    public int Opset { get; init; } = 17;
    /// <summary>A fixed batch size, or null for a dynamic one (the input's first dimension is the symbol <c>batch</c>).</summary>
    public int? Batch { get; init; }
    /// <summary>Weights above this many bytes go to a <c>.data</c> file beside the model (protobuf's limit is 2 GB).</summary>
    public long ExternalDataThreshold { get; init; } = 1L << 31;
}

/// <summary>
/// Writes a model as ONNX for any runtime: eval mode, input <c>pixel_values</c> float32 [B, 3, H, W] (normalised as for
/// <c>peft infer --input .npy</c>), output <c>logits</c> [B, classes], the weights as initializers. A PEFT method that
/// folds into the weights is merged before export (<see cref="Peft.PeftMethod.Merge"/>).
/// </summary>
public static class ModelExport
{
    /// <summary>Exports <paramref name="model"/> to <paramref name="path"/> (atomically; a model over the threshold also
    /// writes <c>path.data</c>). Returns the bytes of weights written.</summary>
    /// <exception cref="NotSupportedException">A family this exporter does not write yet, or an opset below 17.</exception>
    public static long ToOnnx(IImageClassifier model, string path, OnnxExportOptions? options = null)
    {
        options ??= new OnnxExportOptions();
        if (options.Opset < 17) throw new NotSupportedException($"opset {options.Opset}: the export needs 17 or newer (LayerNormalization)");
        if (options.Batch is < 1) throw new ArgumentException($"batch {options.Batch}: a fixed batch is at least 1");
        var graph = new OnnxGraph();
        long? batch = options.Batch;
        int size = model.ImageSize;
        graph.Declare(true, "pixel_values", batch, model.InChannels, size, size);
        var (logits, classes) = model switch
        {
            VisionTransformer vit => Vit(graph, vit),
            _ => throw new NotSupportedException($"ONNX export of {model.Family} models is not implemented yet (ViT is)"),
        };
        graph.Output(logits, "logits", batch, classes);
        long weights = graph.WeightBytes;
        graph.Save(path, options.Opset, $"{model.Family} exported by peft-engine (eval mode; input normalised [B, {model.InChannels}, {size}, {size}])",
            [("family", model.Family), ("image_size", size.ToString(System.Globalization.CultureInfo.InvariantCulture))], options.ExternalDataThreshold);
        return weights;
    }

    // timm's VisionTransformer forward in ONNX ops: patch conv, class token, position embedding, pre-norm blocks with
    // multi-head attention and an exact-GELU MLP, final norm, the class token's logits.
    static (string Logits, int Classes) Vit(OnnxGraph g, VisionTransformer vit)
    {
        var c = vit.Config;
        int C = c.embed_dim, heads = c.num_heads, hd = C / heads, p = c.patch_size;
        Tensor P(string name) => vit[name];
        string x = g.Node("Conv", "patch_embed.proj", ["pixel_values", g.Parameter(P("patch_embed.proj.weight")), g.Parameter(P("patch_embed.proj.bias"))],
            ("kernel_shape", new long[] { p, p }), ("strides", new long[] { p, p }));
        x = g.Node("Reshape", "patch_embed", [x, g.Int64s("shape_bc_flat", [0, C, -1])]);   // [B, C, N]
        x = g.Node("Transpose", "patch_embed", [x], ("perm", new long[] { 0, 2, 1 }));       // [B, N, C]
        // The class token broadcast to the batch: Expand(cls_token, [B, 1, C]).
        string b = g.Node("Shape", "batch", ["pixel_values"], ("start", 0L), ("end", 1L));
        string clsShape = g.Node("Concat", "cls_token", [b, g.Int64s("one_c", [1, C])], ("axis", 0L));
        string cls = g.Node("Expand", "cls_token", [g.Parameter(P("cls_token")), clsShape]);
        x = g.Node("Concat", "tokens", [cls, x], ("axis", 1L));
        x = g.Node("Add", "pos_embed", [x, g.Parameter(P("pos_embed"))]);
        string scale = g.Scalar("attn_scale", 1f / MathF.Sqrt(hd)), half = g.Scalar("half", 0.5f), one = g.Scalar("one", 1f), sqrt2 = g.Scalar("sqrt2", MathF.Sqrt(2f));
        for (int i = 0; i < c.depth; i++)
        {
            string n = $"blocks.{i}.";
            // Attention.
            string h = LayerNorm(g, x, vit, n + "norm1");
            string qkv = Linear(g, h, vit, n + "attn.qkv");
            qkv = g.Node("Reshape", n + "attn", [qkv, g.Int64s("shape_qkv", [0, 0, 3, heads, hd])]);
            qkv = g.Node("Transpose", n + "attn", [qkv], ("perm", new long[] { 2, 0, 3, 1, 4 })); // [3, B, heads, T, hd]
            string Part(long index) => g.Node("Gather", n + "attn", [qkv, g.Int64s("index", [index], scalar: true)], ("axis", 0L));
            string q = Part(0), k = Part(1), v = Part(2);
            string kt = g.Node("Transpose", n + "attn.k", [k], ("perm", new long[] { 0, 1, 3, 2 }));
            string scores = g.Node("Mul", n + "attn", [g.Node("MatMul", n + "attn.scores", [q, kt]), scale]);
            string attention = g.Node("Softmax", n + "attn", [scores], ("axis", -1L));
            string a = g.Node("MatMul", n + "attn.context", [attention, v]);
            a = g.Node("Transpose", n + "attn.context", [a], ("perm", new long[] { 0, 2, 1, 3 }));
            a = g.Node("Reshape", n + "attn.context", [a, g.Int64s("shape_btc", [0, 0, C])]);
            x = g.Node("Add", n + "attn_residual", [x, Linear(g, a, vit, n + "attn.proj")]);
            // MLP with exact GELU: x·½·(1 + erf(x/√2)).
            h = LayerNorm(g, x, vit, n + "norm2");
            string f1 = Linear(g, h, vit, n + "mlp.fc1");
            string erf = g.Node("Erf", n + "mlp.act", [g.Node("Div", n + "mlp.act", [f1, sqrt2])]);
            string gelu = g.Node("Mul", n + "mlp.act", [g.Node("Mul", n + "mlp.act", [f1, half]), g.Node("Add", n + "mlp.act", [erf, one])]);
            x = g.Node("Add", n + "mlp_residual", [x, Linear(g, gelu, vit, n + "mlp.fc2")]);
        }
        x = LayerNorm(g, x, vit, "norm");
        x = g.Node("Gather", "cls_pool", [x, g.Int64s("index", [0], scalar: true)], ("axis", 1L)); // [B, C]
        if (c.num_classes == 0) return (x, C);
        return (Linear(g, x, vit, "head"), c.num_classes);
    }

    static string LayerNorm(OnnxGraph g, string x, VisionTransformer vit, string module) =>
        g.Node("LayerNormalization", module, [x, g.Parameter(vit[module + ".weight"]), g.Parameter(vit[module + ".bias"])],
            ("axis", -1L), ("epsilon", VisionTransformer.LayerNormEps));

    // y = x·Wᵀ + b as MatMul with the transposed weight, then Add.
    static string Linear(OnnxGraph g, string x, VisionTransformer vit, string module)
    {
        string y = g.Node("MatMul", module, [x, g.WeightTransposed(module + ".weight", vit[module + ".weight"])]);
        return vit.Parameters.Any(p => p.Name == module + ".bias") ? g.Node("Add", module, [y, g.Parameter(vit[module + ".bias"])]) : y;
    }
}
