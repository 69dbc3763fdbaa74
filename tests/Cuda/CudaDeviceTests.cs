using Engine.Kernels;
using Engine.Kernels.Cuda;

namespace Engine.Tests;

/// <summary>The emulated device's launch checks, and clean "no GPU" detection on machines without one.</summary>
[TestFixture]
public unsafe class CudaDeviceTests
{
    static EmulatedRuntime Emulator()
    {
        if (!EmulatedRuntime.TryCreate(out var runtime, out var reason)) Assert.Ignore($"emulated CUDA device unavailable: {reason}");
        return runtime!;
    }

    [Test]
    public void TheEmulatorExportsEveryKernelOfEveryFamily()
    {
        var runtime = Emulator();
        Assert.That(runtime.KernelNames, Is.EquivalentTo(KernelSources.FileOfKernel.Keys));
        Assert.That(KernelSources.FileOfKernel.Keys, Does.Contain("layernorm_forward").And.Contain("adam_step"));
    }

    /// <summary>Every <c>extern "C"</c> kernel of every cuda/*.cu file has exactly one handle naming that file, and
    /// every handle names a kernel its file defines; every family file has its Ops and CPU namesakes.</summary>
    [Test]
    public void CudaKernelHandlesMatchTheSources()
    {
        var handles = typeof(CudaKernelHandles).GetNestedTypes()
            .SelectMany(t => t.GetFields(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static))
            .Select(f => (CudaKernel)f.GetValue(null)!).ToList();
        var defined = KernelSources.KernelFiles.SelectMany(f => KernelSources.KernelNames(f).Select(k => new CudaKernel(f, k))).ToList();
        Assert.That(handles, Is.EquivalentTo(defined));
        Assert.That(handles.Select(h => h.Name).Distinct().Count(), Is.EqualTo(handles.Count), "kernel names are unique across files");
        string root = Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "../../../.."));
        foreach (var file in KernelSources.KernelFiles)
        {
            string family = string.Concat(Path.GetFileNameWithoutExtension(file).Split('_').Select(p => char.ToUpperInvariant(p[0]) + p[1..]));
            Assert.That(File.Exists(Path.Combine(root, "src/Engine/Ops", family + ".cs")), $"cuda/{file} has no src/Engine/Ops/{family}.cs");
            Assert.That(File.Exists(Path.Combine(root, "src/Kernels/Cpu", $"CpuKernels.{family}.cs")), $"cuda/{file} has no src/Kernels/Cpu/CpuKernels.{family}.cs");
        }
    }

    [Test]
    public void LaunchesAreCheckedAgainstTheKernelSignature()
    {
        var runtime = Emulator();
        ulong buffer = runtime.Allocate(64);
        try
        {
            float* x = (float*)buffer;
            var e = Assert.Throws<InvalidOperationException>(() => runtime.Launch(CudaKernelHandles.Elementwise.Fill, 1, 32, x, 16L))!;
            Assert.That(e.Message, Does.Contain("fill takes 3 arguments, launch passed 2"));
            e = Assert.Throws<InvalidOperationException>(() => runtime.Launch(CudaKernelHandles.Elementwise.Fill, 1, 32, x, 16, 1f))!;
            Assert.That(e.Message, Does.Contain("fill argument 1 is 8 bytes, launch passed 4"));
            e = Assert.Throws<InvalidOperationException>(() => runtime.Launch(new CudaKernel("elementwise.cu", "no_such_kernel"), 1, 32, x))!;
            Assert.That(e.Message, Does.Contain("no_such_kernel").And.Contain("cuda/elementwise.cu"));
            e = Assert.Throws<InvalidOperationException>(() => runtime.Launch(CudaKernelHandles.Elementwise.Fill, 1, 2048, x, 16L, 1f))!;
            Assert.That(e.Message, Does.Contain("invalid launch"));

            runtime.Launch(CudaKernelHandles.Elementwise.Fill, 1, 32, x, 16L, 2.5f);
            Assert.That(new ReadOnlySpan<float>(x, 16).ToArray(), Is.All.EqualTo(2.5f));
        }
        finally
        {
            runtime.Free(buffer);
        }
    }

    [Test]
    public void KernelLaunchesAllocateNothingManaged()
    {
        var device = Backends.Get("emulated-cuda");
        using var x = Tensor.Zeros(device, 4096);
        using var y = Tensor.Zeros(device, 4096);
        var k = device.Kernels;
        void Launches()
        {
            k.GeluForward(y.Data, x.Data, 4096);
            k.LayerNormForward(y.Data, null, null, x.Data, null, null, 64, 64, 1e-6f);
            k.AdamStep(x.Data, y.Data, x.Data, y.Data, null, 4096, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1, true, null);
        }
        Launches(); // JIT and first-use lookups
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 20; i++) Launches();
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
    }

    [Test]
    public void WithoutAGpuOpeningCudaReportsAReason()
    {
        if (CudaDevice.TryOpen(out var device, out _))
        {
            device!.Dispose();
            Assert.Ignore("a GPU is present; the no-GPU path is not reachable here");
        }
        Assert.That(CudaDevice.TryOpen(out var none, out var reason), Is.False);
        Assert.That(none, Is.Null);
        Assert.That(reason, Does.StartWith("no NVIDIA driver").Or.StartWith("no usable GPU").Or.StartWith("no GPU")
            .Or.StartWith("no NVRTC").Or.StartWith("no cuBLAS"));
        TestContext.Out.WriteLine(reason);
    }

    /// <summary>The GPU's 16-bit GEMM operands are converted into rows 16 bytes apart (precision.cu's
    /// convert_to_*_pitched, which cuBLAS's tensor-core kernels need and attention's 197-wide rows lack): every value
    /// lands at b·strideY + r·ldY + c, rounded to nearest even, and the padding is left alone.</summary>
    [Test]
    public void PitchedConversionPutsEveryRowOn16Bytes([Values] bool bf16)
    {
        using var runtime = Emulator();
        const int batch = 3, rows = 5, cols = 13, ldX = 17, ldY = 16;
        const long strideX = 100, strideY = rows * ldY;
        var x = Init.NormalValues((int)strideX * batch, 0f, 1f, 7);
        x[0] = 1f + MathF.Pow(2, -8);                      // a tie for bf16: rounds to the even 1.0
        ulong dx = runtime.Allocate(x.Length * sizeof(float)), dy = runtime.Allocate(batch * strideY * sizeof(ushort));
        try
        {
            fixed (float* px = x) runtime.CopyToDevice(dx, px, x.Length * sizeof(float));
            var sentinel = Enumerable.Repeat((ushort)0xABCD, (int)(batch * strideY)).ToArray();
            fixed (ushort* ps = sentinel) runtime.CopyToDevice(dy, ps, sentinel.Length * sizeof(ushort));
            var kernel = bf16 ? CudaKernelHandles.Precision.ConvertToBf16Pitched : CudaKernelHandles.Precision.ConvertToFp16Pitched;
            runtime.Launch(kernel, 4, 256, dy, dx, batch, rows, cols, (long)ldX, strideX, (long)ldY, strideY);
            var y = new ushort[batch * strideY];
            fixed (ushort* py = y) runtime.CopyToHost(py, dy, y.Length * sizeof(ushort));
            for (int b = 0; b < batch; b++)
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < ldY; c++)
                    {
                        ushort got = y[b * strideY + r * ldY + c];
                        if (c >= cols)
                        {
                            Assert.That(got, Is.EqualTo((ushort)0xABCD), $"padding at batch {b}, row {r}, column {c} was written");
                            continue;
                        }
                        float v = x[b * strideX + r * ldX + c];
                        ushort want = bf16 ? (ushort)(BitConverter.SingleToUInt32Bits(LowPrecision.Round(v, Precision.BF16)) >> 16)
                                           : BitConverter.HalfToUInt16Bits((Half)v);
                        Assert.That(got, Is.EqualTo(want), $"batch {b}, row {r}, column {c}: {v}");
                    }
        }
        finally
        {
            runtime.Free(dx);
            runtime.Free(dy);
        }
    }
}
