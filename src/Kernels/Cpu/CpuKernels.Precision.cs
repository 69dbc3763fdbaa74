using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Cpu;

// Mixed precision on the CPU (cuda/precision.cu): rounding to the low-precision formats, kept as floats, and 16-bit
// storage of saved activations. The GEMMs round their operands themselves, as they pack them (CpuGemm).
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void RoundToPrecision(float* y, float* x, long n, Precision precision)
    {
        var body = new RoundBody { Y = y, X = x, Precision = precision };
        CpuRange.For(n, ElementGrain, ref body);
    }

    struct RoundBody : IRangeBody
    {
        public float* Y, X;
        public Precision Precision;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end) => LowPrecision.Round(Y + start, X + start, end - start, Precision);
    }

    /// <inheritdoc/>
    public void PackLowPrecision(ushort* y, float* x, long n, Precision precision)
    {
        var body = new PackBody { Packed = y, Wide = x, Precision = RequireSixteenBits(precision) };
        CpuRange.For(n, ElementGrain, ref body);
    }

    /// <inheritdoc/>
    public void UnpackLowPrecision(float* y, ushort* x, long n, Precision precision)
    {
        var body = new PackBody { Packed = x, Wide = y, Precision = RequireSixteenBits(precision), Unpack = true };
        CpuRange.For(n, ElementGrain, ref body);
    }

    /// <inheritdoc/>
    public void PackLowPrecisionMany(ReadOnlySpan<PackTarget> targets, Precision precision)
    {
        foreach (var t in targets) PackLowPrecision(t.Y, t.X, t.Count, precision);
    }

    /// <inheritdoc/>
    /// <remarks>The CPU's GEMM rounds a float32 operand as it packs its panels, at no extra pass: nothing to share.</remarks>
    public bool ShareWeightCopies(ReadOnlySpan<PackTarget> copies, Precision precision) => false;

    /// <summary>y[i] = x[i] in 16 bits for i in [0, n) on the calling thread (a GEMM epilogue's tile row).</summary>
    internal static void PackRow(ushort* y, float* x, int n, Precision precision) =>
        new PackBody { Packed = y, Wide = x, Precision = RequireSixteenBits(precision) }.Run(0, n);

    /// <summary>y[i] = the 16-bit x[i] as a float for i in [0, n) on the calling thread (a kernel's row or run).</summary>
    internal static void UnpackRow(float* y, ushort* x, int n, Precision precision) =>
        new PackBody { Packed = x, Wide = y, Precision = RequireSixteenBits(precision), Unpack = true }.Run(0, n);

    static Precision RequireSixteenBits(Precision precision) => precision is Precision.BF16 or Precision.FP16 ? precision
        : throw new ArgumentOutOfRangeException(nameof(precision), precision, "16-bit storage is bf16 or fp16");

    /// <summary>float ↔ 16 bits: bf16 is the rounded float's high half; fp16 is <see cref="Half"/> (round to nearest even,
    /// overflow to ±∞, subnormals kept), exactly what <see cref="LowPrecision.Round(float, Precision)"/> rounds to.</summary>
    struct PackBody : IRangeBody
    {
        public ushort* Packed;
        public float* Wide;
        public Precision Precision;
        public bool Unpack;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            bool bf16 = Precision == Precision.BF16;
            long i = start;
            if (bf16 && Vector256.IsHardwareAccelerated)
            {
                // 16 values at a time: the float bits rounded as LowPrecision.Round rounds them (a NaN made quiet), high halves.
                var half = Vector256.Create(0x7FFFu);
                var one = Vector256.Create(1u);
                var absMask = Vector256.Create(0x7FFFFFFFu);
                var inf = Vector256.Create(0x7F800000u);
                var quiet = Vector256.Create(0x00400000u);
                for (; i + 16 <= end; i += 16)
                {
                    if (Unpack)
                    {
                        var (lo, hi) = Vector256.Widen(Vector256.Load(Packed + i));
                        Vector256.ShiftLeft(lo, 16).Store((uint*)(Wide + i));
                        Vector256.ShiftLeft(hi, 16).Store((uint*)(Wide + i + 8));
                        continue;
                    }
                    var a = Vector256.Load((uint*)(Wide + i));
                    var b = Vector256.Load((uint*)(Wide + i + 8));
                    a = Vector256.ConditionalSelect(Vector256.GreaterThan(a & absMask, inf), a | quiet, a + half + (Vector256.ShiftRightLogical(a, 16) & one));
                    b = Vector256.ConditionalSelect(Vector256.GreaterThan(b & absMask, inf), b | quiet, b + half + (Vector256.ShiftRightLogical(b, 16) & one));
                    Vector256.Narrow(Vector256.ShiftRightLogical(a, 16), Vector256.ShiftRightLogical(b, 16)).Store(Packed + i);
                }
            }
            for (; i < end; i++)
            {
                if (Unpack) Wide[i] = bf16 ? BitConverter.UInt32BitsToSingle((uint)Packed[i] << 16) : (float)BitConverter.UInt16BitsToHalf(Packed[i]);
                else Packed[i] = bf16 ? (ushort)(BitConverter.SingleToUInt32Bits(LowPrecision.Round(Wide[i], Precision.BF16)) >> 16)
                    : BitConverter.HalfToUInt16Bits((Half)Wide[i]);
            }
        }
    }
}
