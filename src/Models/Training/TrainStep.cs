using Engine.Autograd;
using Engine.Kernels;
using Engine.Optim;

namespace Engine.Models.Training;

/// <summary>
/// One training step, the same in every loop of the project (fine-tuning runs, pretraining, the demo, the benchmarks and
/// GPS's selection pass): the forward under a recording tape, the loss, a finite-loss check, backward, then — with an
/// optimizer — fp16 loss scaling (when <see cref="LossScaler"/> is set), gradient clipping (when <see cref="MaxGradNorm"/>
/// is set), the optimizer step and zeroed gradients.
/// Without an optimizer the gradients accumulate over steps (a selection pass).
/// </summary>
public sealed unsafe class TrainStep(Adam? optimizer = null) : IDisposable
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
    /// The model's weights (all of its parameters, trained or frozen; null: none). Under bf16 or fp16 GEMMs on a device
    /// whose products read 16-bit operands (CUDA), each step's forward and backward read 16-bit copies of them made once
    /// at the step's start (<see cref="WeightCopies"/>) instead of converting each weight at every product, with the same
    /// results bit for bit; the copies take 2 bytes per weight value on the device. Elsewhere this does nothing.
    /// </summary>
    /// <remarks>An ordinary step (not a graph's capture or replay) with the copies that runs out of device memory drops
    /// them for good (they free their memory, and the products convert the weights again) and, with an optimizer, runs
    /// again without them: the forward and loss functions are called a second time. <see cref="WeightCopiesDropped"/>
    /// then says why.</remarks>
    public IEnumerable<Tensor>? Weights { init => _copies = value == null ? null : new WeightCopies(value); }

    WeightCopies? _copies;

    /// <summary>Holds the weights' 16-bit copies (<see cref="Weights"/>) between steps, for an evaluation whose forwards
    /// read the same weights (the weights refuse writes until it is disposed); null where the steps would not use them.
    /// Dispose it before the next step.</summary>
    public IDisposable? HoldWeightCopies() => _copies?.Hold();

    /// <summary>Bytes the weights' 16-bit copies take on the device (0 without them).</summary>
    public long WeightCopyBytes => _copies?.Bytes ?? 0;

    /// <summary>Why the steps no longer use the weights' 16-bit copies (<see cref="Weights"/>), or null while they do
    /// (or were never given any).</summary>
    public string? WeightCopiesDropped { get; private set; }

    /// <summary>
    /// Runs one step: <paramref name="forward"/> (its output, e.g. logits), <paramref name="loss"/> of that output (a
    /// scalar), backward, <paramref name="observe"/> on the output (e.g. counting correct predictions), and the
    /// optimizer's step. Returns the loss. Both tensors are disposed by the step.
    /// </summary>
    /// <exception cref="DivergedException">The loss is NaN or infinite; nothing is stepped, the message says where
    /// (<see cref="Context"/>, the step, and <paramref name="hint"/>).</exception>
    /// <exception cref="DeviceOutOfMemoryException">The device ran out of memory; nothing is stepped, nothing of the
    /// step is kept, and the next step may run a smaller batch.</exception>
    public float Run(Func<Tensor> forward, Func<Tensor, Tensor> loss, Action<Tensor>? observe = null, string? hint = null)
    {
        if (_copies is not { Active: true }) return RunOnce(forward, loss, observe, hint);
        try
        {
            return RunOnce(forward, loss, observe, hint);
        }
        catch (DeviceOutOfMemoryException e)
        {
            DropWeightCopies(e);
            if (optimizer == null) throw; // a selection pass's gradients may be half accumulated: the caller's to handle
            return RunOnce(forward, loss, observe, hint);
        }
    }

    /// <summary>Gives up the weights' copies after running out of memory with them: their memory goes back to the device.</summary>
    void DropWeightCopies(DeviceOutOfMemoryException e)
    {
        WeightCopiesDropped = $"the device ran out of memory with the weights' 16-bit copies held ({_copies!.Bytes / 1048576.0:0.#} MiB; " +
            $"{e.Message.TrimEnd('.')}): the products convert the weights at each step instead";
        _copies.Dispose();
        _copies = null;
    }

    /// <summary>One step as <see cref="Run(Func{Tensor}, Func{Tensor, Tensor}, Action{Tensor}?, string?)"/> describes it;
    /// <paramref name="observe"/> runs after the backward, so a step that runs out of memory has observed nothing.</summary>
    float RunOnce(Func<Tensor> forward, Func<Tensor, Tensor> loss, Action<Tensor>? observe, string? hint)
    {
        float value;
        using (_copies?.Hold()) // before the step's own tensors: the copies outlive it
        using (_tape.Record())
        using (var made = MadeTensors.Open())
        {
            try
            {
                using var output = forward();
                using var scalar = loss(output);
                value = scalar.ToArray()[0];
                if (!float.IsFinite(value)) throw Diverged(value, hint);
                SavedBytes = _tape.SavedBytes;
                if (LossScaler is { } scaler && optimizer != null)
                {
                    using var seed = Tensor.FromArray(scalar.Device, [scaler.Scale], scalar.Shape);
                    _tape.Backward(scalar, seed);
                }
                else _tape.Backward(scalar);
                observe?.Invoke(output);
            }
            catch (Exception failure)
            {
                try
                {
                    Abandon(made);
                }
                catch (Exception) when (failure is not DivergedException)
                {
                    // a device that failed (a kernel fault) may fail the cleanup too; the first failure is the one to report
                }
                throw;
            }
        }
        return Finish(value);
    }

    /// <summary>After a step that threw (a diverged loss, a device out of memory part way): the tape lets go of what
    /// the forward kept, every other tensor the step made and still holds is released (<see cref="MadeTensors"/>), and
    /// with an optimizer the gradients a backward may have half accumulated are zeroed, so the next step (a smaller
    /// batch, say) starts clean. Without one they are the caller's (a selection pass accumulates over steps).</summary>
    void Abandon(MadeTensors made)
    {
        _tape.Clear();
        made.ReleaseLive();
        optimizer?.ZeroGrad();
    }

    DivergedException Diverged(float loss, string? hint) =>
        new($"{Context}: the loss is {loss} at step {Steps + 1}{(hint == null ? "" : $"; {hint}")}");

    /// <summary>After backward: the step count, then with an optimizer the loss scaler, clipping, the step and zeroed
    /// gradients.</summary>
    float Finish(float value)
    {
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

    // ---------------------------------------------------------------- CUDA graphs

    /// <summary>
    /// On a CUDA device, run <see cref="Run(Tensor, Tensor, Func{Tensor, Tensor}, Func{Tensor, Tensor, Tensor}, Action{Tensor}?, string?)"/>'s
    /// whole step as one captured graph (<see cref="CudaDevice.Capture"/>): the first step of an input shape runs as
    /// usual (it allocates the gradients and fills the pool), the second is captured, and every later one with that
    /// shape copies its batch into the captured inputs and replays, one launch instead of one per kernel. The graph holds
    /// forward, loss, backward and, without clipping and loss scaling, the optimizer's step and the zeroing of the
    /// gradients (the kernels read the learning rate and bias corrections from the device, written before each replay,
    /// and skip the step when the loss is not finite); with clipping or loss scaling, which decide on the host, the
    /// optimizer runs after the replay as without a graph. Either way, without dropout the parameters are bit for bit
    /// the same as without a graph. Dropout and drop path draw their masks from the seed the step was captured with, XORed
    /// with a new offset at every replay (<see cref="CudaDevice.SetGraphSeedOffset"/>): new masks each step, but not
    /// the ones an ordinary step with the same seed draws. Ignored on other devices.
    /// </summary>
    public bool CudaGraph { get; init; }

    /// <summary>Steps that replayed a captured graph (<see cref="CudaGraph"/>).</summary>
    public long GraphReplays { get; private set; }

    /// <summary>Bytes of device memory the captured graph keeps for its replays (0 without one).</summary>
    public long GraphBytes => _graph?.Graph.ReservedBytes ?? 0;

    /// <summary>A captured step: the graph, the tensors its replays read (inputs, loss seed, step values) and write
    /// (output, loss), and each trained parameter's gradient buffer at capture (replays accumulate into those addresses).
    /// The optimizer's step is in the graph when <c>StepValues</c> (its lr, bias corrections and gate) is not null.</summary>
    sealed record Captured(DeviceGraph Graph, Tensor Input, Tensor Target, Tensor? Seed, Tensor? StepValues, Tensor Output, Tensor Loss,
        (Tensor Parameter, nint Grad)[] Gradients, int OptimizerRevision) : IDisposable
    {
        public void Dispose()
        {
            Graph.Dispose();
            foreach (var t in new[] { Input, Target, Seed, StepValues, Output, Loss }) t?.Dispose();
        }
    }

    Captured? _graph;
    string? _warmShape; // the input shapes of the last step run without a graph

    /// <summary>
    /// One step on <paramref name="input"/> and <paramref name="target"/>: <paramref name="forward"/> maps the input to
    /// the output (e.g. logits), <paramref name="loss"/> maps output and target to a scalar. The functions must read the
    /// batch only through their arguments, so that with <see cref="CudaGraph"/> a replay reads the new batch. Returns the
    /// loss; otherwise as <see cref="Run(Func{Tensor}, Func{Tensor, Tensor}, Action{Tensor}?, string?)"/>.
    /// </summary>
    /// <exception cref="DivergedException">The loss is NaN or infinite; nothing is stepped (after a replay the gradients
    /// the backward already formed are zeroed).</exception>
    public float Run(Tensor input, Tensor target, Func<Tensor, Tensor> forward, Func<Tensor, Tensor, Tensor> loss,
        Action<Tensor>? observe = null, string? hint = null)
    {
        if (!CudaGraph || input.Device is not CudaDevice device)
            return Run(() => forward(input), output => loss(output, target), observe, hint);
        // A shape that differs from the graph's runs as usual (an epoch's last, smaller batch); the same new shape twice
        // in a row replaces the graph. So does a gradient buffer that moved (the replays would write the old one).
        string shape = Shapes(input, target);
        if (_graph is { } g && (!GradientsInPlace(g) || g.OptimizerRevision != (optimizer?.Revision ?? 0)
                                || (Shapes(g.Input, g.Target) != shape && _warmShape == shape)))
        {
            _graph.Dispose();
            _graph = null;
        }
        if (_graph == null ? _warmShape != shape : Shapes(_graph.Input, _graph.Target) != shape)
        {
            _warmShape = shape;
            return Run(() => forward(input), output => loss(output, target), observe, hint);
        }
        _warmShape = null;
        _graph ??= Capture(device, input, target, forward, loss);
        var captured = _graph;
        CopyInto(device, captured.Input, input);
        CopyInto(device, captured.Target, target);
        if (captured.Seed != null) captured.Seed.CopyFrom([LossScaler!.Scale]);
        if (captured.StepValues != null) optimizer!.WriteStepValues(captured.StepValues);
        device.SetGraphSeedOffset(CounterRng.Hash(0x6EA9, (ulong)Steps)); // new dropout and drop-path masks every step
        captured.Graph.Replay();
        GraphReplays++;
        float value = captured.Loss.ToArray()[0];
        if (!float.IsFinite(value))
        {
            if (captured.StepValues != null) optimizer!.UncountStep(); // the gate skipped it; the graph zeroed the gradients
            else optimizer?.ZeroGrad();
            throw Diverged(value, hint);
        }
        observe?.Invoke(captured.Output);
        if (captured.StepValues == null) return Finish(value);
        _steps++;
        LastStepSkipped = false;
        return value;
    }

    /// <summary>Records forward, loss, backward and (without clipping or loss scaling) the optimizer's step on copies of the
    /// batch's tensors that the replays reuse.</summary>
    Captured Capture(CudaDevice device, Tensor input, Tensor target, Func<Tensor, Tensor> forward, Func<Tensor, Tensor, Tensor> loss)
    {
        var staticInput = Tensor.Empty(device, input.DType, input.Shape);
        var staticTarget = Tensor.Empty(device, target.DType, target.Shape);
        var seed = LossScaler != null && optimizer != null ? Tensor.Empty(device, DType.F32, 1) : null;
        // Clipping and loss scaling decide on the host after the backward, so their optimizer step stays outside.
        var stepValues = optimizer != null && MaxGradNorm == null && LossScaler == null ? Tensor.Empty(device, DType.F32, 4) : null;
        Tensor? output = null, scalar = null;
        try
        {
            var graph = device.Capture(() =>
            {
                using (_copies?.Hold())
                using (_tape.Record())
                {
                    output = forward(staticInput);
                    scalar = loss(output, staticTarget);
                    SavedBytes = _tape.SavedBytes;
                    if (seed != null)
                    {
                        using var shaped = seed.Reshape(scalar.Shape);
                        _tape.Backward(scalar, shaped);
                    }
                    else _tape.Backward(scalar);
                }
                if (stepValues != null)
                {
                    device.Kernels.Copy(stepValues.Data + 3, scalar.Data, 1, false); // the gate: a loss that is not finite skips the step
                    optimizer!.Step(stepValues);
                    optimizer.ZeroGrad();
                }
            });
            var gradients = (optimizer?.Parameters ?? []).Where(p => p.Grad != null).Select(p => (p, (nint)p.Grad!.Data)).ToArray();
            return new Captured(graph, staticInput, staticTarget, seed, stepValues, output!, scalar!, gradients, optimizer?.Revision ?? 0);
        }
        catch
        {
            _tape.Clear();
            foreach (var t in new[] { staticInput, staticTarget, seed, stepValues, output, scalar }) t?.Dispose();
            throw;
        }
    }

    static string Shapes(Tensor input, Tensor target) => $"{input.ShapeText} {input.DType} {target.ShapeText} {target.DType}";

    /// <summary>True when every parameter still accumulates into the gradient buffer the graph was captured with.</summary>
    static bool GradientsInPlace(Captured captured) =>
        captured.Gradients.All(g => g.Parameter.Grad is { } grad && !grad.IsDisposed && (nint)grad.Data == g.Grad);

    /// <summary>Copies a batch tensor into the graph's input on the device's stream.</summary>
    static void CopyInto(CudaDevice device, Tensor destination, Tensor source)
    {
        using var dense = source.Contiguous();
        device.Runtime.CopyDeviceToDevice((ulong)Address(destination), (ulong)Address(dense), destination.Bytes);
    }

    static void* Address(Tensor t) => t.DType switch
    {
        DType.F32 => t.Data,
        DType.I32 => t.IntData,
        _ => t.HalfData,
    };

    /// <summary>Releases the captured graph, if any, and the weights' copies.</summary>
    public void Dispose()
    {
        _graph?.Dispose();
        _copies?.Dispose();
    }
}
