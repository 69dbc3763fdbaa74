namespace Engine.Kernels.Cuda;

/// <summary>A kernel of cuda/*.cu: the family file that defines it and its <c>extern "C"</c> name. Launches go through
/// these handles, never bare strings, so a kernel missing from its file fails at its first launch with both names
/// (and <c>CudaKernelHandlesMatchTheSources</c> checks every handle against the sources at test time).</summary>
public sealed record CudaKernel(string File, string Name)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Name} (cuda/{File})";
}

/// <summary>Every kernel in cuda/, one nested class per family file (the family names of Ops/*.cs and CpuKernels.*.cs).</summary>
public static class CudaKernelHandles
{
    /// <summary>cuda/activations.cu.</summary>
    public static class Activations
    {
        const string File = "activations.cu";
        /// <summary><c>gelu_forward</c>.</summary>
        public static readonly CudaKernel GeluForward = new(File, "gelu_forward");
        /// <summary><c>gelu_backward</c>.</summary>
        public static readonly CudaKernel GeluBackward = new(File, "gelu_backward");
        /// <summary><c>bias_gelu_backward</c>.</summary>
        public static readonly CudaKernel BiasGeluBackward = new(File, "bias_gelu_backward");
        /// <summary><c>bias_gelu_forward</c>.</summary>
        public static readonly CudaKernel BiasGeluForward = new(File, "bias_gelu_forward");
        /// <summary><c>relu_forward</c>.</summary>
        public static readonly CudaKernel ReluForward = new(File, "relu_forward");
        /// <summary><c>relu_backward</c>.</summary>
        public static readonly CudaKernel ReluBackward = new(File, "relu_backward");
    }

    /// <summary>cuda/precision.cu.</summary>
    public static class Precision
    {
        const string File = "precision.cu";
        /// <summary><c>round_to_precision</c>.</summary>
        public static readonly CudaKernel RoundToPrecision = new(File, "round_to_precision");
        /// <summary><c>convert_to_bf16</c>.</summary>
        public static readonly CudaKernel ConvertToBf16 = new(File, "convert_to_bf16");
        /// <summary><c>convert_to_fp16</c>.</summary>
        public static readonly CudaKernel ConvertToFp16 = new(File, "convert_to_fp16");
        /// <summary><c>convert_from_bf16</c>.</summary>
        public static readonly CudaKernel ConvertFromBf16 = new(File, "convert_from_bf16");
        /// <summary><c>convert_from_fp16</c>.</summary>
        public static readonly CudaKernel ConvertFromFp16 = new(File, "convert_from_fp16");
        /// <summary><c>convert_to_16_many</c>.</summary>
        public static readonly CudaKernel ConvertTo16Many = new(File, "convert_to_16_many");
    }

