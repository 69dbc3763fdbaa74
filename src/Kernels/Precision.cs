using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels;

/// <summary>
/// The number format of GEMM operands (mixed precision). Operands are rounded to the format (round to nearest, ties to
/// even), their products accumulated in fp32, results stored in fp32: what tensor-core GEMMs with fp32 accumulation do.
/// Everything else (LayerNorm statistics, softmax, loss, reductions, the optimizer, master weights) stays fp32.
/// </summary>
public enum Precision
{
    /// <summary>fp32 operands (24-bit significand): plain single precision.</summary>
    FP32,
    /// <summary>TensorFloat-32: fp32 range, 11-bit significand.</summary>
    TF32,
    /// <summary>bfloat16: fp32 range, 8-bit significand.</summary>
    BF16,
    /// <summary>IEEE half: 11-bit significand, largest finite 65504, subnormals below 2⁻¹⁴ (needs loss scaling in training).</summary>
    FP16,
}

/// <summary>Rounding to the <see cref="Precision"/> formats on the CPU, bit for bit as cuda/common.cuh does it.</summary>
public static unsafe class LowPrecision
{
    /// <summary>Parses <c>fp32</c>, <c>tf32</c>, <c>bf16</c> or <c>fp16</c> (any case).</summary>
    /// <exception cref="ArgumentException">Any other text; the message lists the choices.</exception>
    public static Precision Parse(string text) => text.ToLowerInvariant() switch
    {
        "fp32" => Precision.FP32,
        "tf32" => Precision.TF32,
        "bf16" => Precision.BF16,
        "fp16" => Precision.FP16,
        _ => throw new ArgumentException($"precision '{text}' is not one of fp32, tf32, bf16, fp16"),
    };

    /// <summary>The lower-case name <see cref="Parse"/> takes.</summary>
    public static string Name(this Precision precision) => precision.ToString().ToLowerInvariant();

    /// <summary>The GEMMs' <paramref name="precision"/> when it stores values in 16 bits (bf16, fp16), for a kernel that
    /// writes an output in that format; else an error naming <paramref name="kernel"/>.</summary>
    public static Precision SixteenBitsFor(this Precision precision, string kernel) => precision is Precision.BF16 or Precision.FP16
        ? precision : throw new ArgumentException($"{kernel}: a value kept in 16 bits needs bf16 or fp16 GEMMs, not {precision.Name()}");

    /// <summary>For a kernel that writes an output either as float32 (<paramref name="dx"/>) or in 16 bits
    /// (<paramref name="dxPacked"/>, not null, which replaces dx and is never added to): the kernels' format argument for
    /// it, 0 (<see cref="Precision.FP32"/>) or the GEMMs' 16-bit <paramref name="precision"/> (the same numbers as the
    /// enum); an error naming <paramref name="kernel"/> otherwise.</summary>
    public static int PackedOutputFormat(this Precision precision, float* dx, ushort* dxPacked, bool accumulate, string kernel)
    {
        if (dxPacked == null) return (int)Precision.FP32;
        if (dx != null || accumulate)
            throw new ArgumentException($"{kernel}: an output written in 16 bits replaces the float32 one and is not added to (float32 output given: {dx != null}, accumulate: {accumulate})");
        return (int)precision.SixteenBitsFor(kernel);
    }

    /// <summary>For a kernel that writes a float32 output <paramref name="dx"/> and, when <paramref name="dxCopy"/> is not
    /// null, a 16-bit copy of it: the kernels' format argument for the copy, as <see cref="PackedOutputFormat"/>; an error
    /// naming <paramref name="kernel"/> unless dx is written (not added to) beside it.</summary>
    public static int PackedCopyFormat(this Precision precision, float* dx, ushort* dxCopy, bool accumulate, string kernel)
    {
        if (dxCopy == null) return (int)Precision.FP32;
        if (dx == null || accumulate)
            throw new ArgumentException($"{kernel}: a 16-bit copy is of an output that is written, not added to (output given: {dx != null}, accumulate: {accumulate})");
        return (int)precision.SixteenBitsFor(kernel);
    }

    /// <summary>For a kernel that writes (or, <paramref name="accumulate"/>, adds to) a float32 output <paramref name="dx"/>
    /// with, when <paramref name="dxCopy"/> is not null, a 16-bit copy beside it (<see cref="PackedCopyFormat"/>), or with
    /// dx null writes only the 16-bit values (<see cref="PackedOutputFormat"/>): the kernels' format argument for the
    /// copy; an error naming <paramref name="kernel"/> when neither is given.</summary>
    public static int OutputOrCopyFormat(this Precision precision, float* dx, ushort* dxCopy, bool accumulate, string kernel) =>
        dx != null ? precision.PackedCopyFormat(dx, dxCopy, accumulate, kernel)
        : dxCopy != null ? precision.PackedOutputFormat(null, dxCopy, accumulate, kernel)
        : throw new ArgumentException($"{kernel}: neither a float32 output nor a 16-bit one given");

