using BenchmarkDotNet.Attributes;
using Engine.Autograd;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Models;

namespace Engine.Bench;

/// <summary>Eval-mode forward (224×224, 1000 classes) of ViT-B/16, Swin-B and ConvNeXt-B on the CPU backend at batch 1
/// and 8. After the timed runs, an instrumented pass splits the forward's time by kernel, giving the share spent in
/// GEMMs. <c>bash bench/run.sh --filter '*Forward*'</c>.</summary>
[Config(typeof(BenchConfig))]
public class ForwardBenchmarks
{
    /// <summary>The timm preset.</summary>
    [Params("vit_base_patch16_224", "swin_base_patch4_window7_224", "convnext_base")]
    public string Model { get; set; } = "";

    /// <summary>Images per forward.</summary>
    [Params(1, 8)]
    public int Batch { get; set; }

    /// <summary>Per model and batch size: the forward's kernel time split (filled by <see cref="Cleanup"/>).</summary>
    public static Dictionary<(string Model, int Batch), Breakdown> Breakdowns { get; } = new();

    /// <summary>Wall time of one instrumented forward and the time, calls and flops per kernel inside it.</summary>
    public sealed record Breakdown(double ForwardSeconds, double GemmSeconds, long GemmFlops, IReadOnlyList<(string Kernel, double Seconds)> Others);

    InstrumentedKernels _kernels = null!;
    IImageClassifier _model = null!;
    Tensor _images = null!;

    /// <summary>Builds the model (random timm init) and a random batch.</summary>
    [GlobalSetup]
    public void Setup()
    {
        CpuParallel.Threads = Environment.ProcessorCount;
        _kernels = new InstrumentedKernels(new CpuKernels());
        var device = new CpuDevice(_kernels);
        _model = ImageModels.Create(device, Model, seed: 1);
        int s = _model.ImageSize;
        _images = Tensor.FromArray(device, Init.NormalValues(Batch * 3 * s * s, 0f, 1f, 2), Batch, 3, s, s);
    }

    /// <summary>One eval-mode forward.</summary>
    [Benchmark]
    public void Forward()
    {
        using var _ = Tape.NoGrad();
        using var logits = _model.Forward(_images);
    }

    /// <summary>Measures the kernel split over three forwards, then frees the model.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _kernels.Timing = true;
        _kernels.Reset();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        const int runs = 3;
        for (int i = 0; i < runs; i++) Forward();
        double total = clock.Elapsed.TotalSeconds / runs;
        _kernels.Timing = false;
        double gemm = KernelSplit.Gemms.Sum(k => _kernels.Time(k).TotalSeconds) / runs;
        var others = Enum.GetValues<KernelId>().Where(k => !KernelSplit.Gemms.Contains(k))
            .Select(k => (k.ToString(), _kernels.Time(k).TotalSeconds / runs)).Where(k => k.Item2 > 0).OrderByDescending(k => k.Item2).ToList();
        Breakdowns[(Model, Batch)] = new Breakdown(total, gemm, _kernels.Flops / runs, others);
        _model.Dispose();
        _images.Dispose();
    }
}
