using System.Reflection;
using System.Runtime.InteropServices;

namespace Engine.Kernels.Cuda;

/// <summary>
/// Resolves the CUDA libraries by versioned soname (distributions ship no unversioned libnvrtc.so without the dev
/// package): the newest major version present wins. A library that is missing is reported as a reason, never as a
/// crash: <see cref="TryLoad"/> returns false with the sonames it tried.
/// </summary>
public static class CudaLibraries
{
    /// <summary>Logical name used in LibraryImport declarations → sonames, newest first.</summary>
    static readonly Dictionary<string, string[]> Sonames = new()
    {
        ["cuda"] = ["libcuda.so.1"],
        ["nvrtc"] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"],
        ["cublasLt"] = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11"],
        ["cublas"] = ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11"],
    };

    static readonly Dictionary<string, IntPtr> Loaded = new();
    static readonly object Gate = new();

    static CudaLibraries() => NativeLibrary.SetDllImportResolver(typeof(CudaLibraries).Assembly, Resolve);

    /// <summary>Installs the resolver (idempotent); call before the first CUDA P/Invoke.</summary>
    public static void EnsureResolver() { }

    /// <summary>Folders tried after the loader's own search path: the application's folder, then a CUDA toolkit
    /// ($CUDA_PATH, $CUDA_HOME, /usr/local/cuda).</summary>
    static IEnumerable<string> ExtraFolders()
    {
        yield return AppContext.BaseDirectory;
        foreach (var variable in new[] { "CUDA_PATH", "CUDA_HOME" })
            if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } root) yield return Path.Combine(root, "lib64");
        yield return "/usr/local/cuda/lib64";
    }

    /// <summary>Loads the library for <paramref name="name"/> ("cuda", "nvrtc", "cublas", "cublasLt"): each soname,
    /// newest first, from the loader's path, then from <see cref="ExtraFolders"/>.</summary>
    public static bool TryLoad(string name, out string soname, out string reason)
    {
        lock (Gate)
        {
            foreach (var candidate in Sonames[name])
                foreach (var path in ExtraFolders().Select(f => Path.Combine(f, candidate)).Prepend(candidate))
                    if (NativeLibrary.TryLoad(path, out var handle))
                    {
                        Loaded[name] = handle;
                        soname = path;
                        reason = "";
                        return true;
                    }
        }
        soname = "";
        reason = $"{name}: none of {string.Join(", ", Sonames[name])} could be loaded (searched the loader path, the application folder, $CUDA_PATH, $CUDA_HOME and /usr/local/cuda)";
        return false;
    }

    /// <summary>The handle of a library already loaded by <see cref="TryLoad"/>.</summary>
    public static IntPtr Handle(string name)
    {
        lock (Gate)
            return Loaded.TryGetValue(name, out var handle) ? handle : throw new DllNotFoundException($"{name} is not loaded");
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (!Sonames.ContainsKey(name)) return IntPtr.Zero;
        lock (Gate)
            if (Loaded.TryGetValue(name, out var handle)) return handle;
        return TryLoad(name, out _, out var reason) ? Loaded[name] : throw new DllNotFoundException(reason);
    }
}
