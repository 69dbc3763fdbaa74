using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

/// <summary>
/// One conformance case per op, run on any device: forward against the double reference, every input gradient
/// against central finite differences, for every subset of the inputs that train (<see cref="GradCheck"/>). Odd sizes
/// on purpose. The cases live in one file per op family, named as the family's Ops, CPU and CUDA files
/// (OpCases.Norm.cs beside Ops/Norm.cs, CpuKernels.Norm.cs and cuda/norm.cu), each case named by its op. The NUnit
/// tests run each case on every backend; <c>peft selftest</c> runs them on the device it is given.
/// </summary>
public static partial class OpCases
{
    /// <summary>Every case by name, by family, in a stable order.</summary>
    public static IReadOnlyList<(string Name, Action<Device> Run)> All { get; } =
    [
        // Linear
        ("Linear", Linear),
        ("LinearGelu", LinearGelu),
        ("LinearScaleShift", LinearScaleShift),
        ("LinearScaleShiftGelu", LinearScaleShiftGelu),
        ("LinearResidual", LinearResidual),
        ("LinearInSixteenBits", LinearInSixteenBits),
        // Norm
        ("LayerNorm", LayerNorm),
        ("ScaleShift", ScaleShift),
        ("ScaleShiftMany", ScaleShiftMany),
        ("L2Normalize", L2Normalize),
        // Activations
        ("Gelu", Gelu),
        ("BiasGeluBackward", BiasGeluBackward),
        ("Relu", Relu),
        // Softmax
        ("Softmax", Softmax),
        // Attention
        ("Attention", Attention),
        ("AttentionWithBiasAndMask", AttentionWithBiasAndMask),
        ("FusedAttention", FusedAttention),
        ("FusedAttentionWithBiasAndMask", FusedAttentionWithBiasAndMask),
        ("FusedAttentionBf16", FusedAttentionBf16),
        ("FusedAttentionHeadDim64", FusedAttentionHeadDim64),
        ("FusedAttentionHeadDim32", FusedAttentionHeadDim32),
        ("AttentionInGemmPrecision", AttentionInGemmPrecision),
        // Elementwise
        ("Add", Add),
        ("ReshapeView", ReshapeView),
        // Loss
        ("CrossEntropy", CrossEntropy),
        ("SupConLoss", SupConLoss),
        // Conv
        ("DepthwiseConv2d", DepthwiseConv2d),
        ("PatchEmbed", PatchEmbed),
        ("PatchConv", PatchConv),
        // Patches
        ("PatchMerge", PatchMerge),
        // Windows
        ("WindowPartition", WindowPartition),
        ("WindowReverse", WindowReverse),
        ("RelativePositionBias", RelativePositionBias),
        // Tokens
        ("PrependToken", PrependToken),
        ("AddPositionEmbedding", AddPositionEmbedding),
        ("ConcatTokens", ConcatTokens),
        ("SliceTokens", SliceTokens),
        ("TakeToken", TakeToken),
        ("MeanTokens", MeanTokens),
        // Dropout
        ("DropPath", DropPath),
        ("DropPathAdd", DropPathAdd),
        ("Dropout", Dropout),
        // Peft
        ("ChannelAdapter", ChannelAdapter),
        ("Lora", Lora),
        ("SparseLinearGrad", SparseLinearGrad),
        ("SparseDepthwiseGrad", SparseDepthwiseGrad),
        // Optimizer
        ("AdamStep", AdamStep),
        ("SparseAdam", SparseAdam),
        ("AdamStepValues", AdamStepValues),
        ("AdamStepMany", AdamStepMany),
        // Precision
        ("RoundToPrecision", RoundToPrecision),
        ("PackLowPrecision", PackLowPrecision),
        ("PackLowPrecisionMany", PackLowPrecisionMany),
        ("ShareWeightCopies", ShareWeightCopies),
        ("SavedGemmOperandsInGemmPrecision", SavedGemmOperandsInGemmPrecision),
        ("LinearOutputsInGemmPrecision", LinearOutputsInGemmPrecision),
        ("GemmInputsInGemmPrecision", GemmInputsInGemmPrecision),
        ("GradientCopies", GradientCopies),
        ("GemmTf32", GemmTf32),
        ("GemmBf16", GemmBf16),
        ("GemmFp16", GemmFp16),
    ];
}
