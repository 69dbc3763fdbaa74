using Engine.Kernels;
using Engine.Kernels.Cuda;

namespace Engine.Tests;

/// <summary>
/// Our cuBLASLt bindings (<see cref="CuBlasLt"/>) against the real library on a machine without a GPU (CI installs
/// Debian's libcublaslt11): no handle can be made there, so every product must be declined with the library's own
/// reason, never thrown, and every descriptor, layout and preference call before the heuristic must be accepted by the
/// library with our attribute numbers, value sizes and data types (a wrong size or an unknown attribute comes back as
/// a refused call in the declined line). Skipped with the reason where the library is missing or a GPU is present
/// (there <c>peft selftest --device cuda</c> prints which products ran and which were declined).
/// </summary>
[TestFixture]
public unsafe class CuBlasLtTests
{
    [SetUp]
    public void RequireLibraryWithoutGpu()
    {
        CudaLibraries.EnsureResolver();
        if (!CudaLibraries.TryLoad("cublasLt", out _, out var reason)) Assert.Ignore($"cuBLASLt unavailable: {reason}");
        if (CudaDevice.TryOpen(out var gpu, out _))
        {
            gpu!.Dispose();
            Assert.Ignore("a GPU is present: cuBLASLt makes a handle there, and the selftest checks its products");
        }
    }

    [Test]
    public void WithoutAHandleEveryProductIsDeclinedWithTheLibrarysReason()
    {
        using var lt = new CuBlasLt(IntPtr.Zero, 0);
        Assert.That(lt.Unavailable, Does.StartWith("cublasLtCreate failed with "), "the library's status and words");
        TestContext.Out.WriteLine(lt.Unavailable);

        // Pointers are never read without a handle; their alignments still key the plans (x 16-byte, w 256, y 8 and 256).
        void* x = (void*)0x10010, w = (void*)0x20000, y = (void*)0x30008, y256 = (void*)0x40000;
        float* bias = (float*)0x50000;
        var expected = new List<string>();
        foreach (var precision in new[] { Precision.FP32, Precision.TF32, Precision.BF16, Precision.FP16 })
            foreach (bool sixteen in precision is Precision.BF16 or Precision.FP16 ? new[] { false, true } : [false])
                foreach (bool withBias in new[] { true, false })
                {
                    string shape = $"197×2304×768 {precision.Name()} → {(sixteen ? "16-bit" : "float32")} y{(withBias ? " + float32 bias" : "")}";
                    Assert.That(lt.Offers(197, 2304, 768, x, w, withBias ? bias : null, y, sixteen, precision), Is.False, shape);
                    Assert.That(lt.Linear(197, 2304, 768, x, w, withBias ? bias : null, y, sixteen, precision), Is.False, shape);
                    expected.Add($"{shape}: {lt.Unavailable}");
                }
        Assert.That(lt.Linear(197, 2304, 768, x, w, bias, y256, true, Precision.BF16), Is.False, "another alignment of y: a plan of its own");
        expected.Add($"197×2304×768 bf16 → 16-bit y + float32 bias: {lt.Unavailable}");

        // Each line says only that there is no handle: every call that made the descriptors was accepted.
        Assert.That(lt.Declined, Is.EqualTo(expected));
    }
}
