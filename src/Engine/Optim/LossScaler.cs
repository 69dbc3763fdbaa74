namespace Engine.Optim;

/// <summary>
/// Dynamic loss scaling for fp16 training, as PyTorch's GradScaler does it: the backward starts from the loss times
/// <see cref="Scale"/> (so small gradients survive fp16's range), then the gradients are divided by it before the
/// optimizer. A step whose gradients hold NaN or ∞ is skipped (gradients zeroed, nothing updated) and the scale
/// multiplied by <see cref="BackoffFactor"/>; after <see cref="GrowthInterval"/> good steps in a row it is multiplied by
/// <see cref="GrowthFactor"/>. bf16 has fp32's range and needs none.
/// </summary>
public sealed class LossScaler
{
    /// <summary>Starts at <paramref name="initialScale"/> (PyTorch's default 2¹⁶), or continues a run's scaler from
    /// its <see cref="Scale"/> and <see cref="GoodSteps"/>.</summary>
    public LossScaler(float initialScale = 65536f, int goodSteps = 0)
    {
        if (!(initialScale > 0) || float.IsInfinity(initialScale))
            throw new ArgumentOutOfRangeException(nameof(initialScale), initialScale, "the loss scale must be positive and finite");
        ArgumentOutOfRangeException.ThrowIfNegative(goodSteps);
        Scale = initialScale;
        _goodSteps = goodSteps;
    }

    /// <summary>Good steps in a row since the scale last changed (what a resumed run must continue from).</summary>
    public int GoodSteps => _goodSteps;

    /// <summary>The factor the loss is multiplied by in the backward.</summary>
    public float Scale { get; private set; }

    /// <summary>The scale's factor after a good run (default 2).</summary>
    public float GrowthFactor { get; init; } = 2f;

    /// <summary>The scale's factor after an overflow (default 0.5).</summary>
    public float BackoffFactor { get; init; } = 0.5f;

    /// <summary>Good steps in a row before the scale grows (default 2000).</summary>
    public int GrowthInterval { get; init; } = 2000;

    /// <summary>Steps skipped so far because a gradient overflowed.</summary>
    public long SkippedSteps { get; private set; }

    int _goodSteps;

    /// <summary>After a backward seeded with <see cref="Scale"/>: true, with every gradient divided by the scale,
    /// when all are finite (and the scale grows after enough of those); false when one holds NaN or ∞ (the caller
    /// skips the step; the scale backs off).</summary>
    public bool Unscale(IEnumerable<Tensor> parameters)
    {
        var grads = parameters.Select(p => p.Grad).OfType<Tensor>().ToList();
        if (grads.Any(g => Ops.CountNonFinite(g) > 0))
        {
            SkippedSteps++;
            _goodSteps = 0;
            Scale = Math.Max(Scale * BackoffFactor, float.Epsilon);
            return false;
        }
        float inverse = 1f / Scale;
        unsafe
        {
            foreach (var g in grads) g.Device.Kernels.Scale(g.Data, g.Count, inverse);
        }
        if (++_goodSteps >= GrowthInterval)
        {
            _goodSteps = 0;
            float grown = Scale * GrowthFactor;
            if (float.IsFinite(grown)) Scale = grown;
        }
        return true;
    }
}
