using System.Runtime.InteropServices;

namespace Engine.Kernels.Cuda;

/// <summary>
/// Our own bindings to cuBLAS (libcublas.so.13/.12/.11; cuBLASLt, which it depends on, is loaded first) and a
/// row-major GEMM on top: row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so the call swaps the
/// operands and the M/N extents and keeps every leading dimension.
/// </summary>
public sealed unsafe partial class CuBlas : IDisposable
{
    const string Lib = "cublas";
    const int OpN = 0, OpT = 1, R32F = 0, R16F = 2, R16BF = 14, Compute32F = 68, Compute32FFastTf32 = 77, GemmDefault = -1;

    [LibraryImport(Lib)] private static partial int cublasCreate_v2(out IntPtr handle);
    [LibraryImport(Lib)] private static partial int cublasDestroy_v2(IntPtr handle);
    [LibraryImport(Lib)] private static partial int cublasSetStream_v2(IntPtr handle, IntPtr stream);
    [LibraryImport(Lib)] private static partial int cublasSetWorkspace_v2(IntPtr handle, void* workspace, nuint bytes);
    [LibraryImport(Lib)] private static partial int cublasSgemm_v2(IntPtr handle, int transA, int transB, int m, int n, int k,
        float* alpha, float* A, int lda, float* B, int ldb, float* beta, float* C, int ldc);
    [LibraryImport(Lib)] private static partial int cublasSgemmStridedBatched(IntPtr handle, int transA, int transB, int m, int n, int k,
        float* alpha, float* A, int lda, long strideA, float* B, int ldb, long strideB, float* beta, float* C, int ldc, long strideC, int batch);
    [LibraryImport(Lib)] private static partial int cublasGemmEx(IntPtr handle, int transA, int transB, int m, int n, int k,
        float* alpha, void* A, int typeA, int lda, void* B, int typeB, int ldb, float* beta, void* C, int typeC, int ldc,
        int computeType, int algo);
    [LibraryImport(Lib)] private static partial int cublasGemmStridedBatchedEx(IntPtr handle, int transA, int transB, int m, int n, int k,
        float* alpha, void* A, int typeA, int lda, long strideA, void* B, int typeB, int ldb, long strideB, float* beta, void* C,
        int typeC, int ldc, long strideC, int batch, int computeType, int algo);
    [LibraryImport(Lib)] private static partial IntPtr cublasGetStatusString(int status);

    /// <summary>Device memory the GEMMs' algorithms may use: NVIDIA's recommendation for Hopper (32 MiB; 4 MiB for
    /// earlier GPUs), whose split-K and stream-K kernels need it. One buffer serves cuBLAS and cuBLASLt, as their calls
    /// queue on one stream; allocated once, so captured graphs keep pointing at it.</summary>
    public const long WorkspaceBytes = 32L << 20;

    IntPtr _handle;

    /// <summary>Creates a handle bound to <paramref name="stream"/> whose GEMMs use <see cref="WorkspaceBytes"/> of
    /// device memory at <paramref name="workspace"/> instead of the library's default pool (the caller's context must
    /// be current).</summary>
    public CuBlas(IntPtr stream, ulong workspace)
    {
        Check(cublasCreate_v2(out _handle), "cublasCreate_v2");
        // After the stream: setting a stream resets the handle to the default workspace.
        Check(cublasSetStream_v2(_handle, stream), "cublasSetStream_v2");
        Check(cublasSetWorkspace_v2(_handle, (void*)workspace, (nuint)WorkspaceBytes), "cublasSetWorkspace_v2");
    }

    /// <summary>True when a cuBLAS library (and its cuBLASLt) loads; otherwise the sonames tried.</summary>
    public static bool IsAvailable(out string reason)
    {
        CudaLibraries.EnsureResolver();
        if (!CudaLibraries.TryLoad("cublasLt", out _, out reason)) return false;
        return CudaLibraries.TryLoad("cublas", out _, out reason);
    }

    /// <summary>Row-major C[M,N] = alpha·op(A)·op(B) + beta·C (the <see cref="IKernels.Gemm"/> contract); with
    /// <paramref name="tf32"/> on TF32 tensor cores (compute capability ≥ 8.0: 11-bit operand significands, fp32
    /// accumulation).</summary>
    public void Gemm(bool transA, bool transB, int M, int N, int K, float alpha, float* A, int lda, float* B, int ldb, float beta, float* C, int ldc,
        bool tf32 = false)
    {
        if (tf32)
            Check(cublasGemmEx(_handle, transB ? OpT : OpN, transA ? OpT : OpN, N, M, K, &alpha, B, R32F, ldb, A, R32F, lda,
                &beta, C, R32F, ldc, Compute32FFastTf32, GemmDefault), "cublasGemmEx");
        else
            Check(cublasSgemm_v2(_handle, transB ? OpT : OpN, transA ? OpT : OpN, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc),
                "cublasSgemm_v2");
    }

    /// <summary>Row-major strided batched GEMM (the <see cref="IKernels.GemmStridedBatched"/> contract), fp32 or TF32.</summary>
    public void GemmStridedBatched(bool transA, bool transB, int M, int N, int K, float alpha, float* A, int lda, long strideA,
        float* B, int ldb, long strideB, float beta, float* C, int ldc, long strideC, int batch, bool tf32 = false)
    {
        if (batch == 1)
        {
            Gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, tf32);
            return;
        }
        if (tf32)
            Check(cublasGemmStridedBatchedEx(_handle, transB ? OpT : OpN, transA ? OpT : OpN, N, M, K, &alpha, B, R32F, ldb, strideB,
                A, R32F, lda, strideA, &beta, C, R32F, ldc, strideC, batch, Compute32FFastTf32, GemmDefault), "cublasGemmStridedBatchedEx");
        else
            Check(cublasSgemmStridedBatched(_handle, transB ? OpT : OpN, transA ? OpT : OpN, N, M, K, &alpha, B, ldb, strideB,
                A, lda, strideA, &beta, C, ldc, strideC, batch), "cublasSgemmStridedBatched");
    }

    /// <summary>Strided batched GEMM of 16-bit operands (bfloat16, or IEEE half) with fp32 accumulation and an fp32 C
    /// (tensor cores); leading dimensions and strides in elements, as for the fp32 call.</summary>
    public void GemmStridedBatched16(bool transA, bool transB, int M, int N, int K, float alpha, void* A, int lda, long strideA,
        void* B, int ldb, long strideB, float beta, float* C, int ldc, long strideC, int batch, bool bf16)
    {
        int type = bf16 ? R16BF : R16F;
        Check(cublasGemmStridedBatchedEx(_handle, transB ? OpT : OpN, transA ? OpT : OpN, N, M, K, &alpha, B, type, ldb, strideB,
            A, type, lda, strideA, &beta, C, R32F, ldc, strideC, batch, Compute32F, GemmDefault), "cublasGemmStridedBatchedEx");
    }

    static void Check(int status, string call)
    {
        if (status != 0) throw new CudaException(call, status, Marshal.PtrToStringUTF8(cublasGetStatusString(status)) ?? "cuBLAS error");
    }

    /// <summary>Destroys the handle (the owning context must be current).</summary>
    public void Dispose()
    {
        if (_handle != IntPtr.Zero) cublasDestroy_v2(_handle);
        _handle = IntPtr.Zero;
    }
}
