namespace Engine.Models.Peft;

/// <summary>What produces the features at a <see cref="FeatureSite"/>, which decides how a per-channel affine
/// folds into it.</summary>
public enum SiteProducer
{
    /// <summary>A Linear or conv layer: weight [out, ...] and bias [out] (or none).</summary>
    Linear,
    /// <summary>An affine LayerNorm: weight [C], bias [C].</summary>
    LayerNorm,
    /// <summary>A residual sum: nothing to fold into (SCT's sites; SSF leaves them alone).</summary>
    Residual,
    /// <summary>A stage's output, a residual sum that SSF does scale and shift (ConvNeXt's final stage, before the head's
    /// pool and norm): no layer to fold into, so a merge keeps it as a per-channel affine.</summary>
    StageOutput,
}

/// <summary>
/// A named point in a model's forward where a PEFT method may transform the features [..., Channels], named after
/// the timm module whose output it is (<c>blocks.3.attn.qkv</c>, <c>blocks.3.norm1</c>, <c>norm</c>, ...) or, for a
/// residual sum, <c>blocks.3.attn_residual</c>. <see cref="Weight"/> and <see cref="Bias"/> are the producing
/// layer's parameters (null for a residual, Bias null for a bias-free layer).
/// </summary>
public sealed record FeatureSite(string Name, int Channels, SiteProducer Producer, Tensor? Weight, Tensor? Bias);

/// <summary>A per-channel affine y = Scale ⊙ x + Shift over a site's channels (SSF), both [Channels].</summary>
public sealed record ChannelAffine(Tensor Scale, Tensor Shift);

/// <summary>What a method adds to a Linear layer (LoRA's low-rank path): given the site, the layer's input x [..., in],
/// its output y [..., out] (the site's affine applied) and the forward's train seed (null in eval mode, for the method's
/// own dropout), the output to continue with (y itself when the layer is untouched; a new tensor replaces y, which the
/// caller then disposes).</summary>
public delegate Tensor LinearSiteHook(FeatureSite site, Tensor input, Tensor output, ulong? trainSeed);

/// <summary>What a method adds to a block's MLP branch (the bottleneck adapters): given the branch's fc2 site, the
/// branch's input (the residual stream entering it, before its norm), its output (before stochastic depth and the
/// residual add: fc2's output in ViT and Swin, the layer-scaled branch in ConvNeXt) and the forward's train seed, the
/// output to continue with (a new tensor replaces it, which the caller then disposes).</summary>
public delegate Tensor MlpBranchHook(FeatureSite fc2, Tensor input, Tensor output, ulong? trainSeed);

/// <summary>
/// A model PEFT methods can transform: its parameters (timm names), its feature sites, and a hook the forward calls at
/// every site. Implemented by VisionTransformer, Swin and ConvNeXt.
/// </summary>
public interface IPeftModel
{
    /// <summary>Every parameter, named by its timm key.</summary>
    IReadOnlyList<Tensor> Parameters { get; }

    /// <summary>Every feature site, in forward order.</summary>
    IReadOnlyList<FeatureSite> Sites { get; }

    /// <summary>Tokens before the patch tokens in the token dimension (timm's <c>num_prefix_tokens</c>: 1 for ViT's class
    /// token, 0 for models without one).</summary>
    int NumPrefixTokens { get; }

    /// <summary>The pooled features after the final norm, [B, features] (the head's input, before head dropout). A
    /// <paramref name="trainSeed"/> turns on dropout and stochastic depth; null is eval mode.</summary>
    Tensor ForwardFeatures(Tensor images, ulong? trainSeed = null);

    /// <summary>Called at each site with the features there; returns the features to continue with (the input itself
    /// when the site is untouched). Null: every site is the identity.</summary>
    Func<FeatureSite, Tensor, Tensor>? SiteHook { get; set; }

    /// <summary>Whether every site sees every token even where the model's output reads fewer: set while a hook observes
    /// the tokens themselves (SCT's channel selection). False (the default): a model may run the layers after its last
    /// token mixing on the rows its output reads alone (ViT's last block past its attention, on the class token), with
    /// those rows' values and every gradient unchanged.</summary>
    bool KeepEveryToken { get; set; }

    /// <summary>A per-channel affine to apply at a site (null: none), which the forward folds into the layer that
    /// produces the site (<see cref="SiteComputation.Produce"/>) rather than running it as a separate pass; applied
    /// before <see cref="SiteHook"/>. Null: no site has one.</summary>
    Func<FeatureSite, ChannelAffine?>? SiteAffine { get; set; }

    /// <summary>Called at each site whose producer is a Linear layer applied to token features (attention's qkv and
    /// proj, the MLP's fc1 before its activation and fc2; not the patch embedding or convolutions), after the site's
    /// affine and before <see cref="SiteHook"/>. Null: none.</summary>
    LinearSiteHook? LinearHook { get; set; }

    /// <summary>Called at the end of every block's MLP branch (ConvNeXt: its whole branch), before stochastic depth and
    /// the residual add. Null: none.</summary>
    MlpBranchHook? MlpHook { get; set; }

    /// <summary>The weights whose ops compute a sparse gradient when they train <see cref="TrainableKind.SelectedEntries"/>: those of
    /// the Linear-producer sites (Linear layers, patch and depthwise convolutions) by default, plus any such weight that
    /// is not a site's (Swin's patch-merging reduction). GPS trains the others it selects through a dense masked gradient.</summary>
    IEnumerable<Tensor> SparseGradientWeights { get; }
}
