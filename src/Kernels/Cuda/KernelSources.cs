using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace Engine.Kernels.Cuda;

/// <summary>
/// The CUDA kernel sources (cuda/*.cu, one file per family, plus common.cuh and the emulator headers), embedded in
/// this assembly, with the hash that names what is built from them.
/// </summary>
public static partial class KernelSources
{
    /// <summary>The shared header every .cu file includes.</summary>
    public const string CommonHeader = "common.cuh";

    static readonly Lazy<IReadOnlyDictionary<string, string>> All = new(() =>
    {
        var assembly = typeof(KernelSources).Assembly;
        var files = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var resource in assembly.GetManifestResourceNames().Where(n => n.StartsWith("cuda/", StringComparison.Ordinal)))
        {
            using var reader = new StreamReader(assembly.GetManifestResourceStream(resource)!);
            files[resource["cuda/".Length..]] = reader.ReadToEnd();
        }
        return files;
    });

    /// <summary>Every embedded file by relative path ("norm.cu", "common.cuh", "emu/cuemu.h").</summary>
    public static IReadOnlyDictionary<string, string> Files => All.Value;

    /// <summary>The kernel family files (*.cu), by name.</summary>
    public static IEnumerable<string> KernelFiles => Files.Keys.Where(f => f.EndsWith(".cu", StringComparison.Ordinal));

    /// <summary>The <c>extern "C"</c> kernels defined in <paramref name="file"/>.</summary>
    public static IEnumerable<string> KernelNames(string file) =>
        KernelDeclaration().Matches(Files[file]).Select(m => m.Groups[1].Value);

    /// <summary>Kernel name → the file that defines it.</summary>
    public static IReadOnlyDictionary<string, string> FileOfKernel { get; } =
        KernelFiles.SelectMany(f => KernelNames(f).Select(k => (k, f))).ToDictionary(p => p.k, p => p.f);

    /// <summary>Hex SHA-256 of the given parts (each length-prefixed, so boundaries matter).</summary>
    public static string Hash(params IEnumerable<string> parts)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var part in parts)
        {
            var bytes = Encoding.UTF8.GetBytes(part);
            sha.AppendData(BitConverter.GetBytes(bytes.Length));
            sha.AppendData(bytes);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    // A kernel's declaration, with the registers it may use capped where it asks (__launch_bounds__(threads, blocks), or
    // common.cuh's LAUNCH_BOUNDS_FROM_SM80).
    [GeneratedRegex(@"extern ""C"" __global__ void (?:(?:__launch_bounds__|LAUNCH_BOUNDS_FROM_SM80)\(\d+(?:, \d+)?\) )?(\w+)\(")]
    private static partial Regex KernelDeclaration();
}
