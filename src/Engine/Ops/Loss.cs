using Engine.Autograd;

namespace Engine;

// Softmax cross-entropy with label smoothing (fused; probabilities are never stored), and the supervised
// contrastive loss of GPS's selection pass.
public static unsafe partial class Ops
{
    /// <summary>Mean cross-entropy of logits [B,V] against int32 targets [B], with label smoothing ε
    /// (target distribution (1−ε)·onehot + ε/V, as timm's LabelSmoothingCrossEntropy). Returns a [1] tensor.</summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor targets, float smoothing = 0f)
    {
        const string op = "CrossEntropy";
        Check(op, "logits", logits, 2);
        Check(op, "targets", targets, 1, logits.Device, DType.I32);
        CheckDim(op, "targets", targets, 0, logits.Shape[0], $"logits {logits.Describe()}");
        if (smoothing is < 0f or >= 1f) throw new ArgumentOutOfRangeException(nameof(smoothing), smoothing, $"{op}: smoothing must be in [0, 1)");
        int B = logits.Shape[0], V = logits.Shape[1];
        var loss = Tensor.Empty(logits.Device, DType.F32, 1);
        logits.Device.Kernels.CrossEntropyForward(loss.Data, logits.Data, targets.IntData, B, V, smoothing);
        if (Tape.ShouldRecord(logits))
        {
            ref var n = ref Tape.Push(&CrossEntropyBackward, loss);
            n.In0 = logits;
            n.Saved0 = Tape.Save(logits);
            n.Saved1 = targets.Contiguous();
            n.F0 = smoothing;
        }
        return loss;
    }

    static void CrossEntropyBackward(ref Node n)
    {
        var logits = n.Saved0!;
        float* dlogits = Tape.GradOutput(n.In0!, out bool acc);
        n.Out.Device.Kernels.CrossEntropyBackward(dlogits, n.Out.Grad!.Data, logits.Data, n.Saved1!.IntData,
            logits.Shape[0], logits.Shape[1], n.F0, acc);
    }

    /// <summary>
    /// Supervised contrastive loss (Khosla et al. 2020, SupContrast's contrast_mode 'all') from the similarities
    /// s [N,N] of L2-normalised features and int32 labels [N]: every row is an anchor against the other N−1, its
    /// positives are the other rows with its label, ℓ_i = −mean_p (s_ip/τ − log Σ_{a≠i} exp(s_ia/τ)), and the loss is
    /// the mean over all N anchors (an anchor without positives adds 0). Returns a [1] tensor.
    /// </summary>
    public static Tensor SupConLoss(Tensor similarities, Tensor labels, float temperature = 0.07f)
    {
        const string op = "SupConLoss";
        Check(op, "similarities", similarities, 2);
        Check(op, "labels", labels, 1, similarities.Device, DType.I32);
        int N = similarities.Shape[0];
        CheckDim(op, "similarities", similarities, 1, N, "a square matrix");
        CheckDim(op, "labels", labels, 0, N, $"similarities {similarities.Describe()}");
        if (!(temperature > 0f)) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, $"{op}: temperature must be positive");
        var loss = Tensor.Empty(similarities.Device, DType.F32, 1);
        similarities.Device.Kernels.SupConForward(loss.Data, similarities.Data, labels.IntData, N, temperature);
        if (Tape.ShouldRecord(similarities))
        {
            ref var n = ref Tape.Push(&SupConLossBackward, loss);
            n.In0 = similarities;
            n.Saved0 = Tape.Save(similarities);
            n.Saved1 = labels.Contiguous();
            n.F0 = temperature;
        }
        return loss;
    }

    static void SupConLossBackward(ref Node n)
    {
        var s = n.Saved0!;
        float* ds = Tape.GradOutput(n.In0!, out bool acc);
        n.Out.Device.Kernels.SupConBackward(ds, n.Out.Grad!.Data, s.Data, n.Saved1!.IntData, s.Shape[0], n.F0, acc);
    }
}
