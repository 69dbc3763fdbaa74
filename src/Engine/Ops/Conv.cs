using Engine.Autograd;

namespace Engine;

// Convolutions: depthwise (ConvNeXt), and kernel = stride convs (ViT patch embedding, ConvNeXt stem and
// downsampling) as Patchify + Linear. Kernels: CpuKernels.Conv.cs, cuda/conv.cu.
public static unsafe partial class Ops
{
    /// <summary>Depthwise k×k convolution, stride 1, zero padding, channels-last: x [N,H,W,C], weight [C,1,k,k]
    /// (timm layout) or [C,k,k], bias [C] or null → [N,Ho,Wo,C] with Ho = H + 2·pad − k + 1, 0 ≤ pad ≤ k − 1.
    /// x is kept for backward only when the weight trains.</summary>
    public static Tensor DepthwiseConv2d(Tensor x, Tensor weight, Tensor? bias, int padding)
    {
        const string op = "DepthwiseConv2d";
        Check(op, "input", x, 4);
        Check(op, "weight", weight, device: x.Device);
        int N = x.Shape[0], H = x.Shape[1], W = x.Shape[2], C = x.Shape[3], k = weight.Shape[^1];
        if (weight.Shape[0] != C || weight.Shape[^2] != k || weight.Count != (long)C * k * k)
            throw new ArgumentException($"{op}: weight {weight.Describe()} must be [{C}, 1, k, k] for input {x.Describe()}");
        CheckVector(op, "bias", bias, C, x);
        int Ho = H + 2 * padding - k + 1, Wo = W + 2 * padding - k + 1;
        if (padding < 0 || padding > k - 1 || Ho <= 0 || Wo <= 0)
            throw new ArgumentException($"{op}: kernel {k} with padding {padding} does not fit input {x.Describe()} (padding must be 0 to {k - 1})");
        var y = Tensor.Empty(x.Device, DType.F32, N, Ho, Wo, C);
        x.Device.Kernels.DepthwiseConvForward(y.Data, x.Data, weight.Data, bias == null ? null : bias.Data, N, H, W, C, k, padding);
        if (Tape.ShouldRecord(x, weight, bias))
            Tape.Push(y, new DepthwiseConv2dSaved
            {
                X = x, Weight = weight, Bias = bias, H = H, W = W, Kernel = k, Padding = padding,
                XKept = weight.RequiresGrad ? Tape.Save(x) : null,
            });
        return y;
    }

    /// <summary>DepthwiseConv2d's backward state: x [N,H,W,C] (kept only when the weight trains), weight [C,1,k,k], bias [C].</summary>
    struct DepthwiseConv2dSaved : IBackward<DepthwiseConv2dSaved>
    {
        public Tensor X, Weight;
        public Tensor? Bias, XKept;
        public int H, W, Kernel, Padding;

        public static void Backward(ref DepthwiseConv2dSaved s, Tensor y)
        {
            int N = y.Shape[0], C = y.Shape[3];
            float* dx = Tape.GradOutputIfNeeded(s.X, out bool acc);
            var w = s.Weight;
            var k = y.Device.Kernels;
            // A weight training sparsely (GPS) takes its selected taps from the dense [C, k·k] gradient.
            var entries = w.RequiresGrad ? w.Trainability.Entries : null;
            using var dense = entries != null ? Tensor.Zeros(w.Device, w.Shape) : null;
            k.DepthwiseConvBackward(dx, dense != null ? dense.Data : Tape.GradAccumulatorIfNeeded(w), Tape.GradAccumulatorIfNeeded(s.Bias),
                y.Grad!.Data, s.XKept == null ? null : s.XKept.Data, w.Data, N, s.H, s.W, C, s.Kernel, s.Padding, acc);
            if (dense != null)
                k.AddSelectedEntries(Tape.SparseGradAccumulator(w), dense.Data, entries!.IntData, C, (int)(w.Count / C), entries.Shape[1]);
        }
    }

    /// <summary>ViT patch embedding: a conv with kernel = stride = p on images x [N,C,H,W] as Patchify + Linear.
    /// weight [D,C,p,p], bias [D] → tokens [N, (H/p)·(W/p), D] (token t = row·(W/p) + column).</summary>
    public static Tensor PatchEmbed(Tensor images, Tensor weight, Tensor? bias)
    {
        using var patches = Patchify(images, weight.Shape[^1], channelsLast: false);
        return Linear(patches, weight, bias);
    }

    /// <summary>Strided downsampling conv with kernel = stride = p on channels-last x [N,H,W,C]:
    /// weight [O,C,p,p], bias [O] → [N,H/p,W/p,O] (ConvNeXt's downsample and stem).</summary>
    public static Tensor PatchConv(Tensor x, Tensor weight, Tensor? bias)
    {
        int p = weight.Shape[^1];
        using var patches = Patchify(x, p, channelsLast: true);
        using var y = Linear(patches, weight, bias);
        return y.Reshape(x.Shape[0], x.Shape[1] / p, x.Shape[2] / p, weight.Shape[0]);
    }
}
