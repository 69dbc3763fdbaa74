using Engine.Kernels;
using Engine.Kernels.Cuda;
using Engine.Models;
using Engine.Models.Training;
using Engine.Optim;

namespace Engine.Tests;

/// <summary>A device that runs out of memory, on the emulated CUDA device given a GPU's fixed size
/// (<see cref="EmulatedRuntime.MemoryCapacity"/>): the pool frees buffers cached for another batch size and tries again,
/// so steps that fit run as they would with room to spare, bit for bit; a step that does not fit throws
/// <see cref="DeviceOutOfMemoryException"/> with the sizes and leaves nothing behind, so a smaller batch runs next.</summary>
[TestFixture, NonParallelizable]
public class OutOfDeviceMemoryTests
{
    const int Size = TinyModels.Size, Classes = TinyModels.Classes;

    static CudaDevice OpenFresh()
    {
        if (!CudaDevice.TryOpenEmulated(out var device, out var reason)) Assert.Ignore($"emulated CUDA device unavailable: {reason}");
        return device!;
    }

    static EmulatedRuntime Emulator(CudaDevice device) => (EmulatedRuntime)device.Runtime;

    /// <summary>A tiny ViT trained with AdamW on <paramref name="device"/>, one step per call of <see cref="Run"/>.</summary>
    sealed class Trainer : IDisposable
    {
        readonly IImageClassifier _model;
        readonly Adam _adam;
        readonly TrainStep _step;
        readonly Device _device;
        readonly IDisposable _precision;

        public Trainer(Device device, string family = "vit", Precision precision = Precision.FP32, bool weightCopies = false)
        {
            _device = device;
            _precision = device.Kernels.UseGemmPrecision(precision);
            _model = TinyModels.Create(family, device);
            _adam = new Adam(_model.Parameters, new AdamOptions { LearningRate = 1e-2f, WeightDecay = 0.05f });
            _step = new TrainStep(_adam) { Context = "out of memory", Weights = weightCopies ? _model.Parameters : null };
        }

        public TrainStep Step => _step;

        public float Run(int batch, int seed)
        {
            var pixels = Enumerable.Range(0, batch * 3 * Size * Size).Select(j => CounterRng.Uniform((ulong)seed, (ulong)j) * 2 - 1).ToArray();
            using var images = Tensor.FromArray(_device, pixels, batch, 3, Size, Size);
            using var targets = Tensor.FromArray(_device, Enumerable.Range(0, batch).Select(j => (seed + j) % Classes).ToArray(), batch);
            return _step.Run(images, targets, x => _model.Forward(x), (logits, t) => Ops.CrossEntropy(logits, t));
        }

        public float[][] Parameters => [.. _model.Parameters.Select(p => p.ToArray())];

        public float[][] Gradients => [.. _model.Parameters.Select(p => p.Grad?.ToArray() ?? [])];

        public int Steps => _adam.StepCount;

        public void Dispose()
        {
            _step.Dispose();
            _adam.Dispose();
            _model.Dispose();
            _precision.Dispose();
        }
    }

    static readonly int[] Batches = [3, 3, 2, 2, 3];

