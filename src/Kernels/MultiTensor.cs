namespace Engine.Kernels;

/// <summary>One tensor of <see cref="IKernels.FillMany"/>: <see cref="Count"/> floats at <see cref="Data"/>.</summary>
public readonly unsafe struct TensorSpan(float* data, long count)
{
    /// <summary>The first float (a device pointer).</summary>
    public float* Data { get; } = data;

    /// <summary>How many floats.</summary>
    public long Count { get; } = count;
}

/// <summary>One dense, unmasked parameter of <see cref="IKernels.AdamStepMany"/>: its values, gradient and moments
/// (<see cref="Count"/> floats each, device pointers) and its weight decay.</summary>
public readonly unsafe struct AdamTensor(float* param, float* grad, float* m, float* v, long count, float weightDecay)
{
    /// <summary>The parameter's values.</summary>
    public float* Param { get; } = param;

    /// <summary>Its gradient.</summary>
    public float* Grad { get; } = grad;

    /// <summary>Adam's first moment.</summary>
    public float* M { get; } = m;

    /// <summary>Adam's second moment.</summary>
    public float* V { get; } = v;

    /// <summary>Elements in each of the four.</summary>
    public long Count { get; } = count;

    /// <summary>This parameter's weight decay.</summary>
    public float WeightDecay { get; } = weightDecay;
}
