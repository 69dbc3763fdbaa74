using Engine.Kernels.Cpu;

namespace Engine.Tests;

/// <summary>
/// The backends every op test body runs on. A backend whose native library or device is missing still appears,
/// and its tests are reported as skipped with the reason (never silently passed).
/// </summary>
public static class Backends
{
    static readonly Lazy<(Device? Device, string Reason)> OpenBlasCpu = new(() =>
    {
        var blas = OpenBlas.TryLoad(out var reason);
        return (blas == null ? null : new CpuDevice(new CpuKernels { Blas = blas }), reason);
    });

    // The emulated device runs the real cuda/*.cu kernels on CPU threads; the real one needs a GPU machine.
    static readonly Lazy<(Device? Device, string Reason)> EmulatedCuda = new(() => OpenCuda("emulated-cuda"));
    static readonly Lazy<(Device? Device, string Reason)> Cuda = new(() => OpenCuda("cuda"));

    static (Device? Device, string Reason) OpenCuda(string name) =>
        (CudaDevice.TryOpen(name, out var device, out var reason) ? device : null, reason);

    /// <summary>Names of all backends, present or not (test case source).</summary>
    public static IEnumerable<string> Names => ["cpu", "cpu-openblas", "emulated-cuda", "cuda"];

    /// <summary>The device for a backend, or an NUnit skip with the reason it is unavailable.</summary>
    public static Device Get(string name)
    {
        switch (name)
        {
            case "cpu":
                return Device.Cpu;
            case "cpu-openblas":
                return Available(name, OpenBlasCpu.Value);
            case "emulated-cuda":
                return Available(name, EmulatedCuda.Value);
            case "cuda":
                return Available(name, Cuda.Value);
            default:
                throw new ArgumentException($"unknown backend '{name}'");
        }
    }

    static Device Available(string name, (Device? Device, string Reason) backend)
    {
        if (backend.Device == null) Assert.Ignore($"backend {name} unavailable: {backend.Reason}");
        return backend.Device!;
    }
}
