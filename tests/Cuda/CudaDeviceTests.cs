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
            // Shapes a GPU refuses are refused here too, before the kernel runs: blocks past 1024 threads, grid y or z past
            // 65535 (which the emulator's threads could run).
            foreach (var (grid, block) in new (Dim3, Dim3)[] { (1, 2048), (new Dim3(1, 65536), 32), (new Dim3(1, 1, 65536), 32), (new Dim3(1, 1, 0), 32), (1, new Dim3(1, 1, 128)) })
            {
                var refused = Assert.Throws<ArgumentException>(() => runtime.Launch(CudaKernelHandles.Elementwise.Fill, grid, block, x, 16L, 1f))!;
                Assert.That(refused.Message, Does.Contain("fill (cuda/elementwise.cu)").And.Contain($"grid ({grid.X}, {grid.Y}, {grid.Z})")
                    .And.Contain("outside CUDA's limits").And.Contain("y and z 1 to 65535"), $"grid {grid}, block {block}");
            }
            runtime.Launch(CudaKernelHandles.Elementwise.Fill, new Dim3(1, 65535, 1), 32, x, 16L, 1f); // the limit itself runs

            runtime.Launch(CudaKernelHandles.Elementwise.Fill, 1, 32, x, 16L, 2.5f);
            Assert.That(new ReadOnlySpan<float>(x, 16).ToArray(), Is.All.EqualTo(2.5f));
        }
        finally
        {
            runtime.Free(buffer);
        }
    }

    /// <summary>The fused attention's grids give each (image, head) pair a row of blocks, and Swin's windows give more
    /// pairs than a grid's y may hold (Swin-B at batch 256: 256 · 64 windows · 4 heads = 65,536), so larger batches run in
    /// launches of whole images, each starting at mask window 0. With the emulated device's grid limit lowered to 6, five
    /// images of 2 heads and 2 windows run as launches of 2, 2 and 1 images (3 would fit a grid, but the second launch
    /// would then start at window 1; one launch would be refused): every kernel
    /// of the three paths (FMA, tensor cores at head dim 32 and 64) gives the output, lse, dqkv, delta and the bias
    /// gradient bit for bit as in one launch. Below one mask's windows × heads the call is refused with the reason.</summary>
    [Test]
    public void FusedAttentionRunsInLaunchesOfWholeImagesPastTheGridLimit([Values(5, 32, 64)] int HD)
    {
        if (!CudaDevice.TryOpenEmulated(out var device, out var reason)) Assert.Ignore($"emulated CUDA device unavailable: {reason}");
        using var dev = device!;
        var runtime = (EmulatedRuntime)dev.Runtime;
        var k = dev.Kernels;
        const int B = 5, T = 37, NH = 2, nW = 2;
        int C = NH * HD;
        float scale = 1f / MathF.Sqrt(HD);
        k.GemmPrecision = HD switch { 32 => Precision.BF16, 64 => Precision.FP16, _ => Precision.FP32 };
        Assert.That(((CudaKernels)k).UsesTensorCoreAttention(HD), Is.EqualTo(HD != 5));
        float[] Values(ulong seed, int n) => [.. Enumerable.Range(0, n).Select(i => CounterRng.Uniform(seed, (ulong)i) * 2 - 1)];
        using var qkv = Tensor.FromArray(dev, Values(1, B * T * 3 * C), B, T, 3 * C);
        using var bias = Tensor.FromArray(dev, Values(2, NH * T * T), NH, T, T);
        using var mask = Tensor.FromArray(dev, [.. Values(3, nW * T * T).Select(v => v < -0.4f ? -100f : 0f)], nW, T, T);
        using var dy = Tensor.FromArray(dev, Values(4, B * T * C), B, T, C);
        using var y = Tensor.Empty(dev, DType.F32, B, T, C);
        using var lse = Tensor.Empty(dev, DType.F32, B, NH, T);
        float[][] Run(int gridLimit)
        {
            runtime.GridLimit = gridLimit;
            using var dqkv = Tensor.Zeros(dev, B, T, 3 * C);
            using var delta = Tensor.Empty(dev, DType.F32, B, NH, T);
            using var dbias = Tensor.Zeros(dev, NH, T, T);
            k.FusedAttentionForward(y.Data, null, lse.Data, qkv.Data, bias.Data, mask.Data, B, T, NH, HD, nW, scale);
            k.FusedAttentionBackward(dqkv.Data, null, dbias.Data, delta.Data, dy.Data, y.Data, lse.Data, qkv.Data, bias.Data, mask.Data,
                B, T, NH, HD, nW, scale, accumulate: false);
            return [y.ToArray(), lse.ToArray(), dqkv.ToArray(), delta.ToArray(), dbias.ToArray()];
        }
        var oneLaunch = Run(65535);
        var chunked = Run(6);
        string[] names = ["y", "lse", "dqkv", "delta", "dbias"];
        for (int i = 0; i < names.Length; i++)
        {
            Assert.That(oneLaunch[i], Has.None.NaN, names[i]);
            Assert.That(chunked[i].Select(BitConverter.SingleToInt32Bits), Is.EqualTo(oneLaunch[i].Select(BitConverter.SingleToInt32Bits)), names[i]);
        }
        runtime.GridLimit = 3;
        var e = Assert.Throws<ArgumentException>(() => k.FusedAttentionForward(y.Data, null, lse.Data, qkv.Data, bias.Data, mask.Data, B, T, NH, HD, nW, scale))!;
        Assert.That(e.Message, Does.Contain("2 mask windows × 2 heads are more (image, head) pairs than a grid's y may hold (3)"));
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
            k.GeluForward(y.Data, null, x.Data, 4096);
            k.LayerNormForward(y.Data, null, null, null, x.Data, null, null, 64, 64, 1e-6f);
            k.AdamStep(x.Data, y.Data, x.Data, y.Data, null, 4096, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1, true, null);
        }
        Launches(); // JIT and first-use lookups
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 20; i++) Launches();
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
    }

    /// <summary>A GPU hands out memory holding whatever it held (zeros, or a previous step's values in a pooled
    /// buffer); the emulated device hands out NaN bytes instead, fresh or from the pool, so a kernel that reads what
    /// nothing wrote fails its checks rather than reading plausible numbers.</summary>
    [Test]
    public void UnwrittenMemoryIsNaNFreshOrFromThePool()
    {
        var device = Backends.Get("emulated-cuda");
        using (var written = Tensor.Zeros(device, 1000)) Assert.That(written.ToArray(), Is.All.EqualTo(0f));
        long hits = device.Pool.Hits;
        using var reused = Tensor.Empty(device, DType.F32, 1000);
        Assert.That(device.Pool.Hits, Is.EqualTo(hits + 1), "the zeros' buffer came back from the pool");
        Assert.That(reused.ToArray(), Is.All.NaN);
        using var indices = Tensor.Empty(device, DType.I32, 333);
        Assert.That(indices.ToIntArray(), Is.All.EqualTo(-1));
        using var halves = Tensor.Empty(device, DType.BF16, 64);
        var bits = new ushort[64];
        fixed (ushort* host = bits) device.CopyToHost(host, halves.HalfData, 128);
        Assert.That(bits.Select(b => (float)BitConverter.UInt16BitsToHalf(b)), Is.All.NaN, "0xFFFF is NaN in bf16 and fp16");

        var runtime = ((CudaDevice)device).Runtime;
        ulong scratch = runtime.Allocate(256);
        try
        {
            Assert.That(new ReadOnlySpan<float>((void*)scratch, 64).ToArray(), Is.All.NaN);
        }
        finally
        {
            runtime.Free(scratch);
        }
    }

    /// <summary>A library built with ASan (tools/sanitize-emulator.sh) would abort the process as it loads without ASan's
    /// runtime preloaded; the device refuses to open instead, saying what to set.</summary>
    [Test]
    public void AnAsanBuildWithoutItsRuntimePreloadedIsRefusedWithTheFix()
    {
        Emulator();
        var (code, stdout, _) = CliTests.Peft(new Dictionary<string, string?> { ["PEFT_CUEMU_CXXFLAGS"] = "-fsanitize=address -g", ["LD_PRELOAD"] = null },
            "selftest", "--device", "emulated-cuda", "--filter", "Gelu");
        Assert.That(code, Is.EqualTo(3), "selftest's exit code for a device it cannot open");
        Assert.That(stdout, Does.StartWith("no emulated CUDA device: PEFT_CUEMU_CXXFLAGS builds the emulated CUDA device with -fsanitize=address")
            .And.Contain("LD_PRELOAD=$(g++ -print-file-name=libasan.so)"));
    }

    /// <summary><c>cuda</c> is GPU 0 and <c>cuda:N</c> GPU N, as PyTorch names them; anything after <c>cuda:</c> but an
    /// index is refused naming the device; a GPU the driver does not have is reported, not opened.</summary>
    [Test]
    public void GpuNamesGiveTheirIndex()
    {
        Assert.That(CudaDevice.GpuOrdinal("cuda"), Is.EqualTo(0));
        Assert.That(CudaDevice.GpuOrdinal("cuda:0"), Is.EqualTo(0));
        Assert.That(CudaDevice.GpuOrdinal("cuda:3"), Is.EqualTo(3));
        foreach (var other in new[] { "cpu", "emulated-cuda", "cudax", "CUDA" }) Assert.That(CudaDevice.GpuOrdinal(other), Is.Null, other);
        foreach (var bad in new[] { "cuda:", "cuda:-1", "cuda:1.5", "cuda: 1", "cuda:x", "cuda:99999999999" })
            Assert.That(Assert.Throws<ArgumentException>(() => CudaDevice.GpuOrdinal(bad))!.Message,
                Is.EqualTo($"device '{bad}': cuda:N takes a GPU's index, a whole number from 0"));
        Assert.That(CudaDevice.TryOpen("cuda:4096", out var none, out var reason), Is.False);
        Assert.That(none, Is.Null);
        Assert.That(reason, Does.StartWith("no "));
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
}
