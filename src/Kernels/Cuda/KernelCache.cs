namespace Engine.Kernels.Cuda;

/// <summary>
/// Compiled kernel images on disk. A kernel family file is compiled by NVRTC once per (source, headers, options,
/// architecture, NVRTC version); the key is the SHA-256 of all of them, so an edit, a new compiler or another GPU
/// never reuses a stale image. Writes are atomic (temporary file, then rename).
/// </summary>
public static class KernelCache
{
    /// <summary>Options added to <see cref="Nvrtc.BaseOptions"/> for every engine kernel (line info for profilers).</summary>
    public static readonly string[] Options = ["-lineinfo"];

    /// <summary>The cubin (arch "sm_XY") or PTX (arch "compute_XY") of kernel family <paramref name="file"/>, from the
    /// cache when present. <paramref name="directory"/> defaults to <see cref="CacheFolder"/>/kernels.</summary>
    /// <exception cref="CudaCompileException">The source does not compile; the message carries NVRTC's log.</exception>
    public static (byte[] Image, bool Hit) GetOrCompile(string file, string arch, string? directory = null)
    {
        var headers = new Dictionary<string, string> { [KernelSources.CommonHeader] = KernelSources.Files[KernelSources.CommonHeader] };
        return GetOrCompile(file, KernelSources.Files[file], headers, arch, directory);
    }

    /// <summary>As above for any source text (tests use it with sources of their own).</summary>
    public static (byte[] Image, bool Hit) GetOrCompile(string file, string source, IReadOnlyDictionary<string, string> headers, string arch,
        string? directory = null)
    {
        var (major, minor) = Nvrtc.Version;
        string key = KernelSources.Hash(
            [file, source, .. headers.SelectMany(h => new[] { h.Key, h.Value }), .. Nvrtc.BaseOptions(arch), .. Options, $"nvrtc {major}.{minor}"]);
        directory ??= CacheFolder.For("kernels");
        string path = Path.Combine(directory, $"{Path.GetFileNameWithoutExtension(file)}-{arch}-{key[..24]}.{(arch.StartsWith("sm_", StringComparison.Ordinal) ? "cubin" : "ptx")}");
        if (File.Exists(path)) return (File.ReadAllBytes(path), true);
        var (image, _) = Nvrtc.Compile(source, file, arch, Options, headers);
        Directory.CreateDirectory(directory);
        string temporary = $"{path}.{Environment.ProcessId}.{Environment.CurrentManagedThreadId}.tmp"; // two devices may compile one family at once
        File.WriteAllBytes(temporary, image);
        File.Move(temporary, path, overwrite: true);
        return (image, false);
    }
}
