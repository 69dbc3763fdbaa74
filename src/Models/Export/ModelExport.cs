using Engine.Models.ConvNeXt;
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
            ConvNeXt.ConvNeXt convnext => ConvNeXtGraph(graph, convnext, options.Opset),
            _ => throw new NotSupportedException($"ONNX export of {model.Family} models is not implemented yet (ViT and ConvNeXt are)"),
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
            // MLP with exact GELU.
            h = LayerNorm(g, x, vit, n + "norm2");
            string f1 = Linear(g, h, vit, n + "mlp.fc1");
            x = g.Node("Add", n + "mlp_residual", [x, Linear(g, Gelu(g, f1, n + "mlp.act", half, one, sqrt2), vit, n + "mlp.fc2")]);
        }
        x = LayerNorm(g, x, vit, "norm");
        x = g.Node("Gather", "cls_pool", [x, g.Int64s("index", [0], scalar: true)], ("axis", 1L)); // [B, C]
        if (c.num_classes == 0) return (x, C);
        return (Linear(g, x, vit, "head"), c.num_classes);
    }

    // timm's ConvNeXt in ONNX ops: the engine works channels-last, so activations stay [B, H, W, C] for the norms and
    // the MLPs and are transposed to [B, C, H, W] around each convolution (stem, downsampling, 7×7 depthwise).
    static (string Logits, int Classes) ConvNeXtGraph(OnnxGraph g, ConvNeXt.ConvNeXt net, int opset)
    {
        var c = net.Config;
        var p = net.Parameters.ToDictionary(t => t.Name!, StringComparer.Ordinal);
        const float eps = ConvNeXt.ConvNeXt.LayerNormEps;
        string Nhwc(string x, string stem) => g.Node("Transpose", stem, [x], ("perm", new long[] { 0, 2, 3, 1 }));
        string Nchw(string x, string stem) => g.Node("Transpose", stem, [x], ("perm", new long[] { 0, 3, 1, 2 }));
        string Conv(string x, string module, long kernel, long stride, long pad, long groups) =>
            g.Node("Conv", module, [x, g.Parameter(p[module + ".weight"]), g.Parameter(p[module + ".bias"])], ("kernel_shape", new[] { kernel, kernel }),
                ("strides", new[] { stride, stride }), ("pads", new[] { pad, pad, pad, pad }), ("group", groups));
        string x = Nhwc(Conv("pixel_values", "stem.0", ConvNeXtConfig.StemPatch, ConvNeXtConfig.StemPatch, 0, 1), "stem.0");
        x = LayerNorm(g, x, p, "stem.1", eps);
        string half = g.Scalar("half", 0.5f), one = g.Scalar("one", 1f), sqrt2 = g.Scalar("sqrt2", MathF.Sqrt(2f));
        for (int s = 0; s < c.dims.Length; s++)
        {
            string stage = $"stages.{s}.";
            if (s > 0)
                x = Nhwc(Conv(Nchw(LayerNorm(g, x, p, stage + "downsample.0", eps), stage + "downsample"), stage + "downsample.1", 2, 2, 0, 1), stage + "downsample");
            for (int j = 0; j < c.depths[s]; j++)
            {
                string b = $"{stage}blocks.{j}.";
                string dw = Nhwc(Conv(Nchw(x, b + "conv_dw"), b + "conv_dw", c.kernel_size, 1, c.kernel_size / 2, c.dims[s]), b + "conv_dw");
                string h = Linear(g, LayerNorm(g, dw, p, b + "norm", eps), p, b + "mlp.fc1");
                h = Gelu(g, h, b + "mlp.act", half, one, sqrt2);
                h = g.Node("Mul", b + "gamma", [Linear(g, h, p, b + "mlp.fc2"), g.Parameter(p[b + "gamma"])]);
                x = g.Node("Add", b + "residual", [x, h]);
            }
        }
        // Global average pool over H and W (opset 18 moved ReduceMean's axes from an attribute to an input).
        x = opset >= 18 ? g.Node("ReduceMean", "head.pool", [x, g.Int64s("axes_hw", [1, 2])], ("keepdims", 0L))
                        : g.Node("ReduceMean", "head.pool", [x], ("axes", new long[] { 1, 2 }), ("keepdims", 0L));
        x = LayerNorm(g, x, p, "head.norm", eps);
        if (c.num_classes == 0) return (x, c.dims[^1]);
        return (Linear(g, x, p, "head.fc"), c.num_classes);
    }

    // Exact GELU: x·½·(1 + erf(x/√2)).
    static string Gelu(OnnxGraph g, string x, string module, string half, string one, string sqrt2)
    {
        string erf = g.Node("Erf", module, [g.Node("Div", module, [x, sqrt2])]);
        return g.Node("Mul", module, [g.Node("Mul", module, [x, half]), g.Node("Add", module, [erf, one])]);
    }

    static string LayerNorm(OnnxGraph g, string x, VisionTransformer vit, string module) =>
        LayerNorm(g, x, vit.Parameters.ToDictionary(t => t.Name!, StringComparer.Ordinal), module, VisionTransformer.LayerNormEps);

    static string LayerNorm(OnnxGraph g, string x, IReadOnlyDictionary<string, Tensor> p, string module, float eps) =>
        g.Node("LayerNormalization", module, [x, g.Parameter(p[module + ".weight"]), g.Parameter(p[module + ".bias"])], ("axis", -1L), ("epsilon", eps));

    static string Linear(OnnxGraph g, string x, VisionTransformer vit, string module) =>
        Linear(g, x, vit.Parameters.ToDictionary(t => t.Name!, StringComparer.Ordinal), module);

    // y = x·Wᵀ + b as MatMul with the transposed weight, then Add.
    static string Linear(OnnxGraph g, string x, IReadOnlyDictionary<string, Tensor> p, string module)
    {
        string y = g.Node("MatMul", module, [x, g.WeightTransposed(module + ".weight", p[module + ".weight"])]);
        return p.TryGetValue(module + ".bias", out var bias) ? g.Node("Add", module, [y, g.Parameter(bias)]) : y;
    }
}
