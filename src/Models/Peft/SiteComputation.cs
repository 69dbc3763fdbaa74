using Engine.Kernels;

namespace Engine.Models.Peft;

/// <summary>
/// How a model computes its feature sites, so that every <see cref="IPeftModel"/> applies
/// <see cref="IPeftModel.SiteAffine"/> and <see cref="IPeftModel.SiteHook"/> the same way.
/// </summary>
public static class SiteComputation
{
    /// <summary>
    /// The features at <paramref name="site"/>, computed by <paramref name="op"/> from the producing layer's (weight,
    /// bias), with the site's affine (γ, β) folded in so it costs no pass of its own, then the hook:
    /// <list type="bullet">
    /// <item>LayerNorm: op runs with weight γ⊙w and bias γ⊙b + β, so γ and β get their gradients from the norm's own
    /// parameter reductions and no extra activation is kept.</item>
    /// <item>Linear or conv: op runs without its bias, and one epilogue pass computes γ⊙u + (γ⊙b + β) (it keeps the
    /// bias-free output u for dγ; the dense weight gradient that folding γ into W would need is never formed).</item>
    /// </list>
    /// The folded vectors are [Channels] ops on the tape, so gradients reach γ, β and any trainable w, b exactly.
    /// </summary>
    /// <param name="model">The model whose <see cref="IPeftModel.SiteAffine"/> and hook apply.</param>
    /// <param name="site">A LayerNorm or Linear site; its <see cref="FeatureSite.Weight"/> and Bias are op's defaults.</param>
    /// <param name="op">The producing op, given (weight, bias) to use in place of the site's own.</param>
    public static Tensor Produce(this IPeftModel model, FeatureSite site, Func<Tensor?, Tensor?, Tensor> op) =>
        Hook(model, site, ProduceAffine(model, site, op));

    /// <summary>The features at a Linear-layer <paramref name="site"/> (a Linear on token features, not a convolution)
    /// computed from its input <paramref name="x"/>: <see cref="Produce"/> with the site's Linear, with the model's
    /// <see cref="IPeftModel.LinearHook"/> (LoRA) applied between the affine and the site hook. <paramref name="gemmInput"/>:
    /// only products that round it to the GEMMs' format read the output (a ViT block's qkv, where both attention paths
    /// read it in 16 bits), so under bf16 or fp16 GEMMs it may be written in that format (<see cref="Ops.Linear"/>);
    /// not where a site hook or a Linear hook reads it.</summary>
    public static Tensor ProduceLinear(this IPeftModel model, FeatureSite site, Tensor x, ulong? trainSeed, bool gemmInput = false)
    {
        gemmInput &= model.SiteHook == null && model.LinearHook == null;
        var y = model.SiteAffine?.Invoke(site) is { } affine && site.Producer == SiteProducer.Linear && site.Weight != null
            ? LinearAffine(model, site, x, affine, gemmInput: gemmInput)
            : ProduceAffine(model, site, (w, bias) => Ops.Linear(x, w!, bias, gemmInput: gemmInput));
        if (model.LinearHook is { } linear)
        {
            var z = linear(site, x, y, trainSeed);
            if (!ReferenceEquals(z, y)) y.Dispose();
            y = z;
        }
        return Hook(model, site, y);
    }

    /// <summary><paramref name="residual"/> + the features at a Linear-layer <paramref name="site"/> computed from
    /// <paramref name="x"/>: a block's branch joining its residual stream inside its last layer (proj, fc2), with the
    /// site's affine folded as <see cref="ProduceLinear(IPeftModel, FeatureSite, Tensor, ulong?, bool)"/> folds it. The add
    /// runs in the layer's own pass and the backward hands dy to the stream without a copy for the branch
    /// (<see cref="Ops.Linear"/>'s residual), bit for bit <c>Add(residual, ProduceLinear(site, x))</c>. Only where
    /// <see cref="JoinsBranchesInLayers"/>: no hook may see the branch alone.</summary>
    public static Tensor ProduceLinearResidual(this IPeftModel model, FeatureSite site, Tensor x, Tensor residual)
    {
        if (!model.JoinsBranchesInLayers())
            throw new InvalidOperationException($"{site.Name}: a hook observes the branch, so it cannot join the residual stream inside the layer");
        if (site.Producer != SiteProducer.Linear || site.Weight == null)
            throw new ArgumentException($"{site.Name}: a branch joins its residual stream in a Linear site with a weight, not a {site.Producer} site");
        return model.SiteAffine?.Invoke(site) is { } affine ? LinearAffine(model, site, x, affine, residual: residual)
            : Ops.Linear(x, site.Weight, site.Bias, residual);
    }

