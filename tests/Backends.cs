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

    /// <summary>Names of all backends, present or not (test case source).</summary>
    public static IEnumerable<string> Names => ["cpu", "cpu-openblas"];

    /// <summary>The device for a backend, or an NUnit skip with the reason it is unavailable.</summary>
    public static Device Get(string name)
    {
        switch (name)
        {
            case "cpu":
                return Device.Cpu;
            case "cpu-openblas":
                var (device, reason) = OpenBlasCpu.Value;
                if (device == null) Assert.Ignore($"backend cpu-openblas unavailable: {reason}");
                return device!;
            default:
                throw new ArgumentException($"unknown backend '{name}'");
        }
    }
}
