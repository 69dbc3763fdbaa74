using Engine.Kernels;
using Engine.Models;
using Engine.Models.Peft;
using Engine.Models.Training;
using Engine.Models.Vit;
using Engine.Optim;

namespace Engine.Tests;

/// <summary>CUDA graphs (<see cref="CudaDevice.Capture"/>, <see cref="TrainStep.CudaGraph"/>): a capture runs nothing,
/// a replay runs what was recorded on whatever the captured inputs hold, host work inside a capture is refused with
/// the reason, the graph's buffers stay its own, and graphed training steps are bit for bit the ordinary ones.</summary>
[TestFixture, NonParallelizable]
public unsafe class CudaGraphTests
{
    public static IEnumerable<string> CudaBackends => ["emulated-cuda", "cuda"];

    static CudaDevice Open(string backend) => (CudaDevice)Backends.Get(backend);

    static float[] Values(int n, ulong seed) => Enumerable.Range(0, n).Select(i => CounterRng.Uniform(seed, (ulong)i) * 2 - 1).ToArray();

    [TestCaseSource(nameof(CudaBackends))]
    public void AReplayRunsTheRecordedWorkOnWhatTheInputsHoldNow(string backend)
    {
        var device = Open(backend);
        using var x = Tensor.FromArray(device, Values(6 * 40, 1), 6, 40);
        using var w = Tensor.FromArray(device, Values(24 * 40, 2), 24, 40);
        using var gamma = Tensor.FromArray(device, Values(40, 3), 40);
        using var beta = Tensor.FromArray(device, Values(40, 4), 40);
        using var y = Tensor.Zeros(device, 6, 24);
        Tensor Chain(Tensor input)
        {
            using var normed = Ops.LayerNorm(input, gamma, beta, 1e-6f);
            using var product = Ops.Linear(normed, w);
            return Ops.Gelu(product);
        }
        using var graph = device.Capture(() =>
        {
            using var result = Chain(x);
            device.Kernels.Copy(y.Data, result.Data, y.Count, false);
        });
        Assert.That(y.ToArray(), Is.All.EqualTo(0f), "capturing records the work without running it");
        foreach (ulong seed in new ulong[] { 1, 5 })
        {
            x.CopyFrom(Values(6 * 40, seed));
            graph.Replay();
            using var expected = Chain(x);
            Assert.That(y.ToArray(), Is.EqualTo(expected.ToArray()), $"replay on inputs {seed}");
        }
    }

    [TestCaseSource(nameof(CudaBackends))]
    public void ReplaysDrawNewDropoutMasksFromTheSeedOffset(string backend)
    {
        var device = Open(backend);
        const int n = 4096;
        using var x = Tensor.FromArray(device, Enumerable.Repeat(1f, n).ToArray(), 64, 64);
        using var y = Tensor.Zeros(device, 64, 64);
        using var graph = device.Capture(() =>
        {
            using var dropped = Ops.DropPath(x, 0.5f, 11);
            device.Kernels.Copy(y.Data, dropped.Data, n, false);
        });
        var masks = new List<float[]>();
        foreach (ulong offset in new ulong[] { 0, 0xA5A5, 0x1234_5678_9ABC })
        {
            device.SetGraphSeedOffset(offset);
            graph.Replay();
            masks.Add(y.ToArray());
            using var expected = Tensor.Empty(device, DType.F32, 64, 64);
            device.Kernels.DropPathForward(expected.Data, x.Data, 64, 64, 0.5f, 11 ^ offset, null);
            Assert.That(masks[^1], Is.EqualTo(expected.ToArray()), $"offset {offset:X}: the mask of seed ^ offset");
        }
        Assert.That(masks.Distinct(new MaskComparer()).Count(), Is.EqualTo(3), "each offset draws another mask");
    }

    sealed class MaskComparer : IEqualityComparer<float[]>
    {
        public bool Equals(float[]? a, float[]? b) => a!.SequenceEqual(b!);
        public int GetHashCode(float[] a) => a.Length;
    }

