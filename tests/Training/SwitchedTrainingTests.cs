using Engine.Autograd;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Models.Peft;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>The engine's switches that change how a step is computed and never what: a backward zeroes its small
/// intermediate gradients (SSF's scale and shift folded into each layer: [C] vectors the layers' backwards add to) with
/// one fill of one buffer (<see cref="Tape.ZeroSmallGradientsTogether"/>), and a forward folds every site's affine at
/// once (<see cref="SiteComputation.FoldAffinesTogether"/>, one <see cref="Ops.ScaleShiftMany"/>). With either on,
/// training is bit for bit the run with it off, and the kernels are called as few times as each promises.</summary>
[TestFixture, NonParallelizable]
public unsafe class SwitchedTrainingTests
{
    static readonly Dictionary<string, (Func<bool> Get, Action<bool> Set)> Switches = new()
    {
        [nameof(Tape.ZeroSmallGradientsTogether)] = (() => Tape.ZeroSmallGradientsTogether, v => Tape.ZeroSmallGradientsTogether = v),
        [nameof(SiteComputation.FoldAffinesTogether)] = (() => SiteComputation.FoldAffinesTogether, v => SiteComputation.FoldAffinesTogether = v),
    };

    static T With<T>(string name, bool value, Func<T> run)
    {
        var (get, set) = Switches[name];
        bool previous = get();
        try
        {
            set(value);
            return run();
        }
        finally
        {
            set(previous);
        }
    }

    static void AssertSameBits(IEnumerable<float> got, IEnumerable<float> want, string what) =>
        Assert.That(got.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Select(BitConverter.SingleToInt32Bits)), what);

    /// <summary>Six SSF steps of each tiny model: the losses and every parameter bit for bit with the switch off and on.</summary>
    [Test]
    public void SsfTrainingIsBitForBitTheRunWithTheSwitchOff([Values(nameof(Tape.ZeroSmallGradientsTogether), nameof(SiteComputation.FoldAffinesTogether))] string name,
        [Values("vit", "swin", "convnext")] string family, [Values("cpu", "emulated-cuda")] string backend)
    {
        var device = Backends.Get(backend);
        GraphCheck.Result Train(bool on) => With(name, on, () => GraphCheck.Train(TinyModels.Create(family, device), TinyModels.Classes, "ssf", graph: false));
        var off = Train(false);
        var on = Train(true);
        AssertSameBits(on.Losses, off.Losses, $"losses {string.Join(", ", on.Losses)} against {string.Join(", ", off.Losses)}");
        for (int p = 0; p < off.Parameters.Length; p++) AssertSameBits(on.Parameters[p], off.Parameters[p], $"parameter {p} after six steps");
        Assert.That(off.Parameters.Zip(off.Initial).Any(p => !p.First.SequenceEqual(p.Second)), "training moved the parameters");
    }

    /// <summary>What one SSF step's forward and backward called (kernel → calls), and the SSF parameters' gradients.</summary>
    sealed record StepCalls(Dictionary<KernelId, long> Forward, Dictionary<KernelId, long> Backward, float[][] Grads);

    /// <summary>One SSF step on the tiny ViT (5 norms, 9 Linear layers with biases) with the switch off, then on, after a
    /// step that made the parameters' own gradients (filled once, as in training); the SSF parameters' gradients bit for
    /// bit the same both ways.</summary>
    static (StepCalls Off, StepCalls On) SsfStepCalls(string name)
    {
        var kernels = new InstrumentedKernels(new CpuKernels());
        var device = new CpuDevice(kernels);
        using var model = TinyModels.Create("vit", device);
        using var ssf = new Ssf(seed: 5);
        ssf.Apply(model);
        const int B = 2;
        using var images = Tensor.FromArray(device, [.. Enumerable.Range(0, B * 3 * TinyModels.Size * TinyModels.Size).Select(i => (float)Math.Sin(0.37 * i))],
            B, 3, TinyModels.Size, TinyModels.Size);
        using var targets = Tensor.FromArray(device, [1, 3], B);
        var trained = model.Parameters.Concat(ssf.AddedParameters).Where(p => p.RequiresGrad).ToList();
        Dictionary<KernelId, long> Calls() => Enum.GetValues<KernelId>().ToDictionary(k => k, kernels.Calls);
        StepCalls Step(bool on) => With(name, on, () =>
        {
            foreach (var p in trained.Where(p => p.Grad != null)) kernels.Fill(p.Grad!.Data, p.Count, 0f); // as the optimizer zeroes them
            var tape = new Tape();
            using (tape.Record())
            {
                kernels.Reset();
                using var logits = model.Forward(images, trainSeed: 7);
                using var loss = Ops.CrossEntropy(logits, targets);
                var forward = Calls();
                kernels.Reset();
                tape.Backward(loss);
                return new StepCalls(forward, Calls(), [.. ssf.AddedParameters.Select(p => p.Grad!.ToArray())]);
            }
        });
        Step(true);
        var (off, on) = (Step(false), Step(true));
        for (int p = 0; p < off.Grads.Length; p++) AssertSameBits(on.Grads[p], off.Grads[p], $"{ssf.AddedParameters[p].Name}'s gradient");
        return (off, on);
    }

    /// <summary>The fills of one SSF backward: the shared buffer, against one per folded vector (the 5 norms' weights and
    /// biases, the 9 Linear layers' shifts) when each fills its own.</summary>
    [Test]
    public void OneFillZeroesEverySmallGradientOfABackward()
    {
        var (off, on) = SsfStepCalls(nameof(Tape.ZeroSmallGradientsTogether));
        Assert.That(on.Backward[KernelId.Fill], Is.EqualTo(4), "the loss's seed, the one buffer and the backwards of the two token gathers before " +
            "the last block's class row (each zeroes the rows it does not write)");
        Assert.That(off.Backward[KernelId.Fill] - on.Backward[KernelId.Fill], Is.EqualTo(2 * 5 + 9 - 1), "a fill per folded vector instead of the one buffer");
    }

    /// <summary>One SSF step's folds: one call forward and one backward for the 19 vectors, against one each per site (14)
    /// when each site folds its own; no fill in the forward (a norm's weight was once scaled with a zero vector as its
    /// shift), and no scale-shift of a [C] vector on its own.</summary>
    [Test]
    public void AForwardAndItsBackwardFoldEverySiteInOneCallEach()
    {
        var (off, on) = SsfStepCalls(nameof(SiteComputation.FoldAffinesTogether));
        Assert.That((on.Forward[KernelId.ScaleShiftMany], on.Backward[KernelId.ScaleShiftManyBackward]), Is.EqualTo((1L, 1L)), "calls for every site's folds");
        Assert.That((off.Forward[KernelId.ScaleShiftMany], off.Backward[KernelId.ScaleShiftManyBackward]), Is.EqualTo((14L, 14L)), "a call per site");
        Assert.That(on.Forward[KernelId.Fill] + off.Forward[KernelId.Fill], Is.Zero, "fills in an SSF forward");
        Assert.That(on.Forward[KernelId.ScaleShiftForward], Is.EqualTo(1), "scale-shifts of their own: the patch embedding's output alone (a " +
            "convolution, with no scale-shift in its epilogue)");
    }
}
