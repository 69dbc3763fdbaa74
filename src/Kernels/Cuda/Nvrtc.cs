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
    [LibraryImport(Lib)] private static partial int nvrtcAddNameExpression(IntPtr prog, byte* expression);
    [LibraryImport(Lib)] private static partial int nvrtcGetLoweredName(IntPtr prog, byte* expression, out IntPtr lowered);
    [LibraryImport(Lib)] private static partial int nvrtcGetNumSupportedArchs(out int count);
    [LibraryImport(Lib)] private static partial int nvrtcGetSupportedArchs(int* archs);

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

    /// <summary>The compute capabilities this NVRTC can target, e.g. 35 … 90 for NVRTC 11.8.</summary>
    public static int[] SupportedArchitectures
    {
        get
        {
            CudaLibraries.EnsureResolver();
            Check(nvrtcGetNumSupportedArchs(out int count), "nvrtcGetNumSupportedArchs");
            var archs = new int[count];
            fixed (int* p = archs) Check(nvrtcGetSupportedArchs(p), "nvrtcGetSupportedArchs");
            return archs;
        }
    }

    /// <summary>The options every compile starts with; <see cref="Compile"/> appends the caller's.</summary>
    public static string[] BaseOptions(string arch) => [$"--gpu-architecture={arch}", "-std=c++17", "-default-device"];

    /// <summary>
    /// Compiles <paramref name="source"/> for <paramref name="arch"/> (e.g. "sm_80" for a cubin, "compute_80" for PTX).
    /// <paramref name="headers"/> are include files passed in memory (name → text). Returns the cubin or the PTX
    /// (NUL-terminated text) bytes and the compile log.
    /// </summary>
    /// <exception cref="CudaCompileException">Compilation failed; the message holds NVRTC's log with file and line.</exception>
    public static (byte[] Image, string Log) Compile(string source, string fileName, string arch, IEnumerable<string>? extraOptions = null,
        IReadOnlyDictionary<string, string>? headers = null) =>
        CompileProgram(source, fileName, arch, extraOptions, headers, [], out _);

    /// <summary>Compiles and returns the mangled names of C++ <paramref name="expressions"/> such as
    /// <c>scale&lt;float,256&gt;</c>, for kernels that are templates rather than <c>extern "C"</c>.</summary>
    public static IReadOnlyDictionary<string, string> LoweredNames(string source, string fileName, string arch, IReadOnlyList<string> expressions)
    {
        CompileProgram(source, fileName, arch, null, null, expressions, out var lowered);
        return lowered;
    }

    static (byte[] Image, string Log) CompileProgram(string source, string fileName, string arch, IEnumerable<string>? extraOptions,
        IReadOnlyDictionary<string, string>? headers, IReadOnlyList<string> expressions, out Dictionary<string, string> lowered)
    {
        CudaLibraries.EnsureResolver();
        var options = BaseOptions(arch).ToList();
        if (extraOptions != null) options.AddRange(extraOptions);
        var headerList = headers?.ToList() ?? [];
        var pinned = new List<GCHandle>();
        byte* Pin(string text)
        {
            var handle = GCHandle.Alloc(Utf8Z(text), GCHandleType.Pinned);
            pinned.Add(handle);
            return (byte*)handle.AddrOfPinnedObject();
        }
        IntPtr prog;
        try
        {
            var headerTexts = stackalloc byte*[headerList.Count];
            var headerNames = stackalloc byte*[headerList.Count];
            for (int i = 0; i < headerList.Count; i++)
            {
                headerTexts[i] = Pin(headerList[i].Value);
                headerNames[i] = Pin(headerList[i].Key);
            }
            Check(nvrtcCreateProgram(out prog, Pin(source), Pin(fileName), headerList.Count, headerTexts, headerNames), "nvrtcCreateProgram", fileName);
        }
        finally
        {
            foreach (var h in pinned) h.Free();
            pinned.Clear();
        }
        try
        {
            foreach (var expression in expressions)
                fixed (byte* e = Utf8Z(expression)) Check(nvrtcAddNameExpression(prog, e), "nvrtcAddNameExpression", fileName);
            var optionPointers = stackalloc byte*[options.Count];
            int result;
            try
            {
                for (int i = 0; i < options.Count; i++) optionPointers[i] = Pin(options[i]);
                result = nvrtcCompileProgram(prog, options.Count, optionPointers);
            }
            finally
            {
                foreach (var h in pinned) h.Free();
            }
            string log = Log(prog);
            if (result != 0)
                throw new CudaCompileException($"nvrtcCompileProgram failed for {fileName} ({arch}): {ErrorString(result)}\n{log}", log);
            lowered = new Dictionary<string, string>();
            foreach (var expression in expressions)
                fixed (byte* e = Utf8Z(expression))
                {
                    Check(nvrtcGetLoweredName(prog, e, out var name), "nvrtcGetLoweredName", fileName);
                    lowered[expression] = Marshal.PtrToStringUTF8(name)!;
                }
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