    [TestCaseSource(nameof(CudaBackends))]
    public void HostWorkInsideACaptureIsRefusedWithTheReason(string backend)
    {
        var device = Open(backend);
        using var x = Tensor.FromArray(device, Values(64, 1), 8, 8);
        var read = Assert.Throws<InvalidOperationException>(() => device.Capture(() =>
        {
            using var y = Ops.Gelu(x);
            y.ToArray();
        }))!;
        Assert.That(read.Message, Does.Contain("a copy to host memory while a CUDA graph is being captured"));
        var write = Assert.Throws<InvalidOperationException>(() => device.Capture(() => x.CopyFrom(new float[64])))!;
        Assert.That(write.Message, Does.Contain("a copy from host memory"));
        Assert.That(device.IsCapturing, Is.False, "a failed capture ends");
        using var after = Ops.Gelu(x);
        Assert.That(after.ToArray(), Has.Length.EqualTo(64), "the device works as before");
    }

    [TestCaseSource(nameof(CudaBackends))]
    public void TheGraphsBuffersAreNotLentToAnyoneElseWhileItLives(string backend)
    {
        var device = Open(backend);
        const int n = 12_345; // a size no other test rents
        using var x = Tensor.Zeros(device, n);
        nint rentedInside = 0;
        var graph = device.Capture(() =>
        {
            using var y = Ops.Gelu(x);
            rentedInside = (nint)y.Data;
        });
        Assert.That(graph.ReservedBytes, Is.GreaterThanOrEqualTo(n * sizeof(float)));
        using (var other = Tensor.Empty(device, DType.F32, n))
            Assert.That((nint)other.Data, Is.Not.EqualTo(rentedInside), "the replays write that buffer");
        graph.Dispose();
        using var again = Tensor.Empty(device, DType.F32, n);
        var addresses = new List<nint> { (nint)again.Data };
        using var more = Tensor.Empty(device, DType.F32, n);
        addresses.Add((nint)more.Data);
        Assert.That(addresses, Does.Contain(rentedInside), "disposing the graph gives its buffers back to the pool");
    }

    const int Size = TinyModels.Size, Classes = TinyModels.Classes;

    static IImageClassifier Create(string family, Device device) => family switch
    {
        "vit-drop-path" => new VisionTransformer(device, new VitConfig
        {
            img_size = Size, patch_size = 4, embed_dim = 32, depth = 2, num_heads = 2, num_classes = Classes, drop_path_rate = 0.5f, drop_rate = 0.2f,
        }, seed: 3),
        _ => TinyModels.Create(family, device),
    };

    static GraphCheck.Result Train(string family, string method, Device device, bool graph, Precision precision = Precision.FP32,
        bool clip = false) => GraphCheck.Train(Create(family, device), Classes, method, graph, clip, precision);

    [Test]
    public void GraphedTrainingStepsAreTheOrdinaryOnesBitForBit([Values("vit", "swin", "convnext")] string family,
        [Values("full", "ssf", "gps")] string method, [Values] bool clip, [ValueSource(nameof(CudaBackends))] string backend)
    {
        var device = Open(backend);
        var eager = Train(family, method, device, graph: false, clip: clip);
        var graphed = Train(family, method, device, graph: true, clip: clip);
        Assert.That(eager.Replays, Is.Zero);
        Assert.That(GraphCheck.Compare(eager, graphed), Is.Empty, "steps 2, 3, 5 and 6 replay, bit for bit the ordinary steps");
    }

    /// <summary>With drop path and dropout the graphed steps train too, drawing other masks than the ordinary steps
    /// (the captured seed XOR a new offset per replay).</summary>
    [TestCaseSource(nameof(CudaBackends))]
    public void GraphedStepsTrainWithDropPathAndDropout(string backend)
    {
        var device = Open(backend);
        var eager = Train("vit-drop-path", "ssf", device, graph: false);
        var graphed = Train("vit-drop-path", "ssf", device, graph: true);
        Assert.That(graphed.Replays, Is.EqualTo(4));
        Assert.That(graphed.Losses, Has.All.Matches<float>(float.IsFinite));
        Assert.That(graphed.Losses[0], Is.EqualTo(eager.Losses[0]), "the first step runs without the graph");
        Assert.That(graphed.Losses[1..], Is.Not.EqualTo(eager.Losses[1..]), "replays draw their own masks");
    }

