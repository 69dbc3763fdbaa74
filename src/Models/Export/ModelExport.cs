using Engine.Autograd;
using Engine.Models.ConvNeXt;
using Engine.Models.Swin;
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
    /// <summary>A method applied to the model whose remaining part is written as explicit nodes: SCT (gather the
    /// selected channels, K×K linear with bias, add back onto them), Adapter or AdaptFormer (MatMul, Add, GELU or Relu,
    /// Mul per block), or SSF after <see cref="Peft.PeftMethod.Merge"/>
    /// for the sites it keeps (ConvNeXt's stage output: Mul, Add); null when there is none (a folding method is merged
    /// before export).</summary>
    public Peft.PeftMethod? Method { get; init; }
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
        var sct = options.Method as Peft.Sct;
        var ssf = options.Method as Peft.Ssf;
        var adapter = options.Method as Peft.BottleneckAdapter;
        var vpt = options.Method as Peft.VptDeep;
        if (options.Method != null && sct == null && ssf == null && adapter == null && vpt == null)
            throw new NotSupportedException($"{options.Method.Name} is exported by merging it into the weights first (PeftMethod.Merge), not as explicit nodes");
        if (ssf != null && (model is not ConvNeXt.ConvNeXt || ssf.Affines.Keys.Any(k => !k.StartsWith("stages.", StringComparison.Ordinal) || k.Contains(".blocks.", StringComparison.Ordinal))))
            throw new NotSupportedException("SSF is exported merged (PeftMethod.Merge first); only the sites it keeps on ConvNeXt's stage output are written as nodes");
        var (logits, classes) = model switch
        {
            VisionTransformer vit => Vit(graph, vit, sct, adapter, vpt),
            ConvNeXt.ConvNeXt convnext => ConvNeXtGraph(graph, convnext, options.Opset, ssf, adapter),
            Swin.Swin swin => SwinGraph(graph, swin, options.Opset, sct, adapter),
            _ => throw new NotSupportedException($"ONNX export of {model.Family} models is not implemented"),
        };
        graph.Output(logits, "logits", batch, classes);
        long weights = graph.WeightBytes;
        graph.Save(path, options.Opset, $"{model.Family} exported by peft-engine (eval mode; input normalised [B, {model.InChannels}, {size}, {size}])",
            [("family", model.Family), ("image_size", size.ToString(System.Globalization.CultureInfo.InvariantCulture))], options.ExternalDataThreshold);
        return weights;
    }

    // timm's VisionTransformer forward in ONNX ops: patch conv, class token, position embedding, pre-norm blocks with
    // multi-head attention and an exact-GELU MLP, final norm, the class token's logits.
    static (string Logits, int Classes) Vit(OnnxGraph g, VisionTransformer vit, Peft.Sct? sct, Peft.BottleneckAdapter? adapter, Peft.VptDeep? vpt)
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
            // VPT-deep: the previous block's prompts (none before block 0) replaced by this block's, after the tokens.
            if (vpt != null)
            {
                var prompt = vpt.Prompts[i];
                int L = prompt.Shape[1];
                if (i > 0)
                    x = g.Node("Slice", n + "prompts", [x, g.Int64s("starts", [0]), g.Int64s("ends", [-L]), g.Int64s("axes", [1])]);
                string shape = g.Node("Concat", n + "prompts", [b, g.Int64s("l_c", [L, C])], ("axis", 0L));
                x = g.Node("Concat", n + "prompts", [x, g.Node("Expand", n + "prompts", [g.Parameter(prompt), shape])], ("axis", 1L));
            }
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
            if (i == c.depth - 1)
            {
                // As the engine runs it: past the last attention, only the class row (the one the head reads).
                string ClassRow(string t) => g.Node("Slice", n + "class_row", [t, g.Int64s("starts", [0]), g.Int64s("ends", [1]), g.Int64s("axes", [1])]);
                a = ClassRow(a);
                x = ClassRow(x);
            }
            x = ChannelAdapter(g, g.Node("Add", n + "attn_residual", [x, Linear(g, a, vit, n + "attn.proj")]), sct, n + "attn_residual", C);
            // MLP with exact GELU.
            h = LayerNorm(g, x, vit, n + "norm2");
            string f1 = Linear(g, h, vit, n + "mlp.fc1");
            string mlp = Linear(g, Gelu(g, f1, n + "mlp.act", half, one, sqrt2), vit, n + "mlp.fc2");
            x = g.Node("Add", n + "mlp_residual", [x, AdapterNodes(g, x, mlp, adapter, n + "mlp.fc2")]);
        }
        x = LayerNorm(g, x, vit, "norm");
        x = g.Node("Gather", "cls_pool", [x, g.Int64s("index", [0], scalar: true)], ("axis", 1L)); // [B, C]
        if (c.num_classes == 0) return (x, C);
        return (Linear(g, x, vit, "head"), c.num_classes);
    }

    // timm's ConvNeXt in ONNX ops: the engine works channels-last, so activations stay [B, H, W, C] for the norms and
    // the MLPs and are transposed to [B, C, H, W] around each convolution (stem, downsampling, 7×7 depthwise).
    static (string Logits, int Classes) ConvNeXtGraph(OnnxGraph g, ConvNeXt.ConvNeXt net, int opset, Peft.Ssf? ssf, Peft.BottleneckAdapter? adapter)
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
                x = g.Node("Add", b + "residual", [x, AdapterNodes(g, x, h, adapter, b + "mlp.fc2")]);
            }
        }
        // SSF kept on the last stage's output (it cannot fold: pooling and a norm follow): y = x·γ + β per channel.
        string output = $"stages.{c.dims.Length - 1}";
        if (ssf != null && ssf.Affines.TryGetValue(output, out var affine))
            x = g.Node("Add", output + ".ssf", [g.Node("Mul", output + ".ssf", [x, g.Weight(output + ".ssf_scale", affine.Scale.ToArray(), affine.Scale.Count)]),
                g.Weight(output + ".ssf_shift", affine.Shift.ToArray(), affine.Shift.Count)]);
        x = LayerNorm(g, MeanOverGrid(g, x, opset), p, "head.norm", eps);
        if (c.num_classes == 0) return (x, c.dims[^1]);
        return (Linear(g, x, p, "head.fc"), c.num_classes);
    }

    // timm's Swin in ONNX ops, channels-last [B, H, W, C] with the grid sizes fixed by the image size: patch conv and
    // norm; per stage the 2×2 patch merging (strided slices, concatenated x[2i,2j], x[2i+1,2j], x[2i,2j+1],
    // x[2i+1,2j+1]) with its norm and reduction; per block the cyclic shift (slices rolled by concatenation), window
    // partition (reshape, transpose), attention with the relative position bias (computed from the table here) and the
    // −100 shift mask, window reverse and the shift back; then the final norm and the mean over tokens.
    static (string Logits, int Classes) SwinGraph(OnnxGraph g, Swin.Swin swin, int opset, Peft.Sct? sct, Peft.BottleneckAdapter? adapter)
    {
        var c = swin.Config;
        var p = swin.Parameters.ToDictionary(t => t.Name!, StringComparer.Ordinal);
        const float eps = Swin.Swin.LayerNormEps;
        string half = g.Scalar("half", 0.5f), one = g.Scalar("one", 1f), sqrt2 = g.Scalar("sqrt2", MathF.Sqrt(2f));
        string Slice(string x, string stem, long start, long end, long axis, long step = 1) =>
            g.Node("Slice", stem, [x, g.Int64s("starts", [start]), g.Int64s("ends", [end]), g.Int64s("axes", [axis]), g.Int64s("steps", [step])]);
        // torch.roll(x, k, dims=(1, 2)) on an R×R grid: the last k rows (columns) move to the front.
        string Roll(string x, string stem, int k, long side)
        {
            int r = (int)(((k % side) + side) % side);
            foreach (long axis in new long[] { 1, 2 })
                x = g.Node("Concat", stem, [Slice(x, stem, side - r, side, axis), Slice(x, stem, 0, side - r, axis)], ("axis", axis));
            return x;
        }
        int patch = c.patch_size;
        string x = g.Node("Conv", "patch_embed.proj", ["pixel_values", g.Parameter(p["patch_embed.proj.weight"]), g.Parameter(p["patch_embed.proj.bias"])],
            ("kernel_shape", new long[] { patch, patch }), ("strides", new long[] { patch, patch }));
        x = LayerNorm(g, g.Node("Transpose", "patch_embed", [x], ("perm", new long[] { 0, 2, 3, 1 })), p, "patch_embed.norm", eps);
        for (int s = 0; s < c.depths.Length; s++)
        {
            string stage = $"layers.{s}.";
            int C = c.Dim(s), R = c.Resolution(s), heads = c.num_heads[s], hd = C / heads;
            var (ws, shift) = c.WindowOf(s);
            int T = ws * ws, nW = (R / ws) * (R / ws);
            if (s > 0)
            {
                int prev = 2 * R;
                string Quarter(long row, long col) => Slice(Slice(x, stage + "downsample", row, prev, 1, 2), stage + "downsample", col, prev, 2, 2);
                x = g.Node("Concat", stage + "downsample", [Quarter(0, 0), Quarter(1, 0), Quarter(0, 1), Quarter(1, 1)], ("axis", -1L));
                x = LayerNorm(g, x, p, stage + "downsample.norm", eps);
                x = Linear(g, x, p, stage + "downsample.reduction");
            }
            var mask = swin.ShiftMaskValues(s);
            string? maskName = mask == null ? null : g.Weight(stage + "shift_mask", mask, 1, nW, 1, T, T);
            string scale = g.Scalar(stage + "attn_scale", 1f / MathF.Sqrt(hd));
            for (int j = 0; j < c.depths[s]; j++)
            {
                string b = $"{stage}blocks.{j}.";
                int k = j % 2 == 1 ? shift : 0;
                string h = LayerNorm(g, x, p, b + "norm1", eps);
                if (k > 0) h = Roll(h, b + "shift", -k, R);
                h = g.Node("Reshape", b + "window", [h, g.Int64s("shape", [0, R / ws, ws, R / ws, ws, C])]);
                h = g.Node("Transpose", b + "window", [h], ("perm", new long[] { 0, 1, 3, 2, 4, 5 }));
                h = g.Node("Reshape", b + "window", [h, g.Int64s("shape", [-1, T, C])]);                   // [B·nW, T, C]
                string qkv = Linear(g, h, p, b + "attn.qkv");
                qkv = g.Node("Reshape", b + "attn", [qkv, g.Int64s("shape_qkv", [0, 0, 3, heads, hd])]);
                qkv = g.Node("Transpose", b + "attn", [qkv], ("perm", new long[] { 2, 0, 3, 1, 4 }));
                string Part(long index) => g.Node("Gather", b + "attn", [qkv, g.Int64s("index", [index], scalar: true)], ("axis", 0L));
                string kt = g.Node("Transpose", b + "attn.k", [Part(1)], ("perm", new long[] { 0, 1, 3, 2 }));
                string scores = g.Node("Mul", b + "attn", [g.Node("MatMul", b + "attn.scores", [Part(0), kt]), scale]);
                float[] bias;
                using (Tape.NoGrad())
                using (var relative = Ops.RelativePositionBias(p[b + "attn.relative_position_bias_table"], ws))
                    bias = relative.ToArray();
                scores = g.Node("Add", b + "attn.relative_position_bias", [scores, g.Weight(b + "attn.relative_position_bias", bias, 1, heads, T, T)]);
                if (k > 0)
                {
                    scores = g.Node("Reshape", b + "attn.mask", [scores, g.Int64s("shape", [-1, nW, heads, T, T])]);
                    scores = g.Node("Add", b + "attn.mask", [scores, maskName!]);
                    scores = g.Node("Reshape", b + "attn.mask", [scores, g.Int64s("shape", [-1, heads, T, T])]);
                }
                string a = g.Node("MatMul", b + "attn.context", [g.Node("Softmax", b + "attn", [scores], ("axis", -1L)), Part(2)]);
                a = g.Node("Transpose", b + "attn.context", [a], ("perm", new long[] { 0, 2, 1, 3 }));
                a = Linear(g, g.Node("Reshape", b + "attn.context", [a, g.Int64s("shape_btc", [0, 0, C])]), p, b + "attn.proj");
                a = g.Node("Reshape", b + "window_reverse", [a, g.Int64s("shape", [-1, R / ws, R / ws, ws, ws, C])]);
                a = g.Node("Transpose", b + "window_reverse", [a], ("perm", new long[] { 0, 1, 3, 2, 4, 5 }));
                a = g.Node("Reshape", b + "window_reverse", [a, g.Int64s("shape", [-1, R, R, C])]);
                if (k > 0) a = Roll(a, b + "shift_back", k, R);
                x = ChannelAdapter(g, g.Node("Add", b + "attn_residual", [x, a]), sct, b + "attn_residual", C);
                string f = Gelu(g, Linear(g, LayerNorm(g, x, p, b + "norm2", eps), p, b + "mlp.fc1"), b + "mlp.act", half, one, sqrt2);
                x = g.Node("Add", b + "mlp_residual", [x, AdapterNodes(g, x, Linear(g, f, p, b + "mlp.fc2"), adapter, b + "mlp.fc2")]);
            }
        }
        x = MeanOverGrid(g, LayerNorm(g, x, p, "norm", eps), opset);
        if (c.num_classes == 0) return (x, c.Dim(c.depths.Length - 1));
        return (Linear(g, x, p, "head.fc"), c.num_classes);
    }

    // SCT's module at a site, if it has one: x + scatter(gather(x, index)·Wᵀ + b), the scatter as a MatMul with the
    // one-hot [K, C] matrix of the selected channels (exact: every output channel sums one product and zeros).
    static string ChannelAdapter(OnnxGraph g, string x, Peft.Sct? sct, string site, int width)
    {
        if (sct == null || !sct.Modules.TryGetValue(site, out var m)) return x;
        string module = site.Replace("attn_residual", "sct_attn", StringComparison.Ordinal);
        var channels = sct.Selection[site].Select(c => (long)c).ToArray();
        string gathered = g.Node("Gather", module, [x, g.Int64s(module + ".index", channels)], ("axis", -1L));
        string z = g.Node("Add", module, [g.Node("MatMul", module, [gathered, g.WeightTransposed(module + ".weight", m.Weight)]), g.Parameter(m.Bias)]);
        string scatter = g.Weight(module + ".scatter", OneHot(channels, width), channels.Length, width);
        return g.Node("Add", site, [x, g.Node("MatMul", module + ".scatter", [z, scatter])]);
    }

    // A bottleneck adapter on an MLP branch, if it has one: output + s·up(act(down(z))), z the branch's input
    // (AdaptFormer) or its output (Adapter), act GELU or ReLU; dropout is off in eval mode.
    static string AdapterNodes(OnnxGraph g, string input, string output, Peft.BottleneckAdapter? adapter, string fc2)
    {
        if (adapter == null || !adapter.Modules.TryGetValue(fc2, out var m)) return output;
        string Project(string x, string name, Tensor weight, Tensor bias) =>
            g.Node("Add", name, [g.Node("MatMul", name, [x, g.WeightTransposed(name + ".weight", weight)]), g.Parameter(bias)]);
        string down = Project(adapter.Parallel ? input : output, m.Prefix + ".down_proj", m.DownWeight, m.DownBias);
        string activated = adapter.Gelu
            ? Gelu(g, down, m.Prefix + ".act", g.Scalar("half", 0.5f), g.Scalar("one", 1f), g.Scalar("sqrt2", MathF.Sqrt(2f)))
            : g.Node("Relu", m.Prefix + ".act", [down]);
        string up = Project(activated, m.Prefix + ".up_proj", m.UpWeight, m.UpBias);
        if (adapter.Settings.Scale != 1f) up = g.Node("Mul", m.Prefix + ".scale", [up, g.Scalar(m.Prefix + ".scale", adapter.Settings.Scale)]);
        return g.Node("Add", m.Prefix, [output, up]);
    }

    static float[] OneHot(long[] channels, int width)
    {
        var s = new float[channels.Length * width];
        for (int k = 0; k < channels.Length; k++) s[k * width + channels[k]] = 1f;
        return s;
    }

    // The mean over H and W of [B, H, W, C] (opset 18 moved ReduceMean's axes from an attribute to an input).
    static string MeanOverGrid(OnnxGraph g, string x, int opset) =>
        opset >= 18 ? g.Node("ReduceMean", "head.pool", [x, g.Int64s("axes_hw", [1, 2])], ("keepdims", 0L))
                    : g.Node("ReduceMean", "head.pool", [x], ("axes", new long[] { 1, 2 }), ("keepdims", 0L));

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
