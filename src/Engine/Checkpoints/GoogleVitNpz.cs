using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>
/// Maps Google's ViT .npz checkpoints (the 2020 <c>ViT-B_16.npz</c> release and the AugReg files) to timm keys and
/// layouts, as timm's <c>_load_weights</c>: Flax Dense kernels [in,out] are transposed, the attention's per-head
/// query/key/value kernels [D,heads,hd] are flattened and stacked into qkv [3D,D], the output kernel [heads,hd,D]
/// becomes proj [D,D], and the conv kernel [kh,kw,cin,cout] is permuted to [cout,cin,kh,kw]. <c>pre_logits</c> is
/// dropped; keys this mapping does not know are passed through unchanged so a strict load names them.
/// </summary>
public static class GoogleVitNpz
{
    /// <summary>A checkpoint's tensors under timm names: an npz mapped by <see cref="ToTimm"/>, any other format as it is.</summary>
    public static List<CheckpointEntry> TimmEntries(Checkpoint checkpoint) =>
        checkpoint.Format == "npz" ? ToTimm(checkpoint) : checkpoint.Entries.ToList();

    /// <summary>The checkpoint's tensors under timm names (values are converted when read).</summary>
    /// <exception cref="InvalidInputException">A tensor has the wrong number of dimensions or inconsistent sizes.</exception>
    public static List<CheckpointEntry> ToTimm(Checkpoint npz)
    {
        const string optPrefix = "opt/target/";
        var raw = new Dictionary<string, CheckpointEntry>(StringComparer.Ordinal);
        foreach (var e in npz.Entries) raw[e.Name.StartsWith(optPrefix, StringComparison.Ordinal) ? e.Name[optPrefix.Length..] : e.Name] = e;
        var used = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<CheckpointEntry>();
        string file = npz.Path;

        CheckpointEntry? Take(string key, int rank)
        {
            if (!raw.TryGetValue(key, out var e)) return null;
            used.Add(key);
            if (e.Shape.Length != rank)
                throw new InvalidInputException(file, $"tensor '{e.Name}' has {e.Shape.Length} dimensions {e.ShapeText}, expected {rank}");
            return e;
        }
        void Add(string name, CheckpointEntry? e)
        {
            if (e != null) result.Add(new CheckpointEntry(name, e.Shape, e.DType, e.ReadInto));
        }
        void AddTransposed(string name, CheckpointEntry? kernel)
        {
            if (kernel != null) result.Add(Permute(name, kernel, kernel.Shape, [1, 0]));
        }

        if (Take("embedding/kernel", 4) is { } embed) result.Add(Permute("patch_embed.proj.weight", embed, embed.Shape, [3, 2, 0, 1]));
        Add("patch_embed.proj.bias", Take("embedding/bias", 1));
        Add("cls_token", Take("cls", 3));
        Add("pos_embed", Take("Transformer/posembed_input/pos_embedding", 3));
        for (int i = 0; raw.Keys.Any(k => k.StartsWith($"Transformer/encoderblock_{i}/", StringComparison.Ordinal)); i++)
        {
            string p = $"Transformer/encoderblock_{i}/", b = $"blocks.{i}.", mha = p + "MultiHeadDotProductAttention_1/";
            Add(b + "norm1.weight", Take(p + "LayerNorm_0/scale", 1));
            Add(b + "norm1.bias", Take(p + "LayerNorm_0/bias", 1));
            var qkv = new[] { "query", "key", "value" }.Select(s => Take(mha + s + "/kernel", 3)).ToArray();
            if (qkv.All(k => k != null)) result.Add(StackQkv(file, b + "attn.qkv.weight", qkv!));
            var qkvBias = new[] { "query", "key", "value" }.Select(s => Take(mha + s + "/bias", 2)).ToArray();
            if (qkvBias.All(k => k != null)) result.Add(Concat(b + "attn.qkv.bias", qkvBias!));
            if (Take(mha + "out/kernel", 3) is { } outKernel)
            {   // [heads, hd, D] → read as [heads·hd, D] and transpose to [D, heads·hd]
                int[] flat = [outKernel.Shape[0] * outKernel.Shape[1], outKernel.Shape[2]];
                result.Add(Permute(b + "attn.proj.weight", outKernel, flat, [1, 0]));
            }
            Add(b + "attn.proj.bias", Take(mha + "out/bias", 1));
            Add(b + "norm2.weight", Take(p + "LayerNorm_2/scale", 1));
            Add(b + "norm2.bias", Take(p + "LayerNorm_2/bias", 1));
            AddTransposed(b + "mlp.fc1.weight", Take(p + "MlpBlock_3/Dense_0/kernel", 2));
            Add(b + "mlp.fc1.bias", Take(p + "MlpBlock_3/Dense_0/bias", 1));
            AddTransposed(b + "mlp.fc2.weight", Take(p + "MlpBlock_3/Dense_1/kernel", 2));
            Add(b + "mlp.fc2.bias", Take(p + "MlpBlock_3/Dense_1/bias", 1));
        }
        Add("norm.weight", Take("Transformer/encoder_norm/scale", 1));
        Add("norm.bias", Take("Transformer/encoder_norm/bias", 1));
        AddTransposed("head.weight", Take("head/kernel", 2));
        Add("head.bias", Take("head/bias", 1));
        foreach (var (key, e) in raw)
            if (!used.Contains(key) && !key.StartsWith("pre_logits/", StringComparison.Ordinal)) result.Add(e);
        return result;
    }

