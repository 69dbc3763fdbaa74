using System.Runtime.InteropServices;

namespace Engine.Kernels.Cuda;

/// <summary>
/// Our own bindings to the CUDA driver API (libcuda.so.1, resolved in <see cref="CudaLibraries"/>): the subset the
/// engine uses. Handles are pointers, CUdevice is an int, CUdeviceptr a 64-bit address. Every call goes through
/// <see cref="Check"/>, which names the call and the driver's error string.
/// </summary>
public static unsafe partial class CudaDriver
{
    const string Lib = "cuda";

    /// <summary>CUDA_ERROR_OUT_OF_MEMORY: an allocation found no room on the device.</summary>
    public const int OutOfMemory = 2;

    /// <summary>CUDA_ERROR_ILLEGAL_ADDRESS: a kernel read or wrote outside memory it may use; the context is lost
    /// (<see cref="CudaException.LosesContext"/>).</summary>
    public const int IllegalAddress = 700;

    /// <summary>Device attributes used here (CUdevice_attribute values).</summary>
    public enum DeviceAttribute
    {
        /// <summary>The largest grid y dimension a launch may use.</summary>
        MaxGridDimY = 6,
        /// <summary>The largest grid z dimension a launch may use.</summary>
        MaxGridDimZ = 7,
        /// <summary>Streaming multiprocessors.</summary>
        MultiprocessorCount = 16,
        /// <summary>Compute capability major.</summary>
        ComputeCapabilityMajor = 75,
        /// <summary>Compute capability minor.</summary>
        ComputeCapabilityMinor = 76,
    }

/// <summary>CUstreamCaptureMode: relaxed lets the capturing thread allocate device memory (a pool growing during
    /// the captured step); the capture itself still refuses anything that would wait for the stream.</summary>
    public enum StreamCaptureMode
    {
        /// <summary>CU_STREAM_CAPTURE_MODE_GLOBAL.</summary>
        Global = 0,
        /// <summary>CU_STREAM_CAPTURE_MODE_THREAD_LOCAL.</summary>
        ThreadLocal = 1,
        /// <summary>CU_STREAM_CAPTURE_MODE_RELAXED.</summary>
        Relaxed = 2,
    }

#pragma warning disable CS1591 // thin one-to-one bindings; the CUDA driver API documentation describes each call
    [LibraryImport(Lib)] public static partial int cuInit(uint flags);
    [LibraryImport(Lib)] public static partial int cuDriverGetVersion(out int version);
    [LibraryImport(Lib)] public static partial int cuDeviceGetCount(out int count);
    [LibraryImport(Lib)] public static partial int cuDeviceGet(out int device, int ordinal);
    [LibraryImport(Lib)] public static partial int cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(Lib)] public static partial int cuDeviceGetAttribute(out int value, DeviceAttribute attribute, int device);
    [LibraryImport(Lib)] public static partial int cuDeviceTotalMem_v2(out nuint bytes, int device);
    [LibraryImport(Lib)] public static partial int cuDevicePrimaryCtxRetain(out IntPtr context, int device);
    [LibraryImport(Lib)] public static partial int cuDevicePrimaryCtxRelease_v2(int device);
    [LibraryImport(Lib)] public static partial int cuCtxSetCurrent(IntPtr context);
    [LibraryImport(Lib)] public static partial int cuCtxSynchronize();
    [LibraryImport(Lib)] public static partial int cuMemAlloc_v2(out ulong address, nuint bytes);
    [LibraryImport(Lib)] public static partial int cuMemFree_v2(ulong address);
    [LibraryImport(Lib)] public static partial int cuMemGetInfo_v2(out nuint free, out nuint total);
    [LibraryImport(Lib)] public static partial int cuMemAllocHost_v2(out IntPtr host, nuint bytes);
    [LibraryImport(Lib)] public static partial int cuMemFreeHost(IntPtr host);
    [LibraryImport(Lib)] public static partial int cuMemcpyHtoDAsync_v2(ulong dst, void* src, nuint bytes, IntPtr stream);
    [LibraryImport(Lib)] public static partial int cuMemcpyDtoHAsync_v2(void* dst, ulong src, nuint bytes, IntPtr stream);
    [LibraryImport(Lib)] public static partial int cuMemcpyDtoDAsync_v2(ulong dst, ulong src, nuint bytes, IntPtr stream);
    [LibraryImport(Lib)] public static partial int cuModuleLoadData(out IntPtr module, void* image);
    [LibraryImport(Lib)] public static partial int cuModuleUnload(IntPtr module);
    [LibraryImport(Lib)] public static partial int cuModuleGetFunction(out IntPtr function, IntPtr module, byte* name);
    [LibraryImport(Lib)] public static partial int cuOccupancyMaxActiveBlocksPerMultiprocessor(out int blocks, IntPtr function, int blockSize, nuint dynamicSharedBytes);
    [LibraryImport(Lib)] public static partial int cuLaunchKernel(IntPtr function, uint gridX, uint gridY, uint gridZ,
        uint blockX, uint blockY, uint blockZ, uint sharedBytes, IntPtr stream, void** args, void** extra);
    [LibraryImport(Lib)] public static partial int cuStreamCreate(out IntPtr stream, uint flags);
    [LibraryImport(Lib)] public static partial int cuStreamDestroy_v2(IntPtr stream);
    [LibraryImport(Lib)] public static partial int cuStreamSynchronize(IntPtr stream);
    [LibraryImport(Lib)] public static partial int cuStreamBeginCapture_v2(IntPtr stream, StreamCaptureMode mode);
    [LibraryImport(Lib)] public static partial int cuStreamEndCapture(IntPtr stream, out IntPtr graph);
    [LibraryImport(Lib)] public static partial int cuGraphInstantiateWithFlags(out IntPtr graphExec, IntPtr graph, ulong flags);
    [LibraryImport(Lib)] public static partial int cuGraphLaunch(IntPtr graphExec, IntPtr stream);
    [LibraryImport(Lib)] public static partial int cuGraphExecDestroy(IntPtr graphExec);
    [LibraryImport(Lib)] public static partial int cuGraphDestroy(IntPtr graph);
    [LibraryImport(Lib)] public static partial int cuEventCreate(out IntPtr @event, uint flags);
    [LibraryImport(Lib)] public static partial int cuEventRecord(IntPtr @event, IntPtr stream);
    [LibraryImport(Lib)] public static partial int cuEventSynchronize(IntPtr @event);
    [LibraryImport(Lib)] public static partial int cuEventDestroy_v2(IntPtr @event);
    [LibraryImport(Lib)] private static partial int cuGetErrorName(int result, out IntPtr name);
    [LibraryImport(Lib)] private static partial int cuGetErrorString(int result, out IntPtr text);
