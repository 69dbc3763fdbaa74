using Engine.Autograd;
using Engine.Optim;

namespace Engine.Models.Training;

/// <summary>
/// One training step, the same in every loop of the project (fine-tuning runs, pretraining, the demo, the benchmarks and
/// GPS's selection pass): the forward under a recording tape, the loss, a finite-loss check, backward, then — with an
/// optimizer — fp16 loss scaling (when <see cref="LossScaler"/> is set), gradient clipping (when <see cref="MaxGradNorm"/>
/// is set), the optimizer step and zeroed gradients.
/// Without an optimizer the gradients accumulate over steps (a selection pass).
/// </summary>
public sealed class TrainStep(Adam? optimizer = null)
{
    readonly Tape _tape = new();
    long _steps;

    /// <summary>Clip the global gradient norm to this before the step (null: no clipping).</summary>
    public float? MaxGradNorm { get; init; }

    /// <summary>What trains, named in the divergence message (<c>dtd/ssf</c>, <c>pretraining</c>, ...).</summary>
    public string Context { get; init; } = "training";

    /// <summary>Steps run so far (set it when continuing a run, so messages count from its start).</summary>
    public long Steps { get => _steps; init => _steps = value; }

    /// <summary>Bytes of activations the last step kept for its backward.</summary>
    public long SavedBytes { get; private set; }

    /// <summary>The global gradient norm before clipping at the last step (NaN when not clipping).</summary>
    public double LastGradNorm { get; private set; } = double.NaN;

    /// <summary>fp16 training (with an optimizer): the backward starts from the loss times the scaler's scale, the
    /// gradients are unscaled before clipping and the step, and a step whose gradients overflowed is skipped. Null: no
    /// scaling.</summary>
    public LossScaler? LossScaler { get; init; }

    /// <summary>Whether the last step was skipped because its gradients overflowed (<see cref="LossScaler"/>).</summary>
    public bool LastStepSkipped { get; private set; }

    /// <summary>
    /// Runs one step: <paramref name="forward"/> (its output, e.g. logits), <paramref name="loss"/> of that output (a
    /// scalar), <paramref name="observe"/> on the output (e.g. counting correct predictions), backward, and the optimizer's
    /// step. Returns the loss. Both tensors are disposed by the step.
    /// </summary>
    /// <exception cref="DivergedException">The loss is NaN or infinite; nothing is stepped, the message says where
    /// (<see cref="Context"/>, the step, and <paramref name="hint"/>).</exception>
    public float Run(Func<Tensor> forward, Func<Tensor, Tensor> loss, Action<Tensor>? observe = null, string? hint = null)
    {
        float value;
        using (_tape.Record())
        {
            using var output = forward();
            using var scalar = loss(output);
            value = scalar.ToArray()[0];
            if (!float.IsFinite(value))
            {
                _tape.Clear();
                throw new DivergedException($"{Context}: the loss is {value} at step {Steps + 1}{(hint == null ? "" : $"; {hint}")}");
            }
            observe?.Invoke(output);
            SavedBytes = _tape.SavedBytes;
            if (LossScaler is { } scaler && optimizer != null)
            {
                using var seed = Tensor.FromArray(scalar.Device, [scaler.Scale], scalar.Shape);
                _tape.Backward(scalar, seed);
            }
            else _tape.Backward(scalar);
        }
        _steps++;
        LastStepSkipped = false;
        if (optimizer == null) return value;
        if (LossScaler is { } s && !s.Unscale(optimizer.Parameters))
        {
            LastStepSkipped = true;
            optimizer.ZeroGrad();
            return value;
        }
        if (MaxGradNorm is float max) LastGradNorm = Gradients.ClipGlobalNorm(optimizer.Parameters, max);
        optimizer.Step();
        optimizer.ZeroGrad();
        return value;
    }
}
