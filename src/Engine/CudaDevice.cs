using Engine.Kernels.Cuda;

namespace Engine;

/// <summary>
/// A CUDA device: tensors live in its memory, every op is a launch of a kernel from cuda/*.cu (cuBLAS for GEMMs).
/// <see cref="TryOpen(out CudaDevice, out string, int)"/> opens a real GPU; <see cref="TryOpenEmulated"/> opens the emulated device, which runs the
/// same kernel sources on CPU threads (host memory, CPU GEMM) so the CUDA path is executed without a GPU.
/// </summary>
public sealed unsafe class CudaDevice : Device, IDisposable
{
    readonly CudaKernels _kernels;

    CudaDevice(CudaRuntime runtime, CudaKernels kernels) : base(kernels)
    {
        Runtime = runtime;
        _kernels = kernels;
    }

    /// <summary>The runtime underneath (driver or emulator).</summary>
    public CudaRuntime Runtime { get; }

    /// <summary>Opens GPU <paramref name="ordinal"/>; false with the reason (no driver, no GPU, no NVRTC, no cuBLAS).</summary>
    public static bool TryOpen(out CudaDevice? device, out string reason, int ordinal = 0)
    {
        device = null;
        if (!DriverRuntime.TryCreate(ordinal, out var runtime, out reason)) return false;
        device = new CudaDevice(runtime!, new CudaKernels(runtime!));
        return true;
    }

    /// <summary>Opens the emulated CUDA device (building it with g++ on first use); false with the reason.</summary>
    public static bool TryOpenEmulated(out CudaDevice? device, out string reason)
    {
        device = null;
        if (!EmulatedRuntime.TryCreate(out var runtime, out reason)) return false;
        device = new CudaDevice(runtime!, new CudaKernels(runtime!));
        return true;
    }

    /// <summary>Opens a CUDA backend by its command-line name: <c>cuda</c> (GPU 0) or <c>emulated-cuda</c>; false with
    /// the reason when it is not available here.</summary>
    public static bool TryOpen(string name, out CudaDevice? device, out string reason) => name switch
    {
        "cuda" => TryOpen(out device, out reason),
        "emulated-cuda" => TryOpenEmulated(out device, out reason),
        _ => throw new ArgumentException($"unknown CUDA backend '{name}' (cuda or emulated-cuda)", nameof(name)),
    };

    /// <inheritdoc/>
    public override DeviceMemory Allocate(long bytes) => new CudaMemory(Runtime, bytes);

    /// <inheritdoc/>
    public override void CopyFromHost(void* deviceDst, void* hostSrc, long bytes) => Runtime.CopyToDevice((ulong)deviceDst, hostSrc, bytes);

    /// <inheritdoc/>
    public override void CopyToHost(void* hostDst, void* deviceSrc, long bytes) => Runtime.CopyToHost(hostDst, (ulong)deviceSrc, bytes);

    /// <inheritdoc/>
    public override void Synchronize() => Runtime.Synchronize();

    /// <summary>Frees pooled buffers and the kernels' scratch, then the runtime.</summary>
    public void Dispose()
    {
        Pool.Trim();
        _kernels.Dispose();
        Runtime.Dispose();
    }

    sealed class CudaMemory(CudaRuntime runtime, long bytes) : DeviceMemory
    {
        ulong _address = runtime.Allocate(bytes);
        public override void* Pointer => _address != 0 ? (void*)_address : throw new ObjectDisposedException(nameof(CudaMemory));
        public override long Bytes => bytes;
        public override void Dispose()
        {
            if (_address != 0) runtime.Free(_address);
            _address = 0;
        }
    }
}
