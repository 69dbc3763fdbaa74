namespace Engine;

/// <summary>Which elements of a parameter train (when it <see cref="Tensor.RequiresGrad"/>).</summary>
public enum TrainableKind
{
    /// <summary>Every element: a dense gradient and dense optimizer state.</summary>
    Dense,
    /// <summary>The elements a 0/1 mask marks: the gradient is dense, the optimizer leaves masked-out elements bitwise
    /// unchanged (GPS as its reference code runs it).</summary>
    Masked,
    /// <summary>K selected entries per row of the parameter viewed as [rows, inputs]: the gradient is [rows, K], computed
    /// only by ops with a sparse weight gradient (Linear, DepthwiseConv2d), and the optimizer keeps state for those
    /// entries only (sparse GPS).</summary>
    SelectedEntries,
}

/// <summary>
/// How a parameter trains, the one concept ops and the optimizer switch on: <see cref="Dense"/> (the default),
/// <see cref="Masked"/> by a 0/1 element mask, or <see cref="Selected"/> entries per row. Set on a parameter through
/// <see cref="Tensor.Trainability"/>, which checks the mask's or the index's shape against the parameter.
/// </summary>
public readonly record struct Trainability
{
    Trainability(TrainableKind kind, Tensor? mask, Tensor? entries) => (Kind, Mask, Entries) = (kind, mask, entries);

    /// <summary>Which kind.</summary>
    public TrainableKind Kind { get; }

    /// <summary><see cref="TrainableKind.Masked"/>: the float32 mask, the parameter's shape (1 trains, 0 frozen).</summary>
    public Tensor? Mask { get; }

    /// <summary><see cref="TrainableKind.SelectedEntries"/>: the int32 [rows, K] input columns that train in each row.</summary>
    public Tensor? Entries { get; }

    /// <summary>Every element trains.</summary>
    public static Trainability Dense => default;

    /// <summary>The elements <paramref name="mask"/> marks with 1 train.</summary>
    public static Trainability Masked(Tensor mask) => new(TrainableKind.Masked, mask, null);

    /// <summary>The columns <paramref name="entries"/> (int32 [rows, K]) of each row train.</summary>
    public static Trainability Selected(Tensor entries) => new(TrainableKind.SelectedEntries, null, entries);

    /// <summary>The tensor the trainability holds (the mask or the index), or null when dense.</summary>
    public Tensor? Tensor => Mask ?? Entries;

    /// <summary>Shape of the gradient and of the optimizer's state for <paramref name="parameter"/>: [rows, K] for
    /// selected entries, the parameter's own shape otherwise.</summary>
    public int[] StateShape(Tensor parameter) => Entries?.Shape ?? parameter.Shape;

    /// <summary>Number of elements that train in <paramref name="parameter"/> (reads a mask back to the host).</summary>
    public long TrainableCount(Tensor parameter) => Kind switch
    {
        TrainableKind.SelectedEntries => Entries!.Count,
        TrainableKind.Masked => Mask!.ToArray().LongCount(v => v != 0f),
        _ => parameter.Count,
    };

    /// <summary>Throws unless every row of <paramref name="columns"/> ([rows, k], row-major) holds distinct columns in
    /// [0, <paramref name="inputs"/>): the kernels index the weight with them, so nothing else may reach one.</summary>
    /// <exception cref="ArgumentException">A column is out of range or repeats in its row; the message says where.</exception>
    public static void CheckColumns(int[] columns, int k, int inputs, Tensor parameter)
    {
        var seen = new HashSet<int>();
        for (int row = 0; row < columns.Length / k; row++)
        {
            seen.Clear();
            for (int j = 0; j < k; j++)
            {
                int c = columns[row * k + j];
                if ((uint)c >= (uint)inputs)
                    throw new ArgumentException($"selected entries of {parameter.Describe()}: row {row} holds column {c}, outside [0, {inputs})");
                if (!seen.Add(c)) throw new ArgumentException($"selected entries of {parameter.Describe()}: row {row} repeats column {c}");
            }
        }
    }

    /// <summary>Throws unless this fits <paramref name="parameter"/>.</summary>
    internal void CheckFits(Tensor parameter)
    {
        switch (Kind)
        {
            case TrainableKind.Masked:
                if (Mask!.DType != DType.F32 || !Mask.Shape.AsSpan().SequenceEqual(parameter.Shape))
                    throw new ArgumentException($"trainability mask {Mask.Describe()} of {parameter.Describe()} must be F32 of the parameter's shape");
                break;
            case TrainableKind.SelectedEntries:
                long inputs = parameter.Rank == 0 || parameter.Shape[0] == 0 ? 0 : parameter.Count / parameter.Shape[0];
                var e = Entries!;
                if (e.DType != DType.I32 || e.Rank != 2 || e.Shape[0] != parameter.Shape[0] || e.Shape[1] < 1 || e.Shape[1] > inputs)
                    throw new ArgumentException($"selected entries {e.Describe()} of {parameter.Describe()} must be I32 [{(parameter.Rank == 0 ? 0 : parameter.Shape[0])}, k] with 1 ≤ k ≤ {inputs}");
                CheckColumns(e.ToIntArray(), e.Shape[1], (int)inputs, parameter);
                break;
        }
    }
}