    /// <summary>After two steps at batch 3 the pool holds their buffers; the batch-2 steps need buffers of other sizes,
    /// and with a capacity halfway between what batch 3 took and what both batch sizes take, they only fit once the
    /// batch-3 buffers are freed (and the last batch-3 step once the batch-2 ones are).</summary>
    [Test]
    public void APoolHoldingAnotherBatchSizesBuffersFreesThemAndTheStepsRunAsWithRoomToSpare([Values("vit", "swin", "convnext")] string family,
        [Values(Precision.FP32, Precision.BF16)] Precision precision)
    {
        (float[] Losses, float[][] Parameters, long[] Allocated, long Releases) Train(long? capacity)
        {
            using var device = OpenFresh();
            Emulator(device).MemoryCapacity = capacity;
            using var trainer = new Trainer(device, family, precision);
            var allocated = new long[Batches.Length];
            var losses = new float[Batches.Length];
            for (int i = 0; i < Batches.Length; i++)
            {
                losses[i] = trainer.Run(Batches[i], seed: 10 + i);
                allocated[i] = Emulator(device).AllocatedBytes;
            }
            Assert.That(Emulator(device).PeakAllocatedBytes, Is.LessThanOrEqualTo(capacity ?? long.MaxValue));
            return (losses, trainer.Parameters, allocated, device.Pool.CacheReleases);
        }
        var roomy = Train(capacity: null);
        Assert.That(roomy.Releases, Is.Zero);
        long batch3 = roomy.Allocated[1], both = roomy.Allocated[3];
        Assert.That(both, Is.GreaterThan(batch3 + 4096), "the batch-2 steps allocated buffers of their own");
        var tight = Train(capacity: (batch3 + both) / 2);
        Assert.That(tight.Releases, Is.GreaterThanOrEqualTo(2), "the first batch-2 step and the last batch-3 step each freed the cache");
        Assert.That(tight.Losses, Is.EqualTo(roomy.Losses));
        Assert.That(tight.Parameters, Is.EqualTo(roomy.Parameters));
    }

    /// <summary>A batch that does not fit fails with the sizes in the message, wherever it runs out (early in the
    /// forward, or in the backward with gradients half accumulated), and leaves the tensors in use, the parameters, the
    /// gradients and the step count as they were: the next, smaller batch trains exactly as if the failed one had never
    /// run.</summary>
    [Test]
    public void AStepThatRunsOutOfMemoryLeavesNothingBehindAndASmallerBatchRunsNext([Values("vit", "swin", "convnext")] string family,
        [Values(Precision.FP32, Precision.BF16)] Precision precision)
    {
        // With room to spare: two batch-1 steps, and the most memory a batch-1 and then a batch-8 step took.
        float[] expectedLosses;
        float[][] expectedParameters;
        long batch1, batch8;
        using (var device = OpenFresh())
        using (var trainer = new Trainer(device, family, precision))
        {
            expectedLosses = [trainer.Run(1, seed: 1), trainer.Run(1, seed: 2)];
            expectedParameters = trainer.Parameters;
            batch1 = Emulator(device).PeakAllocatedBytes;
            device.Pool.Trim(); // the batch-8 step's own need, without batch 1's cached buffers
            trainer.Run(8, seed: 3);
            batch8 = Emulator(device).PeakAllocatedBytes;
        }
        Assert.That(batch8, Is.GreaterThan(batch1 + 65536));

        var failedIn = new List<string>();
        foreach (long capacity in new[] { batch1, batch1 + (batch8 - batch1) / 4, batch1 + (batch8 - batch1) * 3 / 4 })
        {
            using var device = OpenFresh();
            Emulator(device).MemoryCapacity = capacity;
            using var trainer = new Trainer(device, family, precision);
            float first = trainer.Run(1, seed: 1);
            long inUse = device.BytesInUse;
            var parameters = trainer.Parameters;
            var gradients = trainer.Gradients;

            var error = Assert.Throws<DeviceOutOfMemoryException>(() => trainer.Run(8, seed: 3))!;
            failedIn.Add(error.StackTrace!.Contains("Tape.Backward") ? "backward" : "forward");
            Assert.That(error.Message, Does.StartWith("out of memory on emulated-cuda: ").And.Contain(" could not be allocated; tensors hold ")
                .And.Contain($" free of {capacity / 1048576.0:0.00} MiB").And.Contain("Use a smaller batch"), error.Message);
            Assert.That(error.RequestedBytes, Is.GreaterThan(0));
            Assert.That(error.DeviceTotalBytes, Is.EqualTo(capacity));
            Assert.That(error.CachedBytes, Is.Zero, "the pool freed what it had before giving up");
            Assert.That(device.BytesInUse, Is.EqualTo(inUse), "the failed step's activations and gradients were let go");
            Assert.That(trainer.Parameters, Is.EqualTo(parameters));
            Assert.That(trainer.Gradients, Is.EqualTo(gradients), "no half-accumulated gradient is left for the next step");
            Assert.That(trainer.Steps, Is.EqualTo(1));

            float second = trainer.Run(1, seed: 2);
            Assert.That(new[] { first, second }, Is.EqualTo(expectedLosses), $"capacity {capacity}");
            Assert.That(trainer.Parameters, Is.EqualTo(expectedParameters), $"capacity {capacity}");
        }
        Assert.That(failedIn, Does.Contain("forward").And.Contain("backward"), "the capacities stop the step at both stages");
    }