    /// <summary>Whether a block's branches may join the residual stream inside their last Linear
    /// (<see cref="ProduceLinearResidual"/>): no site hook, Linear hook or MLP hook
    /// observes a branch's output alone. The model also checks that no drop path or dropout is drawn between the layer
    /// and the sum.</summary>
    public static bool JoinsBranchesInLayers(this IPeftModel model) =>
        ResidualsInLayers && model.SiteHook == null && model.LinearHook == null && model.MlpHook == null;

    /// <summary>Whether the models join a branch to the residual stream inside its last Linear where they may
    /// (<see cref="JoinsBranchesInLayers"/>); false adds every branch after its layer, with the same results bit for bit
    /// (to compare).</summary>
    public static bool ResidualsInLayers { get; set; } = true;

    /// <summary>x + DropPath(branch) (drop path drawn from <paramref name="seed"/>'s stream for <paramref name="site"/> in
    /// train mode, when <paramref name="dropPath"/> > 0), in one pass (<see cref="Ops.DropPathAdd"/>): a block's residual
    /// join after the branch. Disposes both inputs (the tape keeps what backward needs).</summary>
    public static Tensor Residual(Tensor x, Tensor branch, float dropPath, ulong? seed, ulong site)
    {
        var y = seed.HasValue && dropPath > 0
            ? Ops.DropPathAdd(x, branch, dropPath, CounterRng.Hash(seed.Value, site))
            : Ops.Add(x, branch);
        x.Dispose();
        branch.Dispose();
        return y;
    }

    /// <summary>A Linear site's affine folded as <see cref="Produce"/> folds it, in one <see cref="Ops.LinearScaleShift"/>:
    /// the scale-shift in the GEMM's epilogue instead of a pass of its own; with <paramref name="gelu"/> (an MLP's first
    /// layer with nothing between it and its GELU), <see cref="Ops.LinearScaleShiftGelu"/>, the activation in the same
    /// epilogue; with a <paramref name="residual"/>, added in the same pass. The output is 16-bit with
    /// <paramref name="gemmInput"/> (no residual then).</summary>
    static Tensor LinearAffine(IPeftModel model, FeatureSite site, Tensor x, ChannelAffine affine, bool gelu = false, bool gemmInput = false,
        Tensor? residual = null)
    {
        using var folded = FoldedAffines.For(model, site, affine);
        return gelu ? Ops.LinearScaleShiftGelu(x, site.Weight!, affine.Scale, folded.Shift, gemmInput)
            : Ops.LinearScaleShift(x, site.Weight!, affine.Scale, folded.Shift, residual, gemmInput);
    }

    static Tensor ProduceAffine(IPeftModel model, FeatureSite site, Func<Tensor?, Tensor?, Tensor> op)
    {
        var affine = model.SiteAffine?.Invoke(site);
        if (affine == null) return op(site.Weight, site.Bias);
        if (site.Producer is not (SiteProducer.LayerNorm or SiteProducer.Linear))
            throw new ArgumentException($"{site.Name}: a {site.Producer} site has no producing layer; use Transform");
        using var folded = FoldedAffines.For(model, site, affine);
        if (site.Producer == SiteProducer.LayerNorm) return op(folded.Weight, folded.Shift);
        using var unbiased = op(site.Weight, null);
        return Ops.ScaleShift(unbiased, affine.Scale, folded.Shift);
    }

    /// <summary>Folds the affine of every LayerNorm and Linear site of <paramref name="model"/> into its layer's vectors
    /// (<see cref="Produce"/>: a norm's γ⊙w and γ⊙b + β, a Linear's γ⊙b + β) in one <see cref="Ops.ScaleShiftMany"/>, for
    /// the sites the forward computes until the result is disposed: on a GPU a launch per 32 vectors, forward and
    /// backward, instead of one per vector (SSF on ViT-B/16: 4 launches instead of 100 each way), with the same values
    /// and gradients bit for bit. A model's forward opens it first. Null when no site has an affine, or with
    /// <see cref="FoldAffinesTogether"/> off; a site computed outside it folds its own.</summary>
    public static IDisposable? FoldSiteAffines(this IPeftModel model)
    {
        if (!FoldAffinesTogether || model.SiteAffine is not { } affineOf) return null;
        var sites = new List<(FeatureSite, ChannelAffine)>();
        foreach (var site in model.Sites)
            if (site.Producer is (SiteProducer.LayerNorm or SiteProducer.Linear) && affineOf(site) is { } affine)
                sites.Add((site, affine));
        return sites.Count == 0 ? null : FoldedAffines.Open(model, sites);
    }

    /// <summary>Whether a model's forward folds every site's affine at once (<see cref="FoldSiteAffines"/>); false folds
    /// each where its site is computed, with the same results bit for bit (to compare).</summary>
    public static bool FoldAffinesTogether { get; set; } = true;

