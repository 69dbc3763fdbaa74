using System.Runtime.InteropServices;

namespace Engine.Kernels.Cpu;

/// <summary>
/// Optional OpenBLAS (Debian <c>libopenblas0-pthread</c>) sgemm through our own P/Invoke: a yardstick for the GEMM
/// benchmark and an optional CPU GEMM provider. <see cref="TryLoad"/> returns null with a reason when it is absent.
/// </summary>
public sealed unsafe class OpenBlas
{
    const int RowMajor = 101, NoTrans = 111, Trans = 112;
    readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> _sgemm;
    readonly delegate* unmanaged<int, void> _setThreads;
    readonly delegate* unmanaged<byte*> _coreName;

    OpenBlas(IntPtr lib)
    {
        _sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)
            NativeLibrary.GetExport(lib, "cblas_sgemm");
        _setThreads = NativeLibrary.TryGetExport(lib, "openblas_set_num_threads", out var st) ? (delegate* unmanaged<int, void>)st : null;
        _coreName = NativeLibrary.TryGetExport(lib, "openblas_get_corename", out var cn) ? (delegate* unmanaged<byte*>)cn : null;
    }

    /// <summary>Loads libopenblas.so.0, or returns null and the reason.</summary>
    public static OpenBlas? TryLoad(out string reason)
    {
        foreach (var name in new[] { "libopenblas.so.0", "libopenblas.so", "libopenblas.dll" })
        {
            if (NativeLibrary.TryLoad(name, out var lib) && NativeLibrary.TryGetExport(lib, "cblas_sgemm", out _))
            {
                reason = "";
                return new OpenBlas(lib);
            }
        }
        reason = "OpenBLAS not found (install Debian libopenblas0-pthread)";
        return null;
    }

    /// <summary>The kernel family OpenBLAS picked for this CPU (e.g. Haswell, SkylakeX, Zen).</summary>
    public string CoreName => _coreName == null ? "unknown" : Marshal.PtrToStringUTF8((IntPtr)_coreName()) ?? "unknown";

    /// <summary>Sets OpenBLAS's own thread count.</summary>
    public void SetThreads(int n)
    {
        if (_setThreads != null) _setThreads(n);
    }

    /// <summary>Row-major sgemm with the same contract as <see cref="IKernels.Gemm"/>.</summary>
    public void Sgemm(bool transA, bool transB, int M, int N, int K, float alpha, float* A, int lda, float* B, int ldb,
        float beta, float* C, int ldc) =>
        _sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