    /// <summary>For a kernel that writes or adds to a float32 gradient <paramref name="dx"/> and, when
    /// <paramref name="copy"/> is not null, stores the values it leaves in dx in 16 bits there too (the copy that the
    /// products reading this gradient take): the kernels' format argument for the copy, as
    /// <see cref="PackedOutputFormat"/>; an error naming <paramref name="kernel"/> without dx.</summary>
    public static int GradientCopyFormat(this Precision precision, float* dx, ushort* copy, string kernel)
    {
        if (copy == null) return (int)Precision.FP32;
        if (dx == null) throw new ArgumentException($"{kernel}: a gradient's 16-bit copy needs the float32 gradient it copies");
        return (int)precision.SixteenBitsFor(kernel);
    }

    /// <summary>Unit roundoff of the format: half the distance from 1 to the next value (2⁻²⁴, 2⁻¹¹, 2⁻⁸, 2⁻¹¹).</summary>
    public static double UnitRoundoff(this Precision precision) => precision switch
    {
        Precision.FP32 => Math.Pow(2, -24),
        Precision.TF32 or Precision.FP16 => Math.Pow(2, -11),
        _ => Math.Pow(2, -8),
    };

    /// <summary>x rounded to the format (to nearest, ties to even), as a float. NaN stays NaN; fp16 overflows to ±∞
    /// and keeps its subnormals.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Round(float x, Precision precision) => precision switch
    {
        Precision.TF32 => DropBits(x, 13),
        Precision.BF16 => DropBits(x, 16),
        Precision.FP16 => (float)(Half)x,
        _ => x,
    };

    /// <summary>Rounds away the low <paramref name="bits"/> of the fp32 significand (to nearest, ties to even). A carry
    /// into the exponent is the correct rounding up (to ∞ past the largest finite value); NaN keeps a quiet payload.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float DropBits(float x, int bits)
    {
        uint u = BitConverter.SingleToUInt32Bits(x);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) return BitConverter.UInt32BitsToSingle(u | 0x00400000u); // NaN: quiet
        uint half = (1u << (bits - 1)) - 1, lsb = (u >> bits) & 1u;
        return BitConverter.UInt32BitsToSingle((u + half + lsb) & ~((1u << bits) - 1));
    }

    /// <summary>y[i] = <see cref="Round(float, Precision)"/>(x[i]) for i &lt; n (y may alias x). Single-threaded: GEMM
    /// packing calls it on blocks that are already a thread's own.</summary>
    public static void Round(float* y, float* x, long n, Precision precision)
    {
        if (precision == Precision.FP32)
        {
            if (y != x) Buffer.MemoryCopy(x, y, n * sizeof(float), n * sizeof(float));
            return;
        }
        long i = 0;
        if (precision != Precision.FP16 && Vector256.IsHardwareAccelerated)
        {
            int bits = precision == Precision.TF32 ? 13 : 16;
            var half = Vector256.Create((1u << (bits - 1)) - 1);
            var mask = Vector256.Create(~((1u << bits) - 1));
            var one = Vector256.Create(1u);
            var absMask = Vector256.Create(0x7FFFFFFFu);
            var inf = Vector256.Create(0x7F800000u);
            var quiet = Vector256.Create(0x00400000u);
            for (; i + 8 <= n; i += 8)
            {
                var u = Vector256.Load((uint*)(x + i));
                var rounded = (u + half + (Vector256.ShiftRightLogical(u, bits) & one)) & mask;
                var nan = Vector256.GreaterThan(u & absMask, inf);
                Vector256.ConditionalSelect(nan, u | quiet, rounded).Store((uint*)(y + i));
            }
        }
        for (; i < n; i++) y[i] = Round(x[i], precision);
    }

    /// <summary>Sets the GEMM precision of <paramref name="kernels"/> until the returned scope is disposed (then the
    /// previous one again).</summary>
    public static GemmPrecisionScope UseGemmPrecision(this IKernels kernels, Precision precision) => new(kernels, precision);

    /// <summary>A GEMM precision in force until disposed.</summary>
    public readonly struct GemmPrecisionScope : IDisposable
    {
        readonly IKernels _kernels;
        readonly Precision _previous;

        internal GemmPrecisionScope(IKernels kernels, Precision precision)
        {
            _kernels = kernels;
            _previous = kernels.GemmPrecision;
            kernels.GemmPrecision = precision;
        }

        /// <inheritdoc/>
        public void Dispose() => _kernels.GemmPrecision = _previous;
    }
}