    /// <summary>Sites' layer vectors with their affines folded in, made by one <see cref="Ops.ScaleShiftMany"/>: the
    /// forward's (<see cref="FoldSiteAffines"/>, the current one on this thread until disposed), or one site's own.</summary>
    sealed class FoldedAffines : IDisposable
    {
        [ThreadStatic] static FoldedAffines? _current;
        readonly Dictionary<string, (ChannelAffine Affine, Tensor? Weight, Tensor Shift)> _bySite = new(StringComparer.Ordinal);
        readonly Tensor[] _made;
        readonly IPeftModel? _model; // set for a forward's, which is current until disposed
        readonly FoldedAffines? _previous;

        FoldedAffines(IReadOnlyList<(FeatureSite Site, ChannelAffine Affine)> sites, IPeftModel? model)
        {
            // A norm folds its weight, γ⊙w (+ no shift), and its bias, γ⊙b + β; a Linear its bias. γ and β stand in for a
            // missing weight or bias. The vectors in the order the sites' own folds would make them (weight, then bias).
            var vectors = new List<(Tensor, Tensor, Tensor?)>();
            foreach (var (site, affine) in sites)
            {
                if (site.Producer == SiteProducer.LayerNorm && site.Weight != null) vectors.Add((site.Weight, affine.Scale, null));
                if (site.Bias != null) vectors.Add((site.Bias, affine.Scale, affine.Shift));
            }
            _made = Ops.ScaleShiftMany(vectors);
            int next = 0;
            foreach (var (site, affine) in sites)
            {
                Tensor? weight = site.Producer != SiteProducer.LayerNorm ? null : site.Weight != null ? _made[next++] : affine.Scale;
                _bySite[site.Name] = (affine, weight, site.Bias != null ? _made[next++] : affine.Shift);
            }
            if (model == null) return;
            (_model, _previous, _current) = (model, _current, this);
        }

        /// <summary>Folds <paramref name="sites"/> and makes the result current for <paramref name="model"/>.</summary>
        public static FoldedAffines Open(IPeftModel model, IReadOnlyList<(FeatureSite, ChannelAffine)> sites) => new(sites, model);

        /// <summary><paramref name="site"/>'s folded vectors: the current forward's when it folded this site with this
        /// affine, else folded here (disposed with the result).</summary>
        public static Folded For(IPeftModel model, FeatureSite site, ChannelAffine affine)
        {
            for (var f = _current; f != null; f = f._previous)
                if (ReferenceEquals(f._model, model) && f._bySite.TryGetValue(site.Name, out var v) && ReferenceEquals(v.Affine, affine))
                    return new Folded(v.Weight, v.Shift, null);
            var own = new FoldedAffines([(site, affine)], null);
            var (_, weight, shift) = own._bySite[site.Name];
            return new Folded(weight, shift, own);
        }

        public void Dispose()
        {
            foreach (var t in _made) t.Dispose(); // the tape keeps what its backward reads
            if (_model != null) _current = _previous;
        }
    }

    /// <summary>A site's folded vectors: a norm's weight (null for a Linear) and the bias or shift; disposes them when they
    /// were made for this site alone.</summary>
    readonly struct Folded(Tensor? weight, Tensor shift, FoldedAffines? own) : IDisposable
    {
        public Tensor? Weight => weight;
        public Tensor Shift => shift;
        public void Dispose() => own?.Dispose();
    }

    /// <summary>GELU of the features at a Linear-layer <paramref name="site"/> computed from <paramref name="x"/> (an
    /// MLP's first layer): one <see cref="Ops.LinearGelu"/> when nothing transforms the site (no affine, no Linear hook,
    /// no site hook), one <see cref="Ops.LinearScaleShiftGelu"/> when only an affine does (SSF), else
    /// <see cref="ProduceLinear"/>, then GELU. <paramref name="gemmInput"/>: only the next Linear reads the result (see
    /// <see cref="OnlyProductsReadLinearInputs"/>), which may then be 16-bit (<see cref="Ops.LinearGelu"/>).</summary>
    public static Tensor ProduceGelu(this IPeftModel model, FeatureSite site, Tensor x, ulong? trainSeed, bool gemmInput = false)
    {
        if (site.Producer != SiteProducer.Linear || site.Weight == null)
            throw new ArgumentException($"{site.Name}: ProduceGelu needs a Linear site with a weight, not a {site.Producer} site");
        if (model.SiteHook == null && model.LinearHook == null)
            return model.SiteAffine?.Invoke(site) is { } affine ? LinearAffine(model, site, x, affine, gelu: true, gemmInput)
                : Ops.LinearGelu(x, site.Weight, site.Bias, gemmInput);
        using var h = model.ProduceLinear(site, x, trainSeed);
        return Ops.Gelu(h);
    }

