using System.Runtime.InteropServices;
using System.Text;

namespace Engine.Kernels.Cuda;

/// <summary>NVRTC, the CUDA run-time compiler (our own LibraryImport bindings; the library is resolved by soname in
/// <see cref="CudaLibraries"/>). Every call is checked; failures name the call and NVRTC's error string.</summary>
public static unsafe partial class Nvrtc
{
    const string Lib = "nvrtc";

    [LibraryImport(Lib)] private static partial int nvrtcVersion(out int major, out int minor);
    [LibraryImport(Lib)] private static partial IntPtr nvrtcGetErrorString(int result);
    [LibraryImport(Lib)] private static partial int nvrtcCreateProgram(out IntPtr prog, byte* src, byte* name, int numHeaders, byte** headers, byte** includeNames);
    [LibraryImport(Lib)] private static partial int nvrtcDestroyProgram(ref IntPtr prog);
    [LibraryImport(Lib)] private static partial int nvrtcCompileProgram(IntPtr prog, int numOptions, byte** options);
    [LibraryImport(Lib)] private static partial int nvrtcGetProgramLogSize(IntPtr prog, out nuint size);
    [LibraryImport(Lib)] private static partial int nvrtcGetProgramLog(IntPtr prog, byte* log);
    [LibraryImport(Lib)] private static partial int nvrtcGetPTXSize(IntPtr prog, out nuint size);
    [LibraryImport(Lib)] private static partial int nvrtcGetPTX(IntPtr prog, byte* ptx);
    [LibraryImport(Lib)] private static partial int nvrtcGetCUBINSize(IntPtr prog, out nuint size);
    [LibraryImport(Lib)] private static partial int nvrtcGetCUBIN(IntPtr prog, byte* cubin);

    /// <summary>True when an NVRTC library loads; otherwise <paramref name="reason"/> says which sonames were tried.</summary>
    public static bool IsAvailable(out string reason)
    {
        CudaLibraries.EnsureResolver();
        return CudaLibraries.TryLoad("nvrtc", out _, out reason);
    }

    /// <summary>NVRTC's version, e.g. (11, 8).</summary>
    public static (int Major, int Minor) Version
    {
        get
        {
            CudaLibraries.EnsureResolver();
            Check(nvrtcVersion(out int major, out int minor), "nvrtcVersion");
            return (major, minor);
        }
    }

    /// <summary>
    /// Compiles <paramref name="source"/> for <paramref name="arch"/> (e.g. "sm_80" for a cubin, "compute_80" for PTX).
    /// Returns the cubin or the PTX (NUL-terminated text) bytes and the compile log.
    /// </summary>
    /// <exception cref="CudaCompileException">Compilation failed; the message holds NVRTC's log with file and line.</exception>
    public static (byte[] Image, string Log) Compile(string source, string fileName, string arch, IEnumerable<string>? extraOptions = null)
    {
        CudaLibraries.EnsureResolver();
        var options = new List<string> { $"--gpu-architecture={arch}", "-std=c++17", "-default-device" };
        if (extraOptions != null) options.AddRange(extraOptions);
        IntPtr prog;
        fixed (byte* src = Utf8Z(source), name = Utf8Z(fileName))
            Check(nvrtcCreateProgram(out prog, src, name, 0, null, null), "nvrtcCreateProgram", fileName);
        try
        {
            var optionBytes = options.Select(Utf8Z).ToArray();
            var handles = optionBytes.Select(b => GCHandle.Alloc(b, GCHandleType.Pinned)).ToArray();
            int result;
            try
            {
                var pointers = stackalloc byte*[handles.Length];
                for (int i = 0; i < handles.Length; i++) pointers[i] = (byte*)handles[i].AddrOfPinnedObject();
                result = nvrtcCompileProgram(prog, handles.Length, pointers);
            }
            finally
            {
                foreach (var h in handles) h.Free();
            }
            string log = Log(prog);
            if (result != 0)
                throw new CudaCompileException($"nvrtcCompileProgram failed for {fileName} ({arch}): {ErrorString(result)}\n{log}", log);
            bool cubin = arch.StartsWith("sm_", StringComparison.Ordinal);
            nuint size;
            if (cubin) Check(nvrtcGetCUBINSize(prog, out size), "nvrtcGetCUBINSize", fileName);
            else Check(nvrtcGetPTXSize(prog, out size), "nvrtcGetPTXSize", fileName);
            var image = new byte[(int)size];
            fixed (byte* p = image)
                if (cubin) Check(nvrtcGetCUBIN(prog, p), "nvrtcGetCUBIN", fileName);
                else Check(nvrtcGetPTX(prog, p), "nvrtcGetPTX", fileName);
            return (image, log);
        }
        finally
        {
            nvrtcDestroyProgram(ref prog);
        }
    }

    static string Log(IntPtr prog)
    {
        Check(nvrtcGetProgramLogSize(prog, out nuint size), "nvrtcGetProgramLogSize");
        var bytes = new byte[(int)size];
        fixed (byte* p = bytes) Check(nvrtcGetProgramLog(prog, p), "nvrtcGetProgramLog");
        return Encoding.UTF8.GetString(bytes).TrimEnd('\0').Trim();
    }

    static byte[] Utf8Z(string s) => Encoding.UTF8.GetBytes(s + "\0");

    static string ErrorString(int result) => Marshal.PtrToStringUTF8(nvrtcGetErrorString(result)) ?? $"NVRTC error {result}";

    static void Check(int result, string call, string? file = null)
    {
        if (result != 0) throw new InvalidOperationException($"{call}{(file == null ? "" : $" ({file})")} failed: {ErrorString(result)} ({result})");
    }
}

/// <summary>A CUDA source failed to compile; <see cref="Log"/> is the compiler's log (file, line, message).</summary>
public sealed class CudaCompileException(string message, string log) : Exception(message)
{
    /// <summary>The compiler log.</summary>
    public string Log { get; } = log;
}
