using BenchmarkDotNet.Attributes;
using Engine.Kernels.Cpu;

namespace Engine.Bench;

/// <summary>FP32 GEMM at the ViT-B/16 batch-32 shapes (M = 32·197 = 6304 tokens), laid out as nn.Linear's forward
/// (X [M,K] · Wᵀ, W [N,K]): our blocked kernel against OpenBLAS, on 1 and 2 threads.</summary>
[Config(typeof(BenchConfig))]
public unsafe class GemmBenchmarks
{
    /// <summary>M×N×K.</summary>
    [Params("6304x768x768", "6304x3072x768", "6304x768x3072")]
    public string Shape { get; set; } = "";

    /// <summary>Threads given to the kernel.</summary>
    [Params(1, 2)]
    public int Threads { get; set; }

    /// <summary>ours or openblas.</summary>
    [Params("ours", "openblas")]
    public string Impl { get; set; } = "";

    int _m, _n, _k;
    float* _a, _b, _c;
    OpenBlas? _blas;

    /// <summary>Allocates and fills the operands.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var dims = Shape.Split('x').Select(int.Parse).ToArray();
        (_m, _n, _k) = (dims[0], dims[1], dims[2]);
        _a = Aligned.Filled((long)_m * _k);
        _b = Aligned.Filled((long)_n * _k);
        _c = Aligned.Filled((long)_m * _n);
        CpuParallel.Threads = Threads;
        if (Impl == "openblas")
        {
            _blas = OpenBlas.TryLoad(out var reason) ?? throw new InvalidOperationException(reason);
            _blas.SetThreads(Threads);
        }
    }


    /// <summary>Frees the operands.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        System.Runtime.InteropServices.NativeMemory.AlignedFree(_a);
        System.Runtime.InteropServices.NativeMemory.AlignedFree(_b);
        System.Runtime.InteropServices.NativeMemory.AlignedFree(_c);
    }

    /// <summary>C = A·Bᵀ.</summary>
    [Benchmark]
    public void Sgemm()
    {
        if (_blas != null) _blas.Sgemm(false, true, _m, _n, _k, 1f, _a, _k, _b, _k, 0f, _c, _n);
        else CpuGemm.Gemm(false, true, _m, _n, _k, 1f, _a, _k, _b, _k, 0f, _c, _n);
    }

    /// <summary>Floating-point operations of one call.</summary>
    public static double Flops(string shape)
    {
        var d = shape.Split('x').Select(double.Parse).ToArray();
        return 2 * d[0] * d[1] * d[2];
    }
}
