namespace Engine.Kernels;

/// <summary>One tensor of <see cref="IKernels.FillMany"/>: <see cref="Count"/> floats at <see cref="Data"/>.</summary>
public readonly unsafe struct TensorSpan(float* data, long count)
{
    /// <summary>The first float (a device pointer).</summary>
    public float* Data { get; } = data;

    /// <summary>How many floats.</summary>
    public long Count { get; } = count;
}

/// <summary>One tensor of <see cref="IKernels.PackLowPrecisionMany"/> and <see cref="IKernels.ShareWeightCopies"/>:
/// <see cref="Count"/> floats at <see cref="X"/> and their 16-bit copy at <see cref="Y"/>.</summary>
public readonly unsafe struct PackTarget(ushort* y, float* x, long count)
{
    /// <summary>The 16-bit copy (a device pointer).</summary>
    public ushort* Y { get; } = y;

    /// <summary>The float32 values (a device pointer).</summary>
    public float* X { get; } = x;

    /// <summary>How many values.</summary>
    public long Count { get; } = count;
}

/// <summary>One parameter of <see cref="IKernels.AdamStepMany"/>: its values, gradient and moments (device pointers) and
/// its weight decay. Dense: <see cref="Count"/> elements each, those where <see cref="Mask"/> (when given) is zero kept
/// bitwise. Selected entries (GPS): gradient and moments hold <see cref="Count"/> = N·<see cref="PerRow"/> entries, and
/// entry e updates Param[e / PerRow · <see cref="Columns"/> + Index[e]] of the [N, Columns] parameter.</summary>
public readonly unsafe struct AdamTensor(float* param, float* grad, float* m, float* v, long count, float weightDecay,
    float* mask = null, int* index = null, int perRow = 0, int columns = 0)
{
    /// <summary>The parameter's values.</summary>
    public float* Param { get; } = param;

    /// <summary>Its gradient.</summary>
    public float* Grad { get; } = grad;

    /// <summary>Adam's first moment.</summary>
    public float* M { get; } = m;

    /// <summary>Adam's second moment.</summary>
    public float* V { get; } = v;

    /// <summary>Elements (or selected entries) in the gradient and each moment.</summary>
    public long Count { get; } = count;

    /// <summary>This parameter's weight decay.</summary>
    public float WeightDecay { get; } = weightDecay;

    /// <summary>A dense parameter's trainable elements (1 trains, 0 keeps), or null: all.</summary>
    public float* Mask { get; } = mask;

    /// <summary>The selected columns, [N, PerRow] (null: a dense parameter).</summary>
    public int* Index { get; } = index;

    /// <summary>Entries selected per row, with <see cref="Index"/>.</summary>
    public int PerRow { get; } = perRow;

    /// <summary>The parameter's row length, with <see cref="Index"/>.</summary>
    public int Columns { get; } = columns;
}

/// <summary>One vector of <see cref="IKernels.ScaleShiftMany"/>: y = x ⊙ scale + shift, <see cref="Count"/> floats
/// each (device pointers); a null shift adds zeros.</summary>
public readonly unsafe struct ScaleShiftVector(float* y, float* x, float* scale, float* shift, int count)
{
    /// <summary>The output.</summary>
    public float* Y { get; } = y;

    /// <summary>The vector scaled.</summary>
    public float* X { get; } = x;

    /// <summary>Its scale.</summary>
    public float* Scale { get; } = scale;

    /// <summary>Its shift, or null for none.</summary>
    public float* Shift { get; } = shift;

    /// <summary>Elements in each.</summary>
    public int Count { get; } = count;
}

/// <summary>One vector of <see cref="IKernels.ScaleShiftManyBackward"/>: from the output's gradient dy and the forward's
/// x and scale, dx = dy ⊙ scale (added to dx when <see cref="AccumulateDx"/>), dscale += dy ⊙ x and dshift += dy; any of
/// the three targets may be null (nothing to compute). <see cref="Count"/> floats each (device pointers).</summary>
public readonly unsafe struct ScaleShiftVectorGrad(float* dx, bool accumulateDx, float* dscale, float* dshift, float* dy, float* x, float* scale, int count)
{
    /// <summary>x's gradient, or null.</summary>
    public float* Dx { get; } = dx;

    /// <summary>Whether dx is added to rather than written.</summary>
    public bool AccumulateDx { get; } = accumulateDx;

    /// <summary>The scale's gradient (added to), or null.</summary>
    public float* DScale { get; } = dscale;

    /// <summary>The shift's gradient (added to), or null.</summary>
    public float* DShift { get; } = dshift;

    /// <summary>The output's gradient.</summary>
    public float* Dy { get; } = dy;

    /// <summary>The forward's x (read only for dscale).</summary>
    public float* X { get; } = x;

    /// <summary>The forward's scale (read only for dx).</summary>
    public float* Scale { get; } = scale;

    /// <summary>Elements in each.</summary>
    public int Count { get; } = count;
}