    /// <summary>Steps that fit without the weights' 16-bit copies (<see cref="TrainStep.Weights"/>) but not with them: the
    /// first one runs out of memory, drops the copies for good, runs again without them and says why; the steps train
    /// bit for bit as steps that never had copies.</summary>
    [Test]
    public void StepsThatFitOnlyWithoutTheWeightsCopiesDropThemAndTrainAsWithoutThem([Values("vit", "convnext")] string family)
    {
        (float[] Losses, float[][] Parameters, long Peak, long CopyBytes, string? Dropped) Train(long? capacity, bool copies)
        {
            using var device = OpenFresh();
            Emulator(device).MemoryCapacity = capacity;
            using var trainer = new Trainer(device, family, Precision.BF16, copies);
            float[] losses = [.. Enumerable.Range(0, 3).Select(i => trainer.Run(3, seed: 20 + i))];
            return (losses, trainer.Parameters, Emulator(device).PeakAllocatedBytes, trainer.Step.WeightCopyBytes, trainer.Step.WeightCopiesDropped);
        }
        var without = Train(capacity: null, copies: false);
        var with = Train(capacity: null, copies: true);
        Assert.That(with.CopyBytes, Is.GreaterThan(0));
        Assert.That(with.Dropped, Is.Null);
        // The least capacity the steps fit in without copies (to 1 KiB): with the copies on top they cannot fit.
        long fails = 0, fits = without.Peak;
        while (fits - fails > 1024)
        {
            long capacity = (fails + fits) / 2;
            try
            {
                Train(capacity, copies: false);
                fits = capacity;
            }
            catch (DeviceOutOfMemoryException)
            {
                fails = capacity;
            }
        }
        Assert.That(fits + 1024, Is.LessThan(fails + with.CopyBytes), "the copies are larger than the search's step");
        var tight = Train(capacity: fits, copies: true);
        Assert.That(tight.Dropped, Does.StartWith("the device ran out of memory with the weights' 16-bit copies held"), tight.Dropped);
        Assert.That(tight.CopyBytes, Is.Zero, "the copies gave their memory back");
        Assert.That(tight.Losses, Is.EqualTo(without.Losses));
        Assert.That(tight.Parameters, Is.EqualTo(without.Parameters));
    }