    /// <summary>cuda/attention.cu.</summary>
    public static class Attention
    {
        const string File = "attention.cu";
        /// <summary><c>split_heads</c>.</summary>
        public static readonly CudaKernel SplitHeads = new(File, "split_heads");
        /// <summary><c>split_heads_backward</c>.</summary>
        public static readonly CudaKernel SplitHeadsBackward = new(File, "split_heads_backward");
        /// <summary><c>merge_heads</c>.</summary>
        public static readonly CudaKernel MergeHeads = new(File, "merge_heads");
        /// <summary><c>merge_heads_backward</c>.</summary>
        public static readonly CudaKernel MergeHeadsBackward = new(File, "merge_heads_backward");
        /// <summary><c>fused_attention_forward</c>.</summary>
        public static readonly CudaKernel FusedAttentionForward = new(File, "fused_attention_forward");
        /// <summary><c>fused_attention_forward_tc</c>.</summary>
        public static readonly CudaKernel FusedAttentionForwardTc = new(File, "fused_attention_forward_tc");
        /// <summary><c>fused_attention_backward_dq_tc</c>.</summary>
        public static readonly CudaKernel FusedAttentionBackwardDqTc = new(File, "fused_attention_backward_dq_tc");
        /// <summary><c>fused_attention_backward_dkdv_tc</c>.</summary>
        public static readonly CudaKernel FusedAttentionBackwardDkdvTc = new(File, "fused_attention_backward_dkdv_tc");
        /// <summary><c>fused_attention_forward_tc32</c>.</summary>
        public static readonly CudaKernel FusedAttentionForwardTc32 = new(File, "fused_attention_forward_tc32");
        /// <summary><c>fused_attention_backward_dq_tc32</c>.</summary>
        public static readonly CudaKernel FusedAttentionBackwardDqTc32 = new(File, "fused_attention_backward_dq_tc32");
        /// <summary><c>fused_attention_backward_dkdv_tc32</c>.</summary>
        public static readonly CudaKernel FusedAttentionBackwardDkdvTc32 = new(File, "fused_attention_backward_dkdv_tc32");
        /// <summary><c>fused_attention_backward_dq</c>.</summary>
        public static readonly CudaKernel FusedAttentionBackwardDq = new(File, "fused_attention_backward_dq");
        /// <summary><c>fused_attention_backward_dkdv</c>.</summary>
        public static readonly CudaKernel FusedAttentionBackwardDkdv = new(File, "fused_attention_backward_dkdv");
        /// <summary><c>fused_attention_backward_bias</c>.</summary>
        public static readonly CudaKernel FusedAttentionBackwardBias = new(File, "fused_attention_backward_bias");
    }

    /// <summary>cuda/conv.cu.</summary>
    public static class Conv
    {
        const string File = "conv.cu";
        /// <summary><c>depthwise_conv_forward</c>.</summary>
        public static readonly CudaKernel DepthwiseConvForward = new(File, "depthwise_conv_forward");
        /// <summary><c>depthwise_conv_backward_input</c>.</summary>
        public static readonly CudaKernel DepthwiseConvBackwardInput = new(File, "depthwise_conv_backward_input");
        /// <summary><c>depthwise_conv_backward_params</c>.</summary>
        public static readonly CudaKernel DepthwiseConvBackwardParams = new(File, "depthwise_conv_backward_params");
    }

    /// <summary>cuda/dropout.cu.</summary>
    public static class Dropout
    {
        const string File = "dropout.cu";
        /// <summary><c>drop_samples</c>.</summary>
        public static readonly CudaKernel DropSamples = new(File, "drop_samples");
    }

    /// <summary>cuda/elementwise.cu.</summary>
    public static class Elementwise
    {
        const string File = "elementwise.cu";
        /// <summary><c>fill</c>.</summary>
        public static readonly CudaKernel Fill = new(File, "fill");
        /// <summary><c>fill_many</c>.</summary>
        public static readonly CudaKernel FillMany = new(File, "fill_many");
        /// <summary><c>copy</c>.</summary>
        public static readonly CudaKernel Copy = new(File, "copy");
        /// <summary><c>copy_strided</c>.</summary>
        public static readonly CudaKernel CopyStrided = new(File, "copy_strided");
        /// <summary><c>scale</c>.</summary>
        public static readonly CudaKernel Scale = new(File, "scale");
        /// <summary><c>add</c>.</summary>
        public static readonly CudaKernel Add = new(File, "add");
        /// <summary><c>add_bias</c>.</summary>
        public static readonly CudaKernel AddBias = new(File, "add_bias");
        /// <summary><c>column_sum_strided</c>.</summary>
        public static readonly CudaKernel ColumnSumStrided = new(File, "column_sum_strided");
        /// <summary><c>column_partials_sum</c>.</summary>
        public static readonly CudaKernel ColumnPartialsSum = new(File, "column_partials_sum");
    }

    /// <summary>cuda/loss.cu.</summary>
    public static class Loss
    {
        const string File = "loss.cu";
        /// <summary><c>cross_entropy_forward</c>.</summary>
        public static readonly CudaKernel CrossEntropyForward = new(File, "cross_entropy_forward");
        /// <summary><c>cross_entropy_backward</c>.</summary>
        public static readonly CudaKernel CrossEntropyBackward = new(File, "cross_entropy_backward");
        /// <summary><c>supcon_forward</c>.</summary>
        public static readonly CudaKernel SupconForward = new(File, "supcon_forward");
        /// <summary><c>supcon_backward</c>.</summary>
        public static readonly CudaKernel SupconBackward = new(File, "supcon_backward");
    }

