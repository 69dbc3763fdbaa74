namespace Engine.Models.Peft;

/// <summary>
/// SSF (Scale and Shift Features): y = γ ⊙ x + β over the channels at every site that follows a Linear, conv or
/// affine LayerNorm (for ViT: after patch embedding, norm1, qkv, proj, norm2, fc1 before GELU, fc2, and the final
/// norm), γ ~ Normal(1, 0.02), β ~ Normal(0, 0.02). The backbone is frozen; the scales, shifts and the head train.
/// In training each γ, β is folded into its layer on the fly (<see cref="SiteComputation.Produce"/>): into a
/// LayerNorm's weight and bias, or into a Linear layer's bias epilogue, so SSF adds no pass of its own.
/// <see cref="Merge"/> folds every γ, β into the layer before it, giving a plain model with no extra parameters.
/// </summary>
public sealed class Ssf : PeftMethod
{
    readonly Dictionary<string, ChannelAffine> _bySite = new(StringComparer.Ordinal);

    /// <summary>The scale and shift at each site not (yet) folded into a layer (after <see cref="Merge"/>: the kept ones), for export.</summary>
    internal IReadOnlyDictionary<string, ChannelAffine> Affines => _bySite;
    readonly List<Tensor> _added = new();
    readonly ulong _seed;
    IPeftModel? _model;

    /// <summary>SSF with scales and shifts drawn from <paramref name="seed"/>.</summary>
    public Ssf(ulong seed = 42) => _seed = seed;

    /// <inheritdoc/>
    public override string Name => PeftMethods.Ssf.Name;

    /// <inheritdoc/>
    public override IReadOnlyList<Tensor> AddedParameters => _added;

    /// <inheritdoc/>
    public override void Apply(IPeftModel model)
    {
        if (_model != null) throw new InvalidOperationException("SSF is already applied to a model");
        _model = model;
        foreach (var p in model.Parameters) p.RequiresGrad = IsHead(p);
        var device = model.Parameters[0].Device;
        ulong stream = _seed;
        foreach (var site in model.Sites.Where(s => s.Producer != SiteProducer.Residual))
        {
            var scale = Tensor.Parameter(device, $"{site.Name}.ssf_scale", site.Channels);
            var shift = Tensor.Parameter(device, $"{site.Name}.ssf_shift", site.Channels);
            Init.Normal(scale, 0.02f, stream++, mean: 1f);
            Init.Normal(shift, 0.02f, stream++);
            _bySite[site.Name] = new ChannelAffine(scale, shift);
            _added.Add(scale);
            _added.Add(shift);
        }
        model.SiteAffine = site => _bySite.TryGetValue(site.Name, out var affine) ? affine : null;
    }

    /// <summary>
    /// Re-parameterisation: for each site, the producing layer's output channel o becomes γ_o·(W[o]·x + b_o) + β_o,
    /// i.e. W'[o,:] = γ_o·W[o,:] and b'_o = γ_o·b_o + β_o (a LayerNorm's weight and bias fold the same way), and the
    /// site's affine is removed. A <see cref="SiteProducer.StageOutput"/> site (ConvNeXt's final stage output, a residual
    /// sum followed by pooling and a norm) has no layer to fold into and stays a per-channel affine. The model then
    /// computes what it computed with SSF.
    /// </summary>
    /// <returns>The sites kept as per-channel affines (empty for ViT and Swin).</returns>
    /// <exception cref="InvalidOperationException">SSF was not applied, or a site's layer has no bias to take β
    /// (checked for every site before anything changes).</exception>
    public override IReadOnlyList<string> Merge()
    {
        var model = _model ?? throw new InvalidOperationException("SSF must be applied to a model before merging");
        var sites = model.Sites.Where(s => _bySite.ContainsKey(s.Name)).ToList();
        var kept = sites.Where(s => s.Producer == SiteProducer.StageOutput).Select(s => s.Name).ToList();
        var folded = sites.Where(s => s.Producer != SiteProducer.StageOutput).ToList();
        if (folded.FirstOrDefault(s => s.Bias == null) is { } biasFree)
            throw new InvalidOperationException($"SSF merge: {biasFree.Name} has no bias parameter to take the shift (a bias-free layer)");
        foreach (var site in folded)
        {
            var (scaleTensor, shiftTensor) = _bySite[site.Name];
            float[] gamma = scaleTensor.ToArray(), beta = shiftTensor.ToArray(), w = site.Weight!.ToArray(), b = site.Bias!.ToArray();
            int perRow = w.Length / site.Channels;
            for (int o = 0; o < site.Channels; o++)
            {
                for (int j = 0; j < perRow; j++) w[o * perRow + j] *= gamma[o];
                b[o] = gamma[o] * b[o] + beta[o];
            }
            site.Weight.CopyFrom(w);
            site.Bias.CopyFrom(b);
            _bySite.Remove(site.Name);
        }
        model.SiteAffine = kept.Count == 0 ? null : site => _bySite.TryGetValue(site.Name, out var affine) ? affine : null;
        return kept;
    }
}
