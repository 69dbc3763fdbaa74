namespace Engine.Kernels.Cuda;

/// <summary>
/// The device's own work over a stretch of calls, by name: each kernel launch (by kernel) and each library product (by
/// library, GEMM precision, transposes and shape, so each of a model's product shapes gets its time and TFLOP/s) timed
/// on its own while <see cref="CudaRuntime.WorkProfile"/> is this. An op (one <see cref="IKernels"/> call) may launch
/// several kernels and products, such as a bf16 GEMM's operand conversions and the product itself; this says which took
/// the time. Each call waits for the device, so a profiled stretch runs slower than it would.
/// </summary>
public sealed class DeviceWorkProfile
{
    readonly Dictionary<string, Work> _work = new();

    /// <summary>A profile that times with <paramref name="runtime"/>'s kernel timer (GPU events on a GPU).</summary>
    public DeviceWorkProfile(CudaRuntime runtime) => Timer = runtime.CreateKernelTimer();

    internal IKernelTimer Timer { get; }

    /// <summary>One kind of work: how often it ran, for how long in all, the floating-point operations of its products
    /// (zero for kernels), and whether it is the emulated device standing in for work a library does inside its own
    /// call on a GPU (widening a 16-bit operand for the CPU GEMM, cuBLASLt's epilogue), which no GPU launches.</summary>
    public readonly record struct Work(string Name, long Calls, double Seconds, double Flops, bool EmulatorOnly = false);

    internal void Add(string name, double seconds, double flops, bool emulatorOnly = false)
    {
        _work.TryGetValue(name, out var w);
        _work[name] = new Work(name, w.Calls + 1, w.Seconds + seconds, w.Flops + flops, emulatorOnly);
    }

    /// <summary>Everything timed so far, the longest first.</summary>
    public IReadOnlyList<Work> Rows => [.. _work.Values.OrderByDescending(w => w.Seconds).ThenBy(w => w.Name, StringComparer.Ordinal)];
}