    /// <summary>Whether a Linear site's input is read by its product alone: no site hook sees the features that feed it
    /// and no Linear hook (LoRA's) reads it. Then the op that computes it may write it in the GEMMs' 16-bit format
    /// (<c>gemmInput</c> of <see cref="Ops.LayerNorm"/>, <see cref="ProduceGelu"/>): the product rounds it so anyway.</summary>
    public static bool OnlyProductsReadLinearInputs(this IPeftModel model) => model.SiteHook == null && model.LinearHook == null;

    /// <summary>The features at a Linear-layer <paramref name="site"/> computed from <paramref name="x"/>, times a layer
    /// scale γ [Channels] (ConvNeXt's per-channel gamma after its MLP): one <see cref="Ops.LinearScaleShift"/>,
    /// (x·Wᵀ)·γ + γ⊙b with the scale in the GEMM's epilogue, when nothing transforms the site (no affine, no Linear
    /// hook, no site hook), else <see cref="ProduceLinear"/> and then a scale-shift of its own. <paramref name="zero"/> is
    /// a [Channels] vector of zeros, the shift when the layer has no bias. With a <paramref name="residual"/> (only where
    /// <see cref="JoinsBranchesInLayers"/>), residual + that, the add in the scale-shift's pass when nothing transforms
    /// the site, else an add after it.</summary>
    public static Tensor ProduceLinearScaled(this IPeftModel model, FeatureSite site, Tensor x, Tensor gamma, Tensor zero, ulong? trainSeed, Tensor? residual = null)
    {
        if (site.Producer != SiteProducer.Linear || site.Weight == null)
            throw new ArgumentException($"{site.Name}: ProduceLinearScaled needs a Linear site with a weight, not a {site.Producer} site");
        if (residual != null && !model.JoinsBranchesInLayers())
            throw new InvalidOperationException($"{site.Name}: a hook observes the branch, so it cannot join the residual stream inside the layer");
        if (model.SiteHook == null && model.LinearHook == null && model.SiteAffine?.Invoke(site) == null)
        {
            using var shift = site.Bias == null ? null : Ops.ScaleShift(site.Bias, gamma, zero);
            return Ops.LinearScaleShift(x, site.Weight, gamma, shift ?? zero, residual);
        }
        using var h = model.ProduceLinear(site, x, trainSeed);
        var scaled = Ops.ScaleShift(h, gamma, zero);
        if (residual == null) return scaled;
        using (scaled) return Ops.Add(residual, scaled);
    }

    /// <summary>The MLP branch's output after the model's <see cref="IPeftModel.MlpHook"/> (the bottleneck adapters),
    /// given the branch's <paramref name="input"/> and <paramref name="output"/>. Takes ownership of the output
    /// (disposed when replaced).</summary>
    public static Tensor MlpBranch(this IPeftModel model, FeatureSite fc2, Tensor input, Tensor output, ulong? trainSeed)
    {
        if (model.MlpHook is not { } hook) return output;
        var y = hook(fc2, input, output, trainSeed);
        if (!ReferenceEquals(y, output)) output.Dispose();
        return y;
    }

    /// <summary>The features at a site with no producing layer (a residual sum): the site's affine as its own pass,
    /// then the hook. Takes ownership of <paramref name="x"/> (disposed when replaced).</summary>
    public static Tensor Transform(this IPeftModel model, FeatureSite site, Tensor x)
    {
        if (model.SiteAffine?.Invoke(site) is not { } affine) return Hook(model, site, x);
        using (x) return Hook(model, site, Ops.ScaleShift(x, affine.Scale, affine.Shift));
    }

    static Tensor Hook(IPeftModel model, FeatureSite site, Tensor x)
    {
        if (model.SiteHook == null) return x;
        var y = model.SiteHook(site, x);
        if (!ReferenceEquals(y, x)) x.Dispose();
        return y;
    }

    /// <summary>Removes the model's site affine and hooks until the result is disposed, then restores them (a
    /// selection pass that must see the plain model).</summary>
    public static IDisposable Bypass(this IPeftModel model) => new BypassScope(model);

    sealed class BypassScope : IDisposable
    {
        readonly IPeftModel _model;
        readonly Func<FeatureSite, Tensor, Tensor>? _hook;
        readonly Func<FeatureSite, ChannelAffine?>? _affine;
        readonly LinearSiteHook? _linear;
        readonly MlpBranchHook? _mlp;

        public BypassScope(IPeftModel model)
        {
            (_model, _hook, _affine, _linear, _mlp) = (model, model.SiteHook, model.SiteAffine, model.LinearHook, model.MlpHook);
            model.SiteHook = null;
            model.SiteAffine = null;
            model.LinearHook = null;
            model.MlpHook = null;
        }

        public void Dispose()
        {
            _model.SiteHook = _hook;
            _model.SiteAffine = _affine;
            _model.LinearHook = _linear;
            _model.MlpHook = _mlp;
        }
    }
}