    /// <summary>cuda/norm.cu.</summary>
    public static class Norm
    {
        const string File = "norm.cu";
        /// <summary><c>layernorm_forward</c>.</summary>
        public static readonly CudaKernel LayernormForward = new(File, "layernorm_forward");
        /// <summary><c>layernorm_forward_768</c>: rows up to 768 wide, in fewer registers.</summary>
        public static readonly CudaKernel LayernormForward768 = new(File, "layernorm_forward_768");
        /// <summary><c>layernorm_backward_input</c>.</summary>
        public static readonly CudaKernel LayernormBackwardInput = new(File, "layernorm_backward_input");
        /// <summary><c>layernorm_backward</c>.</summary>
        public static readonly CudaKernel LayernormBackward = new(File, "layernorm_backward");
        /// <summary><c>layernorm_backward_768</c>: rows up to 768 wide, in fewer registers.</summary>
        public static readonly CudaKernel LayernormBackward768 = new(File, "layernorm_backward_768");
        /// <summary><c>layernorm_backward_params</c>.</summary>
        public static readonly CudaKernel LayernormBackwardParams = new(File, "layernorm_backward_params");
        /// <summary><c>scale_shift_forward</c>.</summary>
        public static readonly CudaKernel ScaleShiftForward = new(File, "scale_shift_forward");
        /// <summary><c>scale_shift_backward_input</c>.</summary>
        public static readonly CudaKernel ScaleShiftBackwardInput = new(File, "scale_shift_backward_input");
        /// <summary><c>scale_shift_backward</c>.</summary>
        public static readonly CudaKernel ScaleShiftBackward = new(File, "scale_shift_backward");
        /// <summary><c>scale_shift_many</c>.</summary>
        public static readonly CudaKernel ScaleShiftMany = new(File, "scale_shift_many");
        /// <summary><c>scale_shift_many_backward</c>.</summary>
        public static readonly CudaKernel ScaleShiftManyBackward = new(File, "scale_shift_many_backward");
        /// <summary><c>l2_normalize_forward</c>.</summary>
        public static readonly CudaKernel L2NormalizeForward = new(File, "l2_normalize_forward");
        /// <summary><c>l2_normalize_backward</c>.</summary>
        public static readonly CudaKernel L2NormalizeBackward = new(File, "l2_normalize_backward");
    }

    /// <summary>cuda/optimizer.cu.</summary>
    public static class Optimizer
    {
        const string File = "optimizer.cu";
        /// <summary><c>adam_step</c>.</summary>
        public static readonly CudaKernel AdamStep = new(File, "adam_step");
        /// <summary><c>adam_step_many</c>.</summary>
        public static readonly CudaKernel AdamStepMany = new(File, "adam_step_many");
        /// <summary><c>sparse_adam_step</c>.</summary>
        public static readonly CudaKernel SparseAdamStep = new(File, "sparse_adam_step");
    }

    /// <summary>cuda/patches.cu.</summary>
    public static class Patches
    {
        const string File = "patches.cu";
        /// <summary><c>patchify</c>.</summary>
        public static readonly CudaKernel Patchify = new(File, "patchify");
        /// <summary><c>patchify_backward</c>.</summary>
        public static readonly CudaKernel PatchifyBackward = new(File, "patchify_backward");
        /// <summary><c>patch_merge</c>.</summary>
        public static readonly CudaKernel PatchMerge = new(File, "patch_merge");
        /// <summary><c>patch_merge_backward</c>.</summary>
        public static readonly CudaKernel PatchMergeBackward = new(File, "patch_merge_backward");
    }

