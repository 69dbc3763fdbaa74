using System.Runtime.CompilerServices;

namespace Engine.Kernels.Cpu;

// Mixed precision on the CPU (cuda/precision.cu): rounding to the low-precision formats, kept as floats. The GEMMs
// round their operands themselves, as they pack them (CpuGemm).
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
}
