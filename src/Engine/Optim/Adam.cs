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
/// Adam / AdamW over a set of parameters, with moments only for parameters that train. A parameter's
/// <see cref="Tensor.GradMask"/> restricts the update to its unmasked elements (the rest stay bitwise unchanged); a
/// <see cref="Tensor.GradIndex"/> makes it sparse: moments and updates for the selected entries only (GPS).
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
            if (p.GradIndex != null && p.GradMask != null)
                throw new ArgumentException($"parameter {p.Describe()} has both a GradMask and a GradIndex; use one");
            var stateShape = p.GradIndex?.Shape ?? p.Shape; // sparse (GPS): moments for the selected entries only
            var m = Tensor.PersistentZeros(p.Device, stateShape);
            var v = Tensor.PersistentZeros(p.Device, stateShape);
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
    }

    /// <summary>One update of every parameter that has a gradient.</summary>
    public void Step()
    {
        StepCount++;
        float lr = float.IsNaN(LearningRate) ? Options.LearningRate : LearningRate;
        foreach (var s in _slots)
        {
            if (s.Param.Grad == null) continue;
            if (s.Param.GradIndex is { } index)
            {
                if (index.Count != s.M.Count)
                    throw new InvalidOperationException($"parameter {s.Param.Describe()}: GradIndex {index.Describe()} changed after the optimizer was created");
                s.Param.Device.Kernels.SparseAdamStep(s.Param.Data, s.Param.Grad.Data, s.M.Data, s.V.Data, index.IntData,
                    index.Shape[0], (int)(s.Param.Count / index.Shape[0]), index.Shape[1], lr, Options.Beta1, Options.Beta2,
                    Options.Epsilon, s.WeightDecay, StepCount, Options.Decoupled);
                continue;
            }
            var mask = s.Param.GradMask;
            if (mask != null) Ops.CheckSameShape("Adam mask", s.Param, mask);
            s.Param.Device.Kernels.AdamStep(s.Param.Data, s.Param.Grad.Data, s.M.Data, s.V.Data, mask == null ? null : mask.Data,
                s.Param.Count, lr, Options.Beta1, Options.Beta2, Options.Epsilon, s.WeightDecay, StepCount, Options.Decoupled);
        }
    }

    /// <summary>Zeroes every parameter gradient (keeping the buffers).</summary>
    public void ZeroGrad()
    {
        foreach (var s in _slots)
            if (s.Param.Grad != null) s.Param.Device.Kernels.Fill(s.Param.Grad.Data, s.Param.Grad.Count, 0f);
    }

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
