namespace Engine;

// Whole-tensor reductions a training loop needs: Σx² (gradient norms) and the NaN/Inf count (divergence checks).
// Deterministic on every backend. Kernels: CpuKernels.Reductions.cs, cuda/reductions.cu.
public static unsafe partial class Ops
{
    /// <summary>Σ x² over every element, accumulated in double.</summary>
    public static double SumSquares(Tensor x) => x.Device.Kernels.SumSquares(x.Data, x.Count);

    /// <summary>Number of NaN or infinite elements.</summary>
    public static long CountNonFinite(Tensor x) => x.Device.Kernels.CountNonFinite(x.Data, x.Count);
}
