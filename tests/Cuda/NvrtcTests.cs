using Engine.Kernels.Cuda;

namespace Engine.Tests;

/// <summary>NVRTC through our own bindings: CUDA compiles to cubin for three architectures with no GPU, and a broken
/// source reports the compiler log. Skipped with the reason when no NVRTC library is installed.</summary>
[TestFixture]
public class NvrtcTests
{
    const string Kernel = """
        extern "C" __global__ void row_sum(const float* x, float* y, int C)
        {
            __shared__ float partial[32];
            float s = 0.f;
            for (int i = threadIdx.x; i < C; i += blockDim.x) s += x[blockIdx.x * C + i];
            for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
            if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = s;
            __syncthreads();
            if (threadIdx.x == 0) {
                float t = 0.f;
                for (int w = 0; w < (blockDim.x + 31) / 32; w++) t += partial[w];
                y[blockIdx.x] = t;
            }
        }
        """;

    [SetUp]
    public void RequireNvrtc()
    {
        if (!Nvrtc.IsAvailable(out var reason)) Assert.Ignore($"NVRTC unavailable: {reason}");
    }

    [TestCase("sm_70"), TestCase("sm_80"), TestCase("sm_90")]
    public void CompilesToCubinForEachArchitecture(string arch)
    {
        var (image, _) = Nvrtc.Compile(Kernel, "row_sum.cu", arch);
        TestContext.Out.WriteLine($"NVRTC {Nvrtc.Version}: {arch} cubin {image.Length} bytes");
        Assert.That(image.Take(4), Is.EqualTo("\x7f"u8.ToArray().Concat("ELF"u8.ToArray())), "a cubin is an ELF image");
    }

    [Test]
    public void CompilesToPtxForAVirtualArchitecture()
    {
        var (image, _) = Nvrtc.Compile(Kernel, "row_sum.cu", "compute_80");
        string ptx = System.Text.Encoding.ASCII.GetString(image);
        Assert.That(ptx, Does.Contain(".target sm_80").And.Contain("row_sum").And.Contain("shfl.sync.down"));
    }

    [TestCase("sm_70"), TestCase("sm_80"), TestCase("sm_90")]
    public void EveryKernelFamilyCompiles(string arch)
    {
        var dir = Files.TempDir();
        var files = KernelSources.KernelFiles.ToArray();
        Assert.That(files, Has.Length.GreaterThanOrEqualTo(12));
        var images = new System.Collections.Concurrent.ConcurrentDictionary<string, byte[]>();
        Parallel.ForEach(files, file => images[file] = KernelCache.GetOrCompile(file, arch, dir).Image);
        foreach (var file in files)
        {
            string symbols = System.Text.Encoding.Latin1.GetString(images[file]);
            Assert.That(images[file].Take(4), Is.EqualTo("\x7f"u8.ToArray().Concat("ELF"u8.ToArray())), file);
            foreach (var kernel in KernelSources.KernelNames(file))
                Assert.That(symbols, Does.Contain(kernel + "\0"), $"{file} ({arch}): no symbol for kernel {kernel}");
        }
        TestContext.Out.WriteLine($"{arch}: {files.Length} files, {KernelSources.FileOfKernel.Count} kernels, {images.Values.Sum(i => i.Length)} bytes of cubin");
    }

    /// <summary>The tensor-core attention kernels issue mma.sync from compute capability 8.0 (and round pairs with one
    /// cvt); below it the engine never launches them, and their build traps instead of compiling the product's
    /// emulation, which the emulated device alone runs.</summary>
    [Test]
    public void TensorCoreAttentionUsesMmaFromSm80AndTrapsBelow()
    {
        string Ptx(string arch) => System.Text.Encoding.ASCII.GetString(KernelCache.GetOrCompile("attention.cu", arch, Files.TempDir()).Image);
        string Body(string ptx, string kernel)
        {
            int start = ptx.IndexOf($".entry {kernel}(", StringComparison.Ordinal);
            Assert.That(start, Is.GreaterThanOrEqualTo(0), $"no {kernel} in the PTX");
            int end = ptx.IndexOf(".entry ", start + 7, StringComparison.Ordinal);
            return end < 0 ? ptx[start..] : ptx[start..end];
        }
        string sm80 = Ptx("compute_80"), sm70 = Ptx("compute_70");
        foreach (var kernel in new[] { "fused_attention_forward_tc", "fused_attention_backward_dq_tc", "fused_attention_backward_dkdv_tc" })
        {
            Assert.That(Body(sm80, kernel), Does.Contain("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32").And.Not.Contain("trap;"), kernel);
            Assert.That(Body(sm70, kernel), Does.Contain("trap;").And.Not.Contain("mma.sync"), kernel);
        }
        Assert.That(Body(sm70, "fused_attention_forward"), Does.Not.Contain("trap;"), "the FMA kernels run everywhere");
    }

    [Test]
    public void TheKernelCacheHitsOnTheSecondCompileAndMissesOnAnEdit()
    {
        var dir = Files.TempDir();
        var first = KernelCache.GetOrCompile("reductions.cu", "sm_80", dir);
        var second = KernelCache.GetOrCompile("reductions.cu", "sm_80", dir);
        Assert.That((first.Hit, second.Hit), Is.EqualTo((false, true)));
        Assert.That(second.Image, Is.EqualTo(first.Image));
        var headers = new Dictionary<string, string> { [KernelSources.CommonHeader] = KernelSources.Files[KernelSources.CommonHeader] + "\n// edited\n" };
        Assert.That(KernelCache.GetOrCompile("reductions.cu", KernelSources.Files["reductions.cu"], headers, "sm_80", dir).Hit, Is.False,
            "an edited header must not reuse the cached image");
        Assert.That(KernelCache.GetOrCompile("reductions.cu", "sm_90", dir).Hit, Is.False, "another architecture is another image");
        Assert.That(Directory.GetFiles(dir), Has.Length.EqualTo(3));
    }

    [Test]
    public void TemplateKernelsAreFoundThroughTheirLoweredNames()
    {
        const string source = "template <class T, int N> __global__ void scale(T* x) { x[threadIdx.x] *= N; }\n";
        var lowered = Nvrtc.LoweredNames(source, "scale.cu", "compute_80", ["scale<float, 256>"]);
        Assert.That(lowered["scale<float, 256>"], Is.EqualTo("_Z5scaleIfLi256EEvPT_"));
    }

    [Test]
    public void SupportedArchitecturesCoverVoltaToHopper()
    {
        Assert.That(Nvrtc.SupportedArchitectures, Is.SupersetOf(new[] { 70, 75, 80, 86, 89, 90 }));
    }

    [Test]
    public void ABrokenSourceReportsTheLogWithFileAndLine()
    {
        var e = Assert.Throws<CudaCompileException>(() => Nvrtc.Compile("extern \"C\" __global__ void k(float* x)\n{\n  x[0] = 1.f\n}\n", "bad.cu", "sm_80"))!;
        TestContext.Out.WriteLine(e.Message);
        Assert.That(e.Log, Does.Contain("bad.cu(4): error: expected a \";\""));
        Assert.That(e.Message, Does.Contain("bad.cu").And.Contain("sm_80").And.Contain("error"));
    }
}