    /// <summary>query/key/value kernels [D, heads, hd] → qkv.weight [3·D', D] with row s·D' + h·hd + d = K_s[c, h, d].</summary>
    static CheckpointEntry StackQkv(string file, string name, CheckpointEntry[] kernels)
    {
        int[] shape = kernels[0].Shape;
        foreach (var k in kernels)
            if (!k.Shape.SequenceEqual(shape))
                throw new InvalidInputException(file, $"tensor '{k.Name}' {k.ShapeText} differs from '{kernels[0].Name}' {kernels[0].ShapeText}");
        int D = shape[0], inner = shape[1] * shape[2];
        return new CheckpointEntry(name, [3 * inner, D], kernels[0].DType, dst =>
        {
            for (int s = 0; s < 3; s++) Transpose(kernels[s].Read(), D, inner, dst.Slice(s * inner * D, inner * D));
        });
    }

    static CheckpointEntry Concat(string name, CheckpointEntry[] parts)
    {
        long total = parts.Sum(p => p.Count);
        return new CheckpointEntry(name, [(int)total], parts[0].DType, dst =>
        {
            int at = 0;
            foreach (var p in parts)
            {
                p.ReadInto(dst.Slice(at, (int)p.Count));
                at += (int)p.Count;
            }
        });
    }

    /// <summary>The entry's values viewed as <paramref name="shape"/>, with axes permuted (output axis i = input axis perm[i]).</summary>
    static CheckpointEntry Permute(string name, CheckpointEntry source, int[] shape, int[] perm)
    {
        var outShape = perm.Select(a => shape[a]).ToArray();
        return new CheckpointEntry(name, outShape, source.DType, dst =>
        {
            var src = source.Read();
            if (perm.Length == 2)
            {
                Transpose(src, shape[0], shape[1], dst);
                return;
            }
            var inStrides = new long[shape.Length];
            for (int d = shape.Length - 1, s = 1; d >= 0; s *= shape[d], d--) inStrides[d] = s;
            var idx = new int[outShape.Length];
            for (int o = 0; o < dst.Length; o++)
            {
                long at = 0;
                for (int d = 0; d < idx.Length; d++) at += idx[d] * inStrides[perm[d]];
                dst[o] = src[at];
                for (int d = idx.Length - 1; d >= 0 && ++idx[d] == outShape[d]; d--) idx[d] = 0;
            }
        });
    }

    /// <summary>dst [cols, rows] = srcᵀ for src [rows, cols].</summary>
    static void Transpose(float[] src, int rows, int cols, Span<float> dst)
    {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
    }
}
