using System.Reflection;
using System.Runtime.InteropServices;
using Engine.Kernels.Cuda;

namespace Engine.Tests;

/// <summary>
/// Every function our CUDA bindings import (each <c>[LibraryImport]</c> in Engine.Kernels) is exported by the library
/// the resolver loads for it: a name an older library lacks, or a misspelt one, would otherwise surface only as an
/// <see cref="EntryPointNotFoundException"/> on a GPU machine, at the first call. CI installs Debian's NVRTC, cuBLAS
/// and cuBLASLt 11 (CUDA 11.8, the oldest the engine supports), and unpacks Debian's driver library (535, CUDA 12.2)
/// where no driver is installed (<c>tools/unpack-libcuda.sh</c>: only this test loads it, and calls nothing in it). A
/// library this machine lacks is skipped with the reason.
/// </summary>
[TestFixture]
public class CudaEntryPointsTests
{
    /// <summary>Where tools/unpack-libcuda.sh puts the driver's library.</summary>
    static readonly string UnpackedDriver = Path.Combine(
        Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } cache ? cache : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"),
        "peft-engine", "driver", "libcuda.so.1");

    [TestCase("cuda")]
    [TestCase("nvrtc")]
    [TestCase("cublas")]
    [TestCase("cublasLt")]
    public void EveryImportedFunctionIsExported(string library)
    {
        CudaLibraries.EnsureResolver();
        IntPtr handle = IntPtr.Zero;
        if (CudaLibraries.TryLoad(library, out var soname, out var reason)) handle = CudaLibraries.Handle(library);
        else if (library == "cuda" && File.Exists(UnpackedDriver) && NativeLibrary.TryLoad(UnpackedDriver, out handle)) soname = UnpackedDriver;
        else Assert.Ignore(library == "cuda" ? $"{reason}; tools/unpack-libcuda.sh unpacks one to check against" : reason);
        var imports = typeof(CudaLibraries).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .Select(m => (Method: m, Import: m.GetCustomAttribute<LibraryImportAttribute>()))
            .Where(m => m.Import?.LibraryName == library)
            .Select(m => (Type: m.Method.DeclaringType!.Name, Name: m.Import!.EntryPoint ?? m.Method.Name))
            .Distinct().ToList();
        Assert.That(imports, Is.Not.Empty, $"no [LibraryImport(\"{library}\")] found");
        var missing = imports.Where(i => !NativeLibrary.TryGetExport(handle, i.Name, out _)).Select(i => $"{i.Type}.{i.Name}").ToList();
        TestContext.Out.WriteLine($"{soname}: {imports.Count} imported functions");
        Assert.That(missing, Is.Empty, $"{soname} exports none of these");
    }
}
