namespace Engine.Kernels.Cpu;

// Reductions a training loop needs on the CPU (cuda/reductions.cu): sum of squares (gradient norm) and the
// non-finite count.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public double SumSquares(float* x, long n)
    {
        double s = 0;
        for (long i = 0; i < n; i++) s += (double)x[i] * x[i];
        return s;
    }

    /// <inheritdoc/>
    public long CountNonFinite(float* x, long n)
    {
        long count = 0;
        for (long i = 0; i < n; i++) if (!float.IsFinite(x[i])) count++;
        return count;
    }
}
