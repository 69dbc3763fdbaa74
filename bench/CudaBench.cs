using Engine.Conformance;

namespace Engine.Bench;

/// <summary>
/// <c>dotnet run --project bench -c Release -- cuda [--emulated] [--small]</c>: the CUDA device benchmarks
/// (<see cref="DeviceBenchmarks"/>: copy bandwidth, each memory-bound kernel's GB/s against it, cuBLAS TFLOP/s,
/// launch overhead) on GPU 0. They need a GPU; without one this prints the reason and exits with 3.
/// <c>--emulated</c> runs them on the emulated device at small sizes (it checks the code, not a GPU).
/// </summary>
public static class CudaBench
{
    /// <summary>Runs the benchmarks; returns the process exit code.</summary>
    public static int Run(string[] args)
    {
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine("bash bench/run.sh cuda [--small | --emulated]\n  The device benchmarks on the GPU (exit 3 with the reason when there is none); " +
                              "--small uses tiny sizes, --emulated runs the same code on the emulated device.");
            return 0;
        }
        bool emulated = args.Contains("--emulated"), small = emulated || args.Contains("--small");
        if (!CudaDevice.TryOpen(emulated ? "emulated-cuda" : "cuda", out var device, out var reason))
        {
            Console.WriteLine($"{(emulated ? "no emulated CUDA device" : "no GPU")}: {reason}");
            return 3;
        }
        using (device) DeviceBenchmarks.RunAndPrint(device!, !small, Console.Out);
        return 0;
    }
}
