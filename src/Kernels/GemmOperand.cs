namespace Engine.Kernels;

/// <summary>
/// A GEMM operand (and the x of <see cref="IKernels.SparseWeightGrad"/>): float32 values, or values already packed in the
/// GEMMs' 16-bit format (<see cref="IKernels.PackLowPrecision"/>'s output in <see cref="IKernels.GemmPrecision"/>, bf16
/// or fp16), which a backend reads as they are instead of rounding float32 values again. A float pointer converts to
/// one implicitly. Packed operands are only valid while the GEMMs run in that 16-bit precision: a saved activation
/// stays packed from its forward to its weight gradient, with no widening pass between.
/// </summary>
public readonly unsafe struct GemmOperand
{
    /// <summary>The first element: a <c>float*</c>, or a <c>ushort*</c> when <see cref="IsPacked"/>.</summary>
    public readonly void* Data;
    /// <summary>True when the values are 16-bit patterns in the GEMMs' precision.</summary>
    public readonly bool IsPacked;

    GemmOperand(void* data, bool packed)
    {
        Data = data;
        IsPacked = packed;
    }

    /// <summary>float32 values.</summary>
    public static implicit operator GemmOperand(float* values) => new(values, false);

    /// <summary>Values packed in the GEMMs' 16-bit precision.</summary>
    public static GemmOperand Packed(ushort* values) => new(values, true);

    /// <summary>The float32 values (a packed operand must be widened first).</summary>
    public float* Floats => IsPacked ? throw new InvalidOperationException("the operand is packed in 16 bits, not float32") : (float*)Data;

    /// <summary>The 16-bit values of a packed operand.</summary>
    public ushort* Halves => IsPacked ? (ushort*)Data : throw new InvalidOperationException("the operand is float32, not packed in 16 bits");

    /// <summary>Throws unless a packed operand meets a 16-bit <paramref name="precision"/> (the kernel's
    /// <see cref="IKernels.GemmPrecision"/>).</summary>
    public void CheckFor(Precision precision, string kernel)
    {
        if (IsPacked && precision is not (Precision.BF16 or Precision.FP16))
            throw new ArgumentException($"{kernel}: an operand packed in 16 bits needs bf16 or fp16 GEMMs, not {precision.Name()}");
    }

    /// <summary>Elements from the first to the last one a strided batched operand of <paramref name="rows"/> ×
    /// <paramref name="cols"/> (leading dimension <paramref name="ld"/>) spans: what a conversion of it covers.</summary>
    public static long Span(int rows, int cols, int ld, long stride, int batch) =>
        rows == 0 || cols == 0 || batch == 0 ? 0 : (batch - 1) * stride + (long)(rows - 1) * ld + cols;
}