#pragma warning restore CS1591

    static delegate* unmanaged<float*, IntPtr, IntPtr, int> _elapsedTime;

    /// <summary>Milliseconds between two recorded events: cuEventElapsedTime_v2 where the driver has it (12.8+),
    /// else the original entry point.</summary>
    public static float ElapsedMilliseconds(IntPtr start, IntPtr end)
    {
        if (_elapsedTime == null)
        {
            CudaLibraries.TryLoad("cuda", out _, out _);
            var library = CudaLibraries.Handle("cuda");
            _elapsedTime = (delegate* unmanaged<float*, IntPtr, IntPtr, int>)(
                NativeLibrary.TryGetExport(library, "cuEventElapsedTime_v2", out var v2) ? v2 : NativeLibrary.GetExport(library, "cuEventElapsedTime"));
        }
        float ms;
        Check(_elapsedTime(&ms, start, end), "cuEventElapsedTime");
        return ms;
    }

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="call"/> when <paramref name="result"/> ≠ 0.</summary>
    public static void Check(int result, string call)
    {
        if (result != 0) throw new CudaException(call, result, Describe(result));
    }

    /// <summary>"CUDA_ERROR_NAME: description" for a driver result code.</summary>
    public static string Describe(int result)
    {
        string name = cuGetErrorName(result, out var n) == 0 ? Marshal.PtrToStringUTF8(n) ?? "" : "";
        string text = cuGetErrorString(result, out var s) == 0 ? Marshal.PtrToStringUTF8(s) ?? "" : "";
        return name.Length == 0 ? $"CUDA error {result}" : $"{name}: {text}";
    }
}

/// <summary>A CUDA driver, cuBLAS or runtime call failed; the message names the call and the CUDA error, and says when
/// the error lost the GPU context.</summary>
public sealed class CudaException(string call, int code, string description)
    : Exception($"{call} failed with {code} ({description})" + (LosesContextCodes.Contains(code) ? LostContextNote : ""))
{
    // The driver's sticky errors (CUDA_ERROR_ECC_UNCORRECTABLE, ILLEGAL_ADDRESS, LAUNCH_TIMEOUT, HARDWARE_STACK_ERROR,
    // ILLEGAL_INSTRUCTION, MISALIGNED_ADDRESS, INVALID_ADDRESS_SPACE, INVALID_PC, LAUNCH_FAILED): a kernel faulted, and
    // every later call in the context returns the same error. cuBLAS's statuses (below 20) never collide with them.
    static readonly int[] LosesContextCodes = [214, 700, 702, 714, 715, 716, 717, 718, 719];

    const string LostContextNote = "; the GPU context is lost: no further CUDA work can run in this process, a new process can";

    /// <summary>The failing call.</summary>
    public string Call { get; } = call;

    /// <summary>The result code.</summary>
    public int Code { get; } = code;

    /// <summary>The error's name and text (the driver's or the library's).</summary>
    public string Description { get; } = description;

    /// <summary>Whether the error lost the CUDA context (a kernel faulted: an illegal or misaligned address, an illegal
    /// instruction, a launch that failed or timed out, an uncorrectable ECC error). Every later CUDA call in this
    /// process fails too; only a new process can use the GPU again.</summary>
    public bool LosesContext => LosesContextCodes.Contains(Code);
}
