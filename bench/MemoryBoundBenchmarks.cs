using BenchmarkDotNet.Attributes;
using Engine.Kernels.Cpu;

namespace Engine.Bench;

/// <summary>Memory-bound kernels at ViT-B/16 batch-32 shapes, against a memcpy that moves the same bytes
/// (each kernel reads its input once and writes its output once).</summary>
[Config(typeof(BenchConfig))]
public unsafe class MemoryBoundBenchmarks
{
    /// <summary>Kernel under test.</summary>
    [Params("layernorm 6304x768", "softmax 75648x197", "gelu 6304x3072", "memcpy 6304x3072")]
    public string Kernel { get; set; } = "";

    /// <summary>Threads.</summary>
    [Params(1, 2)]
    public int Threads { get; set; }

    readonly CpuKernels _k = new();
    int _rows, _cols;
    float* _x, _y, _w, _b, _mean, _rstd;

    /// <summary>Allocates the buffers.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var d = Kernel.Split(' ')[1].Split('x').Select(int.Parse).ToArray();
        (_rows, _cols) = (d[0], d[1]);
        long n = (long)_rows * _cols;
        _x = Aligned.Filled(n);
        _y = Aligned.Filled(n);
        _w = Aligned.Filled(_cols);
        _b = Aligned.Filled(_cols);
        _mean = Aligned.Filled(_rows);
        _rstd = Aligned.Filled(_rows);
        CpuParallel.Threads = Threads;
    }


    /// <summary>One pass of the kernel.</summary>
    [Benchmark]
    public void Run()
    {
        long n = (long)_rows * _cols;
        switch (Kernel.Split(' ')[0])
        {
            case "layernorm": _k.LayerNormForward(_y, null, _mean, _rstd, _x, _w, _b, _rows, _cols, 1e-6f); break;
            case "softmax": _k.SoftmaxForward(_y, _x, _rows, _cols); break;
            case "gelu": _k.GeluForward(_y, null, _x, n); break;
            default: _k.Copy(_y, _x, n, false); break;
        }
    }

    /// <summary>Bytes moved by one pass (read input + write output).</summary>
    public static double Bytes(string kernel)
    {
        var d = kernel.Split(' ')[1].Split('x').Select(double.Parse).ToArray();
        return 2 * 4 * d[0] * d[1];
    }
}
