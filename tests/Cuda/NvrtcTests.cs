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

    [Test]
    public void ABrokenSourceReportsTheLogWithFileAndLine()
    {
        var e = Assert.Throws<CudaCompileException>(() => Nvrtc.Compile("extern \"C\" __global__ void k(float* x)\n{\n  x[0] = 1.f\n}\n", "bad.cu", "sm_80"))!;
        TestContext.Out.WriteLine(e.Message);
        Assert.That(e.Log, Does.Contain("bad.cu(4): error: expected a \";\""));
        Assert.That(e.Message, Does.Contain("bad.cu").And.Contain("sm_80").And.Contain("error"));
    }
}
