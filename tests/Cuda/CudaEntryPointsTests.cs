using System.Reflection;
using System.Runtime.InteropServices;
using Engine.Kernels.Cuda;

namespace Engine.Tests;

/// <summary>
/// Every function our CUDA bindings import (each <c>[LibraryImport]</c> in Engine.Kernels) is exported by the library
/// the resolver loads for it: a name an older library lacks, or a misspelt one, would otherwise surface only as an
/// <see cref="EntryPointNotFoundException"/> on a GPU machine, at the first call. CI installs Debian's NVRTC, cuBLAS
/// and cuBLASLt 11 (CUDA 11.8, the oldest the engine supports); a library this machine lacks (the driver's libcuda
/// without a GPU) is skipped with the reason.
/// </summary>
[TestFixture]
public class CudaEntryPointsTests
{
    [TestCase("cuda")]
    [TestCase("nvrtc")]
    [TestCase("cublas")]
    [TestCase("cublasLt")]
    public void EveryImportedFunctionIsExported(string library)
    {
        CudaLibraries.EnsureResolver();
        if (!CudaLibraries.TryLoad(library, out var soname, out var reason)) Assert.Ignore(reason);
        var imports = typeof(CudaLibraries).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .Select(m => (Method: m, Import: m.GetCustomAttribute<LibraryImportAttribute>()))
            .Where(m => m.Import?.LibraryName == library)
            .Select(m => (Type: m.Method.DeclaringType!.Name, Name: m.Import!.EntryPoint ?? m.Method.Name))
            .Distinct().ToList();
        Assert.That(imports, Is.Not.Empty, $"no [LibraryImport(\"{library}\")] found");
        var handle = CudaLibraries.Handle(library);
        var missing = imports.Where(i => !NativeLibrary.TryGetExport(handle, i.Name, out _)).Select(i => $"{i.Type}.{i.Name}").ToList();
        TestContext.Out.WriteLine($"{soname}: {imports.Count} imported functions");
        Assert.That(missing, Is.Empty, $"{soname} exports none of these");
    }
}
