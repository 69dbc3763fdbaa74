using System.CommandLine;
using Engine.Kernels;
using Engine.Kernels.Cpu;

namespace Engine.Cli;

/// <summary>The shared <c>--device</c> option and its resolution to an engine device.</summary>
public static class DeviceOption
{
    /// <summary>Creates the option.</summary>
    public static Option<string> Create() => new("--device")
    {
        Description = "Where to run: cpu, cuda (GPU 0), cuda:N (GPU N), emulated-cuda (the CUDA kernels run on the CPU, for checking; " +
                      "needs g++) or auto (cuda when a GPU is usable, else cpu)",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>The device for a <c>--device</c> value. An unusable GPU is an error naming the reason for <c>cuda</c>;
    /// <c>auto</c> then runs on the CPU, saying why on stderr with <c>--verbose</c>. With <paramref name="instrumented"/>
    /// the device's kernels are an <see cref="InstrumentedKernels"/> (calls, flops and, when asked, time per kernel).</summary>
    public static Device Resolve(string name, bool instrumented = false)
    {
        Device Cpu() => instrumented ? new CpuDevice(new InstrumentedKernels(new CpuKernels())) : Device.Cpu;
        switch (name)
        {
            case "cpu":
                return Cpu();
            case "emulated-cuda":
            case var named when CudaDevice.GpuOrdinal(named) != null:
                return CudaDevice.TryOpen(name, out var cuda, out var reason, instrumented) ? cuda! : throw new InvalidOperationException($"--device {name}: {reason}");
            case "auto":
                if (CudaDevice.TryOpen(out var gpu, out reason, instrumented: instrumented)) return gpu!;
                if (CommonOptions.IsVerbose) Console.Error.WriteLine($"device: cpu ({reason})");
                return Cpu();
            default:
                throw new ArgumentException($"--device must be cpu, cuda, cuda:N, emulated-cuda or auto (got '{name}')");
        }
    }
}
