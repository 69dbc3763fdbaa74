using Engine.Autograd;

namespace Engine;

// Softmax cross-entropy with label smoothing (fused; probabilities are never stored).
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
}