    /// <summary>A replayed step whose loss is not finite throws and steps nothing, as an ordinary one: the optimizer
    /// inside the graph reads the loss as its gate.</summary>
    /// <summary>The check <c>peft selftest</c> runs on a GPU passes on the emulated device, and reports a graph that
    /// replays something else: one whose captured input is never refreshed.</summary>
    [TestCaseSource(nameof(CudaBackends))]
    public void TheSelftestsGraphCheckPassesAndNamesWhatDiffers(string backend)
    {
        var device = Open(backend);
        var (cases, passed) = GraphCheck.Check(device);
        Assert.That(cases, Has.Count.EqualTo(6));
        Assert.That(cases.Where(c => c.Failure != null).Select(c => $"{c.Case}: {c.Failure}"), Is.Empty);
        Assert.That(passed, Is.True);
        var ordinary = Train("vit", "ssf", device, graph: false);
        var tampered = ordinary with { Losses = [.. ordinary.Losses.Select((l, i) => i == 4 ? l + 1e-3f : l)], Replays = 3 };
        Assert.That(GraphCheck.Compare(ordinary, tampered),
            Is.EquivalentTo(new[] { "3 steps replayed the graph, expected 4 (steps 2, 3, 5, 6)", $"step 5: loss {tampered.Losses[4]:G9} replayed, {ordinary.Losses[4]:G9} ordinary" }));
    }

    [TestCaseSource(nameof(CudaBackends))]
    public void ANonFiniteLossStepsNothingInsideTheGraphEither(string backend)
    {
        var device = Open(backend);
        (float[][] Before, float[][] After, int Steps, string Message) Run(bool graph)
        {
            using var model = Create("vit", device);
            using var adam = new Adam(model.Parameters, new AdamOptions { LearningRate = 1e-2f });
            using var step = new TrainStep(adam) { CudaGraph = graph, Context = "nan" };
            var pixels = Values(2 * 3 * Size * Size, 5);
            using var targets = Tensor.FromArray(device, [1, 3], 2);
            for (int i = 0; i < 3; i++)
            {
                using var images = Tensor.FromArray(device, pixels, 2, 3, Size, Size);
                step.Run(images, targets, x => model.Forward(x), (logits, t) => Ops.CrossEntropy(logits, t));
            }
            var before = model.Parameters.Select(p => p.ToArray()).ToArray();
            pixels[17] = float.NaN;
            using var poisoned = Tensor.FromArray(device, pixels, 2, 3, Size, Size);
            var error = Assert.Throws<DivergedException>(() => step.Run(poisoned, targets, x => model.Forward(x), (logits, t) => Ops.CrossEntropy(logits, t)))!;
            Assert.That(step.GraphReplays, Is.EqualTo(graph ? 3 : 0), "steps 2 and 3 replayed, and the poisoned fourth");
            return (before, model.Parameters.Select(p => p.ToArray()).ToArray(), adam.StepCount, error.Message);
        }
        var eager = Run(graph: false);
        var graphed = Run(graph: true);
        Assert.That(graphed.After, Is.EqualTo(graphed.Before), "nothing stepped");
        Assert.That(graphed.After, Is.EqualTo(eager.After));
        Assert.That(graphed.Steps, Is.EqualTo(3).And.EqualTo(eager.Steps), "the skipped step is not counted");
        Assert.That(graphed.Message, Is.EqualTo(eager.Message).And.StartsWith("nan: the loss is NaN at step 4"));
    }

    [TestCaseSource(nameof(CudaBackends))]
    public void AGraphedFp16StepKeepsItsLossScaleOnTheDevice(string backend)
    {
        var device = Open(backend);
        var eager = Train("vit", "ssf", device, graph: false, Precision.FP16);
        var graphed = Train("vit", "ssf", device, graph: true, Precision.FP16);
        Assert.That(GraphCheck.Compare(eager, graphed), Is.Empty);
    }
}