    /// <summary>cuda/peft.cu.</summary>
    public static class Peft
    {
        const string File = "peft.cu";
        /// <summary><c>gather_channels</c>.</summary>
        public static readonly CudaKernel GatherChannels = new(File, "gather_channels");
        /// <summary><c>scatter_add_channels</c>.</summary>
        public static readonly CudaKernel ScatterAddChannels = new(File, "scatter_add_channels");
        /// <summary><c>add_selected_entries</c>.</summary>
        public static readonly CudaKernel AddSelectedEntries = new(File, "add_selected_entries");
        /// <summary><c>sparse_weight_grad</c>: dy and x in float32.</summary>
        public static readonly CudaKernel SparseWeightGrad = new(File, "sparse_weight_grad");
        /// <summary><c>sparse_weight_grad_x16</c>: x packed in 16 bits, dy in float32.</summary>
        public static readonly CudaKernel SparseWeightGradX16 = new(File, "sparse_weight_grad_x16");
        /// <summary><c>sparse_weight_grad_dy16</c>: dy packed in 16 bits, x in float32.</summary>
        public static readonly CudaKernel SparseWeightGradDy16 = new(File, "sparse_weight_grad_dy16");
        /// <summary><c>sparse_weight_grad_x16_dy16</c>: both packed in 16 bits.</summary>
        public static readonly CudaKernel SparseWeightGradX16Dy16 = new(File, "sparse_weight_grad_x16_dy16");
    }

    /// <summary>cuda/reductions.cu.</summary>
    public static class Reductions
    {
        const string File = "reductions.cu";
        /// <summary><c>sum_squares_partial</c>.</summary>
        public static readonly CudaKernel SumSquaresPartial = new(File, "sum_squares_partial");
        /// <summary><c>count_nonfinite_partial</c>.</summary>
        public static readonly CudaKernel CountNonfinitePartial = new(File, "count_nonfinite_partial");
        /// <summary><c>sum_partials</c>.</summary>
        public static readonly CudaKernel SumPartials = new(File, "sum_partials");
    }

    /// <summary>cuda/softmax.cu.</summary>
    public static class Softmax
    {
        const string File = "softmax.cu";
        /// <summary><c>softmax_forward</c>.</summary>
        public static readonly CudaKernel SoftmaxForward = new(File, "softmax_forward");
        /// <summary><c>softmax_backward</c>.</summary>
        public static readonly CudaKernel SoftmaxBackward = new(File, "softmax_backward");
    }

    /// <summary>cuda/tokens.cu.</summary>
    public static class Tokens
    {
        const string File = "tokens.cu";
        /// <summary><c>prepend_token</c>.</summary>
        public static readonly CudaKernel PrependToken = new(File, "prepend_token");
        /// <summary><c>prepend_token_backward_input</c>.</summary>
        public static readonly CudaKernel PrependTokenBackwardInput = new(File, "prepend_token_backward_input");
        /// <summary><c>copy_tokens</c>.</summary>
        public static readonly CudaKernel CopyTokens = new(File, "copy_tokens");
        /// <summary><c>take_token</c>.</summary>
        public static readonly CudaKernel TakeToken = new(File, "take_token");
        /// <summary><c>take_token_backward</c>.</summary>
        public static readonly CudaKernel TakeTokenBackward = new(File, "take_token_backward");
        /// <summary><c>mean_tokens_backward</c>.</summary>
        public static readonly CudaKernel MeanTokensBackward = new(File, "mean_tokens_backward");
    }

    /// <summary>cuda/windows.cu.</summary>
    public static class Windows
    {
        const string File = "windows.cu";
        /// <summary><c>window_partition</c>.</summary>
        public static readonly CudaKernel WindowPartition = new(File, "window_partition");
        /// <summary><c>window_reverse</c>.</summary>
        public static readonly CudaKernel WindowReverse = new(File, "window_reverse");
        /// <summary><c>relative_position_bias</c>.</summary>
        public static readonly CudaKernel RelativePositionBias = new(File, "relative_position_bias");
        /// <summary><c>relative_position_bias_backward</c>.</summary>
        public static readonly CudaKernel RelativePositionBiasBackward = new(File, "relative_position_bias_backward");
    }
}
