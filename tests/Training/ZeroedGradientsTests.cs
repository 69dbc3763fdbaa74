using Engine.Autograd;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Models.Peft;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>A backward zeroes the gradients of its small intermediate tensors (SSF's scale and shift folded into each
/// layer: [C] vectors that the layers' backwards add to) with one fill of one buffer
/// (<see cref="Tape.ZeroSmallGradientsTogether"/>): training is bit for bit the run that fills each on its own, and the
/// backward launches one fill for all of them.</summary>
[TestFixture, NonParallelizable]
public unsafe class ZeroedGradientsTests
{
    static T WithZeroingTogether<T>(bool together, Func<T> run)
    {
        bool previous = Tape.ZeroSmallGradientsTogether;
        try
        {
            Tape.ZeroSmallGradientsTogether = together;
            return run();
        }
        finally
        {
            Tape.ZeroSmallGradientsTogether = previous;
        }
    }

    static void AssertSameBits(IEnumerable<float> got, IEnumerable<float> want, string what) =>
        Assert.That(got.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Select(BitConverter.SingleToInt32Bits)), what);

    [Test]
    public void TrainingIsBitForBitTheRunWithAFillPerGradient([Values("vit", "swin", "convnext")] string family, [Values("cpu", "emulated-cuda")] string backend)
    {
        var device = Backends.Get(backend);
        GraphCheck.Result Train(bool together) =>
            WithZeroingTogether(together, () => GraphCheck.Train(TinyModels.Create(family, device), TinyModels.Classes, "ssf", graph: false));
        var separately = Train(false);
        var together = Train(true);
        AssertSameBits(together.Losses, separately.Losses, $"losses {string.Join(", ", together.Losses)} against {string.Join(", ", separately.Losses)}");
        for (int p = 0; p < separately.Parameters.Length; p++) AssertSameBits(together.Parameters[p], separately.Parameters[p], $"parameter {p} after six steps");
        Assert.That(separately.Parameters.Zip(separately.Initial).Any(p => !p.First.SequenceEqual(p.Second)), "training moved the parameters");
    }

    /// <summary>The fills of one SSF backward on the tiny ViT: the shared buffer, against one per folded vector (the 5
    /// norms' weights and biases, the 9 Linear layers' shifts) when each fills its own; the scales' and shifts'
    /// gradients the same.</summary>
    [Test]
    public void OneFillZeroesEverySmallGradientOfABackward()
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
        (long Fills, float[][] Grads) Backward(bool together) => WithZeroingTogether(together, () =>
        {
            foreach (var p in trained.Where(p => p.Grad != null)) kernels.Fill(p.Grad!.Data, p.Count, 0f); // as the optimizer zeroes them
            var tape = new Tape();
            using (tape.Record())
            {
                using var logits = model.Forward(images, trainSeed: 7);
                using var loss = Ops.CrossEntropy(logits, targets);
                kernels.Reset();
                tape.Backward(loss);
            }
            return (kernels.Calls(KernelId.Fill), ssf.AddedParameters.Select(p => p.Grad!.ToArray()).ToArray());
        });
        Backward(true); // the parameters' own gradients, made (and filled) once, as in training
        var separately = Backward(false);
        var together = Backward(true);
        Assert.That(together.Fills, Is.EqualTo(4), "the loss's seed, the one buffer and the backwards of the two token gathers before " +
            "the last block's class row (each zeroes the rows it does not write)");
        Assert.That(separately.Fills - together.Fills, Is.EqualTo(2 * 5 + 9 - 1), "a fill per folded vector instead of the one buffer");
        for (int p = 0; p < separately.Grads.Length; p++) AssertSameBits(together.Grads[p], separately.Grads[p], $"{ssf.AddedParameters[p].Name}'s gradient");
    }
}
