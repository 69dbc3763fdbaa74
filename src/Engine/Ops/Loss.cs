using Engine.Autograd;

namespace Engine;

// Softmax cross-entropy with label smoothing (fused; probabilities are never stored), and the supervised
// contrastive loss of GPS's selection pass. Kernels: CpuKernels.Loss.cs, cuda/loss.cu.
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
            Tape.Push(loss, new CrossEntropySaved
            {
                Logits = logits, LogitsKept = Tape.Save(logits), Targets = Tape.Save(targets), Smoothing = smoothing,
            });
        return loss;
    }

    /// <summary>CrossEntropy's backward state: logits [B,V] and targets [B], kept.</summary>
    struct CrossEntropySaved : IBackward<CrossEntropySaved>
    {
        public Tensor Logits, LogitsKept, Targets;
        public float Smoothing;

        public static void Backward(ref CrossEntropySaved s, Tensor loss)
        {
            var logits = s.LogitsKept;
            float* dlogits = Tape.GradOutput(s.Logits, out bool acc);
            loss.Device.Kernels.CrossEntropyBackward(dlogits, loss.Grad!.Data, logits.Data, s.Targets.IntData,
                logits.Shape[0], logits.Shape[1], s.Smoothing, acc);
        }
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
            Tape.Push(loss, new SupConLossSaved
            {
                Similarities = similarities, SimilaritiesKept = Tape.Save(similarities), Labels = Tape.Save(labels),
                Temperature = temperature,
            });
        return loss;
    }

    /// <summary>SupConLoss's backward state: similarities [N,N] and labels [N], kept.</summary>
    struct SupConLossSaved : IBackward<SupConLossSaved>
    {
        public Tensor Similarities, SimilaritiesKept, Labels;
        public float Temperature;

        public static void Backward(ref SupConLossSaved s, Tensor loss)
        {
            var sim = s.SimilaritiesKept;
            float* ds = Tape.GradOutput(s.Similarities, out bool acc);
            loss.Device.Kernels.SupConBackward(ds, loss.Grad!.Data, sim.Data, s.Labels.IntData, sim.Shape[0], s.Temperature, acc);
        }
    }
}
