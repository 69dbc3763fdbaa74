using Engine.Kernels;
using Engine.Models.Training;
using Engine.Optim;

namespace Engine.Tests;

/// <summary>fp16 training's dynamic loss scaling: gradients too small for fp16 survive with it and vanish without it;
/// an overflowing step is skipped and the scale backs off; the scale grows after a run of good steps.</summary>
[TestFixture]
public class LossScalerTests
{
    /// <summary>A linear classifier whose logits pass through a frozen 10⁻⁷ scale before the loss, so the gradient at
    /// the Linear output is ~10⁻⁹..10⁻⁸: below fp16's smallest subnormal (6·10⁻⁸) unless the loss is scaled.</summary>
    sealed class TinyGradientModel : IDisposable
    {
        public readonly Tensor X, W, Scale, Shift, Targets;

        public TinyGradientModel(Device device)
        {
            const int B = 8, K = 16, C = 4;
            X = Tensor.FromArray(device, Enumerable.Range(0, B * K).Select(i => (float)Math.Sin(i)).ToArray(), B, K);
            W = Tensor.FromArray(device, Enumerable.Range(0, C * K).Select(i => (float)Math.Cos(i) * 0.1f).ToArray(), C, K);
            W.RequiresGrad = true;
            Scale = Tensor.FromArray(device, Enumerable.Repeat(1e-7f, C).ToArray(), C);
            Shift = Tensor.Zeros(device, C);
            Targets = Tensor.FromArray(device, Enumerable.Range(0, B).Select(i => i % C).ToArray(), B);
        }

        public Tensor Logits()
        {
            using var y = Ops.Linear(X, W);
            return Ops.ScaleShift(y, Scale, Shift);
        }

        public void Dispose()
        {
            foreach (var t in new[] { X, W, Scale, Shift, Targets }) t.Dispose();
        }
    }

    static (float[] Before, float[] After, TrainStep Step) OneStep(Device device, LossScaler? scaler)
    {
        using var model = new TinyGradientModel(device);
        using var adam = new Adam([model.W], new AdamOptions { LearningRate = 1e-2f });
        var step = new TrainStep(adam) { LossScaler = scaler };
        var before = model.W.ToArray();
        using (device.Kernels.UseGemmPrecision(Precision.FP16))
            step.Run(model.Logits, logits => Ops.CrossEntropy(logits, model.Targets));
        return (before, model.W.ToArray(), step);
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void Fp16GradientsBelowItsRangeTrainOnlyWithLossScaling(string backend)
    {
        var device = Backends.Get(backend);
        var plain = OneStep(device, null);
        Assert.That(plain.After, Is.EqualTo(plain.Before), "without scaling the fp16 gradient underflows to zero: nothing moves");
        var scaled = OneStep(device, new LossScaler());
        Assert.That(scaled.Step.LastStepSkipped, Is.False);
        Assert.That(scaled.After.Zip(scaled.Before).Count(p => p.First != p.Second), Is.EqualTo(scaled.Before.Length),
            "with the loss scaled by 2¹⁶ every weight gets a gradient and moves");
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void AnOverflowingStepIsSkippedAndTheScaleBacksOff(string backend)
    {
        var device = Backends.Get(backend);
        var scaler = new LossScaler(3e38f);
        var run = OneStep(device, scaler);
        Assert.That(run.Step.LastStepSkipped, Is.True);
        Assert.That(run.After, Is.EqualTo(run.Before));
        Assert.That(scaler.Scale, Is.EqualTo(1.5e38f));
        Assert.That(scaler.SkippedSteps, Is.EqualTo(1));
    }

    [Test]
    public void TheScaleGrowsAfterItsIntervalOfGoodStepsAndUnscalingIsExact()
    {
        var device = Device.Cpu;
        using var p = Tensor.Zeros(device, 3);
        p.RequiresGrad = true;
        var scaler = new LossScaler(1024f) { GrowthInterval = 3 };
        for (int step = 1; step <= 3; step++)
        {
            using var grad = Tensor.FromArray(device, [1024f, -3072f, 0.5f], 3);
            p.Grad?.Dispose();
            p.Grad = grad.Contiguous();
            Assert.That(scaler.Unscale([p]), Is.True);
            Assert.That(p.Grad.ToArray(), Is.EqualTo(new[] { 1f, -3f, 0.5f / 1024 }));
        }
        Assert.That(scaler.Scale, Is.EqualTo(2048f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LossScaler(0f));
    }
}
