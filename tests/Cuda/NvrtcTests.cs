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

    static readonly string[] SpillArchitectures = ["sm_70", "sm_80", "sm_90"];

    /// <summary>Every family's cubin for each of <see cref="SpillArchitectures"/> (with ptxas's report) and attention.cu's
    /// PTX for compute_70 and compute_80, compiled once for the tests below and all at once: NVRTC compiles a program on
    /// one thread, and attention.cu, started first, is two thirds of the work.</summary>
    static readonly Lazy<IReadOnlyDictionary<(string File, string Arch), (byte[] Image, IReadOnlyList<PtxasReport> Kernels)>> Compiled = new(() =>
    {
        var jobs = SpillArchitectures
            .SelectMany(arch => KernelSources.KernelFiles.Select(file => (File: file, Arch: arch)))
            .Concat(new[] { "compute_80", "compute_70" }.Select(arch => (File: "attention.cu", Arch: arch)))
            .OrderByDescending(job => KernelSources.Files[job.File].Length).ThenByDescending(job => job.Arch.StartsWith("sm_", StringComparison.Ordinal))
            .ToList();
        var compiled = new System.Collections.Concurrent.ConcurrentDictionary<(string File, string Arch), (byte[] Image, IReadOnlyList<PtxasReport> Kernels)>();
        Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(jobs, System.Collections.Concurrent.EnumerablePartitionerOptions.NoBuffering),
            job => compiled[(job.File, job.Arch)] = PtxasReport.Compile(job.File, job.Arch));
        return compiled;
    });

    /// <summary>The kernels that may keep a stack frame: the FMA fused attention's per-row state, indexed by a run-time
    /// head dim and row count. A GPU runs them only where a call asks for the fused path without tensor cores (the
    /// emulated device's default); elsewhere a frame is an array that ptxas could not keep in registers (a value array
    /// indexed by a run-time count, a by-value struct indexed by a run-time dim), a local-memory round trip per use.</summary>
    static readonly string[] KernelsWithStack = ["fused_attention_forward", "fused_attention_backward_dq", "fused_attention_backward_dkdv"];

    /// <summary>Every family compiles to a cubin with a symbol for each kernel, with the engine's options plus ptxas's
    /// report, and no kernel spills registers to local memory (a spill costs a memory round trip where the kernel needs
    /// the value; a kernel that wants more registers than it may have is a slow kernel, not an error) or keeps a stack
    /// frame, but for <see cref="KernelsWithStack"/>. Each kernel's registers, stack frame and static shared memory are
    /// printed.</summary>
    [TestCaseSource(nameof(SpillArchitectures))]
    public void EveryKernelFamilyCompilesWithoutSpills(string arch)
    {
        var files = KernelSources.KernelFiles.ToArray();
        Assert.That(files, Has.Length.GreaterThanOrEqualTo(12));
        var compiled = files.ToDictionary(file => file, file => Compiled.Value[(file, arch)]);
        var report = new List<string>();
        foreach (var file in files)
        {
            var (image, kernels) = compiled[file];
            string symbols = System.Text.Encoding.Latin1.GetString(image);
            Assert.That(image.Take(4), Is.EqualTo("\x7f"u8.ToArray().Concat("ELF"u8.ToArray())), file);
            foreach (var kernel in KernelSources.KernelNames(file))
                Assert.That(symbols, Does.Contain(kernel + "\0"), $"{file} ({arch}): no symbol for kernel {kernel}");
            foreach (var k in kernels)
            {
                Assert.That(k.SpillStoreBytes, Is.Zero, $"{file} ({arch}): {k.Kernel} spills registers (stores)");
                Assert.That(k.SpillLoadBytes, Is.Zero, $"{file} ({arch}): {k.Kernel} spills registers (loads)");
                if (!KernelsWithStack.Contains(k.Kernel))
                    Assert.That(k.StackBytes, Is.Zero, $"{file} ({arch}): {k.Kernel} keeps a {k.StackBytes}-byte stack frame (local memory)");
                report.Add($"{k.Kernel,-36} {k.Registers,4} registers {k.StackBytes,4} B stack {k.SharedBytes,6} B shared");
            }
            Assert.That(kernels.Select(k => k.Kernel), Is.EquivalentTo(KernelSources.KernelNames(file)), $"{file} ({arch}): the kernels ptxas reported on");
        }
        TestContext.Out.WriteLine($"{arch}: {files.Length} files, {KernelSources.FileOfKernel.Count} kernels, {compiled.Values.Sum(c => c.Image.Length)} bytes of cubin");
        foreach (var line in report) TestContext.Out.WriteLine(line);
    }

    /// <summary>The tensor-core attention kernels issue mma.sync from compute capability 8.0 (and round pairs with one
    /// cvt); below it the engine never launches them, and their build traps instead of compiling the product's
    /// emulation, which the emulated device alone runs.</summary>
    [Test]
    public void TensorCoreAttentionUsesMmaFromSm80AndTrapsBelow()
    {
        string Ptx(string arch) => System.Text.Encoding.ASCII.GetString(Compiled.Value[("attention.cu", arch)].Image);
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

    /// <summary>From compute capability 8.0 a float becomes bf16 or fp16 in one cvt instruction (common.cuh's to_bf16,
    /// to_fp16); below it, and on the emulated device, the portable rounding does it. attention.cu's gradient copies
    /// take both.</summary>
    [Test]
    public void SixteenBitConversionsAreOneInstructionFromSm80()
    {
        string Ptx(string arch) => System.Text.Encoding.ASCII.GetString(Compiled.Value[("attention.cu", arch)].Image);
        Assert.That(Ptx("compute_80"), Does.Contain("cvt.rn.bf16.f32 ").And.Contain("cvt.rn.f16.f32 "));
        Assert.That(Ptx("compute_70"), Does.Not.Contain("cvt.rn.bf16.f32 ").And.Not.Contain("cvt.rn.f16.f32 "));
    }

    /// <summary>Every load and store of the tensor-core attention kernels names its state space in the PTX (ld.global,
    /// st.shared, ...). A generic one (`st.u16`) is what NVRTC emits when it cannot follow a pointer: a shared tile
    /// reached through a struct member, or an operand picked by a select against null. The hardware must then resolve
    /// each address at run time, and ptxas must assume a generic store may alias the loads around it.</summary>
    [Test]
    public void TensorCoreAttentionNamesTheStateSpaceOfEveryAccess()
    {
        string ptx = System.Text.Encoding.ASCII.GetString(Compiled.Value[("attention.cu", "compute_80")].Image);
        var generic = new System.Text.RegularExpressions.Regex(@"^\s*(?:@!?%p\d+\s+)?(?:ld|st)(?:\.v[248])?\.[bfsu]\d+\s", System.Text.RegularExpressions.RegexOptions.Multiline);
        foreach (var kernel in new[] { "fused_attention_forward_tc", "fused_attention_backward_dq_tc", "fused_attention_backward_dkdv_tc" }
                     .SelectMany(k => new[] { k, k + "32" }))
        {
            int start = ptx.IndexOf($".entry {kernel}(", StringComparison.Ordinal);
            Assert.That(start, Is.GreaterThanOrEqualTo(0), $"no {kernel} in the PTX");
            int end = ptx.IndexOf(".entry ", start + 7, StringComparison.Ordinal);
            string body = end < 0 ? ptx[start..] : ptx[start..end];
            var found = generic.Matches(body).Select(m => m.Value.Trim()).ToList();
            Assert.That(found, Is.Empty, $"{kernel}: {found.Count} generic loads or stores, e.g. {found.FirstOrDefault()}");
            Assert.That(body, Does.Contain("st.shared.").And.Contain("ld.shared."), kernel);
        }
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
