using Engine.Checkpoints;
using Engine.IO;

namespace Engine.Optim;

/// <summary>Adam hyperparameters (torch.optim defaults).</summary>
public sealed record AdamOptions
{
    /// <summary>Learning rate.</summary>
    public float LearningRate { get; init; } = 1e-3f;
    /// <summary>β₁.</summary>
    public float Beta1 { get; init; } = 0.9f;
    /// <summary>β₂.</summary>
    public float Beta2 { get; init; } = 0.999f;
    /// <summary>ε added to √v̂.</summary>
    public float Epsilon { get; init; } = 1e-8f;
    /// <summary>Weight decay.</summary>
    public float WeightDecay { get; init; }
    /// <summary>True: AdamW (decoupled decay, p −= lr·wd·p). False: Adam with L2 (g += wd·p).</summary>
    public bool Decoupled { get; init; } = true;
}

/// <summary>
/// Adam / AdamW over a set of parameters, with moments only for parameters that train, as their
/// <see cref="Tensor.Trainability"/> says: a mask restricts the update to its unmasked elements (the rest stay bitwise
/// unchanged); selected entries make it sparse: moments and updates for those entries only (GPS).
/// Weight decay can differ per parameter (<see cref="SetWeightDecay"/>), as the PEFT recipes need.
/// </summary>
public sealed unsafe class Adam : IDisposable
{
    readonly List<Slot> _slots = new();

    sealed class Slot(Tensor param, Tensor m, Tensor v, float weightDecay)
    {
        public readonly Tensor Param = param, M = m, V = v;
        public float WeightDecay = weightDecay;
    }

    /// <summary>Creates the optimizer for every parameter that requires gradients.</summary>
    public Adam(IEnumerable<Tensor> parameters, AdamOptions options)
    {
        Options = options;
        foreach (var p in parameters.Where(p => p.RequiresGrad))
        {
            var stateShape = p.Trainability.StateShape(p); // sparse (GPS): moments for the selected entries only
            var m = Tensor.PersistentZeros(p.Device, stateShape);
            var v = Tensor.PersistentZeros(p.Device, stateShape);
            (m.Name, v.Name) = ($"{p.Name ?? $"param{_slots.Count}"}.exp_avg", $"{p.Name ?? $"param{_slots.Count}"}.exp_avg_sq");
            _slots.Add(new Slot(p, m, v, options.WeightDecay));
        }
    }

    /// <summary>Hyperparameters; <see cref="LearningRate"/> overrides the rate for schedules.</summary>
    public AdamOptions Options { get; }

    /// <summary>Current learning rate (set by a schedule before each step).</summary>
    public float LearningRate { get; set; } = float.NaN;

    /// <summary>Steps taken.</summary>
    public int StepCount { get; private set; }

    /// <summary>The parameters this optimizer updates.</summary>
    public IEnumerable<Tensor> Parameters => _slots.Select(s => s.Param);

    /// <summary>Bytes of optimizer state (the two moments).</summary>
    public long StateBytes => _slots.Sum(s => s.M.Bytes + s.V.Bytes);

    /// <summary>The weight decay of every parameter.</summary>
    public IReadOnlyDictionary<Tensor, float> WeightDecays => _slots.ToDictionary(s => s.Param, s => s.WeightDecay);

    /// <summary>Overrides the weight decay of one parameter (e.g. none for biases and norms).</summary>
    public void SetWeightDecay(Tensor parameter, float weightDecay)
    {
        var slot = _slots.FirstOrDefault(s => ReferenceEquals(s.Param, parameter))
            ?? throw new ArgumentException($"parameter {parameter.Describe()} is not trained by this optimizer");
        slot.WeightDecay = weightDecay;
        Revision++;
    }

    /// <summary>Counts the changes that a captured step would not see (a weight decay set after the capture).</summary>
    public int Revision { get; private set; }

    /// <summary>One update of every parameter that has a gradient.</summary>
    public void Step()
    {
        StepCount++;
        float lr = float.IsNaN(LearningRate) ? Options.LearningRate : LearningRate;
        Ops.AdamStep(WithGradients(), lr, Options.Beta1, Options.Beta2, Options.Epsilon, StepCount, Options.Decoupled);
    }

    List<Ops.AdamParameter> WithGradients() =>
        [.. _slots.Where(s => s.Param.Grad != null).Select(s => new Ops.AdamParameter(s.Param, s.M, s.V, s.WeightDecay))];

    /// <summary>Queues the update of every parameter with a gradient, reading lr and the bias corrections from
    /// <paramref name="stepValues"/> ([4] on the device, see <see cref="WriteStepValues"/>) when the kernels run: what
    /// a captured graph replays.</summary>
    public void Step(Tensor stepValues) =>
        Ops.AdamStep(WithGradients(), 0f, Options.Beta1, Options.Beta2, Options.Epsilon, 1, Options.Decoupled, stepValues.Data);

    /// <summary>Counts the next step and writes its [lr, 1 − β₁ᵗ, √(1 − β₂ᵗ), gate 0] into <paramref name="stepValues"/>,
    /// in float exactly as the kernels compute them from lr and t; the step's graph then copies its loss to the gate.</summary>
    public void WriteStepValues(Tensor stepValues)
    {
        StepCount++;
        float lr = float.IsNaN(LearningRate) ? Options.LearningRate : LearningRate;
        stepValues.CopyFrom([lr, 1 - MathF.Pow(Options.Beta1, StepCount), MathF.Sqrt(1 - MathF.Pow(Options.Beta2, StepCount)), 0f]);
    }

    /// <summary>Takes back the count of a step whose gate skipped it.</summary>
    public void UncountStep() => StepCount--;

    /// <summary>Writes the moments (<c>&lt;param&gt;.exp_avg</c>, <c>.exp_avg_sq</c>, torch's names) and the step count as
    /// safetensors, atomically, so a resumed run continues exactly.</summary>
    public void SaveState(string path) =>
        SafeTensors.Write(path, _slots.SelectMany(s => new[] { s.M, s.V }), new Dictionary<string, string> { ["step"] = StepCount.ToString() });

    /// <summary>Restores what <see cref="SaveState"/> wrote for the same parameters.</summary>
    /// <exception cref="InvalidInputException">The file lacks a moment, has one of another shape, or has no step count.</exception>
    public void LoadState(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        if (!checkpoint.Metadata.TryGetValue("step", out var step) || !int.TryParse(step, out int steps) || steps < 0)
            throw new InvalidInputException(path, $"no valid 'step' in its metadata (not an optimizer state file)");
        StateDict.Load([.. _slots.SelectMany(s => new[] { s.M, s.V })], checkpoint.Entries, path, strict: true);
        StepCount = steps;
    }

    /// <summary>Zeroes every parameter gradient (keeping the buffers).</summary>
    public void ZeroGrad() => Ops.ZeroGrads(_slots.Select(s => s.Param));

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var s in _slots)
        {
            s.M.Dispose();
            s.V.Dispose();
        }
        _slots.Clear();
    }
}