    /// <summary>A backward that runs out of memory part way, on a tape used directly (no <see cref="TrainStep"/>), still
    /// clears the tape: the activations it kept and the gradients of intermediate tensors it had made are let go, and
    /// only the parameters' own gradients stay.</summary>
    [Test]
    public void ABackwardThatRunsOutOfMemoryStillClearsItsTape()
    {
        (long AfterForward, long Peak, DeviceOutOfMemoryException? Error) Run(long? capacity, Action<string>? check = null)
        {
            using var device = OpenFresh();
            Emulator(device).MemoryCapacity = capacity;
            using var model = TinyModels.Create("vit", device);
            using var images = Tensor.FromArray(device, Enumerable.Range(0, 4 * 3 * Size * Size).Select(j => CounterRng.Uniform(5, (ulong)j)).ToArray(), 4, 3, Size, Size);
            using var targets = Tensor.FromArray(device, [0, 1, 2, 3], 4);
            long before = device.BytesInUse, afterForward;
            var tape = new Autograd.Tape();
            DeviceOutOfMemoryException? error = null;
            using (tape.Record())
            {
                using var logits = model.Forward(images, trainSeed: 1);
                using var loss = Ops.CrossEntropy(logits, targets);
                afterForward = Emulator(device).AllocatedBytes;
                try { tape.Backward(loss); }
                catch (DeviceOutOfMemoryException e) { error = e; }
            }
            Assert.That(tape.SavedBytes, Is.Zero);
            long leafGradients = model.Parameters.Sum(p => p.Grad?.Bytes ?? 0);
            Assert.That(device.BytesInUse, Is.EqualTo(before + leafGradients), "only the parameters' gradients stay");
            return (afterForward, Emulator(device).PeakAllocatedBytes, error);
        }
        var roomy = Run(capacity: null);
        Assert.That(roomy.Error, Is.Null);
        var tight = Run(capacity: (roomy.AfterForward + roomy.Peak) / 2);
        Assert.That(tight.Error, Is.Not.Null, "the backward ran out");
        Assert.That(tight.AfterForward, Is.EqualTo(roomy.AfterForward), "the forward fitted");
    }

    /// <summary>Whatever a step's forward or loss had made when it threw (here a forward of the caller's own, past the
    /// model's, and a loss that fails after making a tensor) is released, on every backend; state a forward keeps in
    /// memory of its own stays.</summary>
    [Test]
    public void AFailedStepReleasesEveryPooledTensorItMadeAndKeepsOwnedOnes([Values("cpu", "emulated-cuda")] string backend)
    {
        var device = Backends.Get(backend);
        using var model = TinyModels.Create("vit", device);
        using var adam = new Adam(model.Parameters, new AdamOptions { LearningRate = 1e-2f });
        using var step = new TrainStep(adam) { Context = "failing" };
        using var images = Tensor.FromArray(device, new float[2 * 3 * Size * Size], 2, 3, Size, Size);
        using var targets = Tensor.FromArray(device, [0, 1], 2);
        step.Run(() => model.Forward(images), logits => Ops.CrossEntropy(logits, targets));
        long inUse = device.BytesInUse;
        Tensor? kept = null, dropped = null;
        Assert.Throws<InvalidOperationException>(() => step.Run(() =>
        {
            var logits = model.Forward(images);
            kept = Tensor.PersistentZeros(device, 7);
            dropped = Ops.Gelu(logits); // in flight when the forward fails
            throw new InvalidOperationException("the caller's forward failed");
        }, logits => Ops.CrossEntropy(logits, targets)));
        Assert.That(dropped!.IsDisposed, Is.True);
        Assert.That(kept!.IsDisposed, Is.False);
        Assert.That(device.BytesInUse - kept.Bytes, Is.EqualTo(inUse));
        kept.Dispose();
        Assert.Throws<InvalidOperationException>(() => step.Run(() => model.Forward(images), logits =>
        {
            dropped = Ops.Softmax(logits);
            throw new InvalidOperationException("the loss failed");
        }));
        Assert.That(dropped.IsDisposed, Is.True);
        Assert.That(device.BytesInUse, Is.EqualTo(inUse));
        Assert.That(adam.StepCount, Is.EqualTo(1));
    }

    /// <summary>The CPU device says the same when the host refuses an allocation (here 4 PiB).</summary>
    [Test]
    public void TheCpuDeviceReportsAnAllocationTheHostRefusesTheSameWay()
    {
        var error = Assert.Throws<DeviceOutOfMemoryException>(() => Device.Cpu.Allocate(1L << 52))!;
        Assert.That(error.Message, Does.StartWith("out of memory on cpu: 4194304.00 GiB could not be allocated; tensors hold "));
        Assert.That(error.DeviceTotalBytes, Is.Null);
        Assert.That(error.InnerException, Is.InstanceOf<OutOfMemoryException>());
    }
}
