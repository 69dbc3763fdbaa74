using Engine.Autograd;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Models.Demo;
using Engine.Models.Vit;
using Engine.Optim;

namespace Engine.Tests;

/// <summary>Autograd, memory, determinism, optimizer and bad-input behaviour of the engine.</summary>
[TestFixture, NonParallelizable]
public class EngineTests
{
    static readonly VitConfig Tiny = new() { img_size = 12, patch_size = 4, in_chans = 1, embed_dim = 16, depth = 2, num_heads = 2, mlp_ratio = 2, num_classes = 3, drop_path_rate = 0.1f };

    static PatternTask NewTask() => new(Tiny.in_chans, Tiny.img_size, Tiny.patch_size, Tiny.num_classes, 11);

    /// <summary>One training step of the tiny model: forward, backward, AdamW; returns the loss.</summary>
    static float Step(VisionTransformer model, Adam opt, PatternTask task, int batch, ulong index, int micro = 1)
    {
        var tape = new Tape();
        float loss = 0;
        opt.ZeroGrad();
        for (int m = 0; m < micro; m++)
        {
            var (x, y) = task.Batch(batch, index * 10 + (ulong)m);
            using var xt = Tensor.FromArray(model.Parameters[0].Device, x, batch, 1, 12, 12);
            using var yt = Tensor.FromArray(model.Parameters[0].Device, y, batch);
            using (tape.Record())
            {
                using var logits = model.Forward(xt, trainSeed: index);
                using var l = Ops.CrossEntropy(logits, yt, 0.1f);
                loss += l.ToArray()[0];
                tape.Backward(l);
            }
        }
        opt.Step();
        return loss / micro;
    }

    static float[] Train(Device device, int steps, int batch = 4)
    {
        using var model = new VisionTransformer(device, Tiny, seed: 5);
        using var opt = new Adam(model.Parameters, new AdamOptions { LearningRate = 3e-3f, WeightDecay = 0.05f });
        var task = NewTask();
        for (int s = 0; s < steps; s++) Step(model, opt, task, batch, (ulong)s);
        return model.Parameters.SelectMany(p => p.ToArray()).ToArray();
    }

    [Test]
    public void SameSeedSameBits()
    {
        Assert.That(Train(Device.Cpu, 3), Is.EqualTo(Train(Device.Cpu, 3)));
    }

    [Test]
    public void ThreadCountDoesNotChangeTraining()
    {
        if (Environment.ProcessorCount < 2) Assert.Ignore("one processor: nothing to compare");
        int saved = CpuParallel.Threads;
        try
        {
            CpuParallel.Threads = 1;
            var one = Train(Device.Cpu, 2, batch: 16);
            CpuParallel.Threads = 2;
            Assert.That(Train(Device.Cpu, 2, batch: 16), Is.EqualTo(one));
        }
        finally { CpuParallel.Threads = saved; }
    }

    /// <summary>A reshape's gradient reaches its source: handed over when the source has none yet (and then added to by
    /// an op recorded before the reshape), added when it has one. Recorded after the op, both views hand theirs over;
    /// recorded before it, the source's view runs after the op's backward and adds: one Copy kernel more.</summary>
    [Test]
    public void ReshapeGradientReachesItsSource()
    {
        var counting = new InstrumentedKernels(new CpuKernels());
        var dev = new CpuDevice(counting);
        using var x = Tensor.FromArray(dev, Init.NormalValues(12, 0, 1, 3), 2, 6);
        x.RequiresGrad = true;
        var gValues = Init.NormalValues(12, 0, 1, 4);
        using var g = Tensor.FromArray(dev, gValues, 3, 4);
        long Copies(bool reshapeFirst)
        {
            x.DropGrad();
            var tape = new Tape();
            using (tape.Record())
            {
                using var h = Ops.Add(x, x); // a non-leaf source
                Tensor? v = reshapeFirst ? h.Reshape(3, 4) : null;
                using var w = Ops.Add(h, h);
                v ??= h.Reshape(3, 4);
                using var wv = w.Reshape(3, 4);
                using var y = Ops.Add(v, wv);
                counting.Reset();
                tape.Backward(y, g); // dh = g + 2g, dx = 2·dh
                v.Dispose();
            }
            Assert.That(x.Grad!.ToArray(), Is.EqualTo(gValues.Select(e => 6 * e).ToArray()).Within(1e-5), $"reshape first: {reshapeFirst}");
            return counting.Calls(KernelId.Copy);
        }
        Assert.That(Copies(reshapeFirst: true), Is.EqualTo(Copies(reshapeFirst: false) + 1));
    }

    [Test]
    public void FrozenWeightCostsNoWeightGradientWork()
    {
        var counting = new InstrumentedKernels(new CpuKernels());
        var dev = new CpuDevice(counting);
        using var x = Tensor.FromArray(dev, Init.NormalValues(7 * 13, 0, 1, 1), 7, 13);
        x.RequiresGrad = true;
        using var w = Tensor.Parameter(dev, "w", 5, 13);
        using var b = Tensor.Parameter(dev, "b", 5);
        Init.Normal(w, 1f, 2);
        (long gemms, long flops, long saved) Backward()
        {
            var tape = new Tape();
            using (tape.Record())
            {
                using var y = Ops.Linear(x, w, b);
                long bytes = tape.SavedBytes;
                using var g = Tensor.FromArray(dev, new float[35], 7, 5);
                counting.Reset();
                tape.Backward(y, g);
                return (counting.Calls(KernelId.Gemm), counting.Flops, bytes);
            }
        }
        var trainable = Backward();
        w.RequiresGrad = false;
        b.RequiresGrad = false;
        var frozen = Backward();
        Assert.That(trainable.gemms, Is.EqualTo(2), "dX and dW");
        Assert.That(frozen.gemms, Is.EqualTo(1), "frozen weight: dX only");
        Assert.That(frozen.flops, Is.EqualTo(trainable.flops / 2));
        Assert.That(trainable.saved, Is.EqualTo(x.Bytes), "x is kept for dW");
        Assert.That(frozen.saved, Is.Zero, "nothing kept for a frozen weight");
        Assert.That(counting.Calls(KernelId.BiasGrad), Is.Zero);

        // With nothing upstream requiring gradients either, the op records nothing at all.
        x.RequiresGrad = false;
        var tape2 = new Tape();
        using (tape2.Record())
        using (Ops.Linear(x, w, b))
            Assert.That(tape2.Count, Is.Zero);
    }

    /// <summary>A Linear after LinearGelu computes its input again from the pre-activation kept on the same tape
    /// (<see cref="Ops.RecomputeGeluOutputs"/>); recording again after that backward (the same tape, as training steps
    /// reuse one), when the pre-activation is gone, it keeps the input itself, with the same weight gradient.</summary>
    [Test]
    public void ALinearKeepsAGeluOutputMadeBeforeTheLastBackward()
    {
        var dev = new CpuDevice(new CpuKernels());
        using var _ = dev.Kernels.UseGemmPrecision(Precision.BF16);
        using var x = Tensor.FromArray(dev, Init.NormalValues(6 * 8, 0, 1, 3), 6, 8);
        using var w1 = Tensor.Parameter(dev, "fc1.weight", 16, 8);
        using var w2 = Tensor.Parameter(dev, "fc2.weight", 4, 16);
        Init.Normal(w1, 0.5f, 4);
        Init.Normal(w2, 0.5f, 5);
        using var dy = Tensor.FromArray(dev, Init.NormalValues(6 * 4, 0, 1, 6), 6, 4);
        Tensor g;
        var tape = new Tape();
        long keptFirst;
        using (tape.Record())
        {
            g = Ops.LinearGelu(x, w1, gemmInput: true);
            long beforeFc2 = tape.SavedBytes;
            using var y = Ops.Linear(g, w2);
            keptFirst = tape.SavedBytes - beforeFc2;
            tape.Backward(y, dy);
        }
        using var __ = g;
        float[] recomputed = w2.Grad!.ToArray();
        w2.Grad.Dispose();
        w2.SetGrad(null);
        using (tape.Record())
        {
            using var y = Ops.Linear(g, w2);
            Assert.That(tape.SavedBytes, Is.EqualTo(g.Bytes), "recording again, the tape keeps fc2's input itself");
            tape.Backward(y, dy);
        }
        Assert.That(keptFirst, Is.Zero, "the first tape keeps nothing for fc2: its input is computed again");
        Assert.That(g.DType, Is.EqualTo(DType.BF16));
        Assert.That(w2.Grad!.ToArray(), Is.EqualTo(recomputed), "fc2's weight gradient");
    }

    [Test]
    public void StepsAfterTheFirstAllocateNoDeviceMemory()
    {
        var dev = new CpuDevice(new CpuKernels());
        using var model = new VisionTransformer(dev, Tiny, seed: 5);
        using var opt = new Adam(model.Parameters, new AdamOptions());
        var task = NewTask();
        Step(model, opt, task, 4, 0);
        long misses = dev.Pool.Misses, inUse = dev.Pool.BytesInUse;
        for (int s = 1; s < 4; s++) Step(model, opt, task, 4, (ulong)s);
        Assert.That(dev.Pool.Misses, Is.EqualTo(misses), "later steps are served from the pool");
        Assert.That(dev.Pool.BytesInUse, Is.EqualTo(inUse), "no buffer leaks between steps");
    }

    [Test]
    public void ManagedAllocationPerStepDoesNotGrowWithBatch()
    {
        long PerStep(int batch)
        {
            var dev = new CpuDevice(new CpuKernels());
            using var model = new VisionTransformer(dev, Tiny, seed: 5);
            using var opt = new Adam(model.Parameters, new AdamOptions());
            var task = NewTask();
            var (x, y) = task.Batch(batch, 0);
            using var xt = Tensor.FromArray(dev, x, batch, 1, 12, 12);
            using var yt = Tensor.FromArray(dev, y, batch);
            var tape = new Tape();
            void Once()
            {
                opt.ZeroGrad();
                using (tape.Record())
                {
                    using var logits = model.Forward(xt);
                    using var l = Ops.CrossEntropy(logits, yt);
                    tape.Backward(l);
                }
                opt.Step();
            }
            Once();
            Once();
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 5; i++) Once();
            return (GC.GetAllocatedBytesForCurrentThread() - before) / 5;
        }
        long small = PerStep(2), large = PerStep(32);
        TestContext.Out.WriteLine($"managed bytes per step: batch 2 {small}, batch 32 {large}");
        // Only small headers (tensor objects, shape arrays) are managed; data buffers come from the pool.
        Assert.That(large, Is.LessThan(small + 2048), "managed allocation must not scale with the batch");
        Assert.That(large, Is.LessThan(64 * 1024));
    }

    [Test]
    public void MicroBatchGradientsAccumulate()
    {
        var dev = Device.Cpu;
        using var model = new VisionTransformer(dev, Tiny with { drop_path_rate = 0 }, seed: 5);
        var task = NewTask();
        float[] Grads(params ulong[] batches)
        {
            foreach (var p in model.Parameters) if (p.Grad != null) Init.Constant(p.Grad, 0f);
            var tape = new Tape();
            foreach (var b in batches)
            {
                var (x, y) = task.Batch(3, b);
                using var xt = Tensor.FromArray(dev, x, 3, 1, 12, 12);
                using var yt = Tensor.FromArray(dev, y, 3);
                using (tape.Record())
                {
                    using var logits = model.Forward(xt);
                    using var l = Ops.CrossEntropy(logits, yt);
                    tape.Backward(l);
                }
            }
            return model.Parameters.SelectMany(p => p.Grad!.ToArray()).ToArray();
        }
        var a = Grads(1);
        var b = Grads(2);
        var both = Grads(1, 2);
        for (int i = 0; i < both.Length; i++) Assert.That(both[i], Is.EqualTo(a[i] + b[i]).Within(1e-6 + 1e-5 * Math.Abs(both[i])));
    }

    [Test]
    public void InferenceRecordsNothing()
    {
        using var model = new VisionTransformer(Device.Cpu, Tiny, seed: 5);
        var (x, _) = NewTask().Batch(2, 0);
        using var xt = Tensor.FromArray(Device.Cpu, x, 2, 1, 12, 12);
        var tape = new Tape();
        using (tape.Record())
        {
            using (Tape.NoGrad())
            using (var logits = model.Forward(xt))
            {
                Assert.That(tape.Count, Is.Zero);
                Assert.That(logits.IsLeaf, Is.True);
            }
            using (model.Forward(xt)) Assert.That(tape.Count, Is.GreaterThan(0));
        }
        tape.Clear();
        Assert.That(Tape.Active, Is.Null);
    }

    [Test]
    public void AdamMatchesDoubleReferenceAndRespectsMask([ValueSource(typeof(Backends), nameof(Backends.Names))] string backend,
        [Values] bool decoupled)
    {
        var dev = Backends.Get(backend);
        const int n = 37;
        var p0 = Init.NormalValues(n, 0, 1, 3);
        using var p = Tensor.FromArray(dev, p0, n);
        p.RequiresGrad = true;
        var maskValues = Enumerable.Range(0, n).Select(i => i % 3 == 0 ? 0f : 1f).ToArray();
        using var mask = Tensor.FromArray(dev, maskValues, n);
        p.Trainability = Trainability.Masked(mask);
        var o = new AdamOptions { LearningRate = 0.01f, Beta1 = 0.8f, Beta2 = 0.95f, Epsilon = 1e-6f, WeightDecay = 0.1f, Decoupled = decoupled };
        using var opt = new Adam([p], o);
        double[] want = p0.Select(v => (double)v).ToArray(), m = new double[n], v2 = new double[n];
        for (int t = 1; t <= 3; t++)
        {
            var g = Init.NormalValues(n, 0, 1, 100 + (ulong)t);
            opt.ZeroGrad();
            if (p.Grad == null) p.SetGrad(Tensor.Zeros(dev, n));
            p.Grad!.CopyFrom(g);
            opt.Step();
            for (int i = 0; i < n; i++)
            {
                if (maskValues[i] == 0) continue;
                double gi = g[i], pi = want[i];
                if (decoupled) pi *= 1 - o.LearningRate * o.WeightDecay;
                else gi += o.WeightDecay * pi;
                m[i] = o.Beta1 * m[i] + (1 - o.Beta1) * gi;
                v2[i] = o.Beta2 * v2[i] + (1 - o.Beta2) * gi * gi;
                double mh = m[i] / (1 - Math.Pow(o.Beta1, t)), vh = v2[i] / (1 - Math.Pow(o.Beta2, t));
                want[i] = pi - o.LearningRate * mh / (Math.Sqrt(vh) + o.Epsilon);
            }
        }
        var got = p.ToArray();
        for (int i = 0; i < n; i++)
        {
            if (maskValues[i] == 0) Assert.That(got[i], Is.EqualTo(p0[i]), $"masked element {i} changed");
            else Assert.That(got[i], Is.EqualTo(want[i]).Within(2e-6), $"element {i}");
        }
        Assert.That(opt.StateBytes, Is.EqualTo(2 * 4 * n));
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void GlobalNormAndClipping(string backend)
    {
        var dev = Backends.Get(backend);
        using var a = Tensor.Parameter(dev, "a", 3, 5);
        using var b = Tensor.Parameter(dev, "b", 7);
        var ga = Init.NormalValues(15, 0, 2, 1);
        var gb = Init.NormalValues(7, 0, 2, 2);
        a.SetGrad(Tensor.FromArray(dev, ga, 3, 5));
        b.SetGrad(Tensor.FromArray(dev, gb, 7));
        double want = Math.Sqrt(ga.Concat(gb).Sum(v => (double)v * v));
        Assert.That(Gradients.GlobalNorm([a, b]), Is.EqualTo(want).Within(1e-9 * want));
        Assert.That(Gradients.ClipGlobalNorm([a, b], 1.0), Is.EqualTo(want).Within(1e-9 * want));
        Assert.That(Gradients.GlobalNorm([a, b]), Is.EqualTo(1.0).Within(1e-5));
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void ViewsShareStorageAndCopyCorrectly(string backend)
    {
        var dev = Backends.Get(backend);
        var data = Enumerable.Range(0, 24).Select(i => (float)i).ToArray();
        using var t = Tensor.FromArray(dev, data, 2, 3, 4);
        using var r = t.Reshape(6, -1);
        Assert.That(r.Shape, Is.EqualTo(new[] { 6, 4 }));
        using var tr = t.Transpose(1, 2);
        Assert.That(tr.IsContiguous, Is.False);
        var want = new float[24];
        for (int a = 0; a < 2; a++) for (int c = 0; c < 4; c++) for (int b = 0; b < 3; b++) want[(a * 4 + c) * 3 + b] = data[(a * 3 + b) * 4 + c];
        Assert.That(tr.ToArray(), Is.EqualTo(want));
        using var s = t.Slice(1, 1, 2);
        Assert.That(s.ToArray(), Is.EqualTo(new float[] { 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23 }));
        t.Dispose();
        Assert.That(r.ToArray()[5], Is.EqualTo(5f), "a view keeps the storage alive");
    }

    [Test]
    public void BadInputGivesClearErrors()
    {
        var dev = Device.Cpu;
        using var x = Tensor.Zeros(dev, 4, 7);
        using var w = Tensor.Zeros(dev, 5, 6);
        var e = Assert.Throws<ArgumentException>(() => Ops.Linear(x, w))!;
        Assert.That(e.Message, Does.Contain("Linear").And.Contain("[4, 7]").And.Contain("[5, 6]"));
        using var a = Tensor.Zeros(dev, 2, 3);
        using var b = Tensor.Zeros(dev, 3, 2);
        e = Assert.Throws<ArgumentException>(() => Ops.Add(a, b))!;
        Assert.That(e.Message, Does.Contain("Add").And.Contain("[2, 3]").And.Contain("[3, 2]"));
        using var ints = Tensor.FromArray(dev, new[] { 1, 2 }, 2);
        Assert.That(Assert.Throws<ArgumentException>(() => Ops.Gelu(ints))!.Message, Does.Contain("Gelu").And.Contain("I32"));
        Assert.That(Assert.Throws<ArgumentException>(() => x.Reshape(5, 5))!.Message, Does.Contain("[4, 7]").And.Contain("[5, 5]"));
        using var logits = Tensor.Zeros(dev, 2, 3);
        using var badTargets = Tensor.FromArray(dev, new[] { 1, 3 }, 2);
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => Ops.CrossEntropy(logits, badTargets))!.Message, Does.Contain("row 1"));

        var gone = Tensor.Zeros(dev, 3);
        gone.Dispose();
        Assert.Throws<ObjectDisposedException>(() => gone.ToArray());
        Assert.Throws<ObjectDisposedException>(() => Ops.Gelu(gone));

        using var nan = Tensor.FromArray(dev, new[] { 1f, float.NaN, float.PositiveInfinity }, 3);
        nan.Name = "loss";
        Assert.That(Numerics.CountNonFinite(nan), Is.EqualTo(2));
        Assert.That(Assert.Throws<ArithmeticException>(() => Numerics.ThrowIfNonFinite(nan, "step 3 loss"))!.Message,
            Does.Contain("step 3 loss").And.Contain("'loss'"));
    }

    [Test]
    public void NonDifferentiableViewWhileRecordingIsRefused()
    {
        using var x = Tensor.Zeros(Device.Cpu, 3, 4);
        x.RequiresGrad = true;
        var tape = new Tape();
        using (tape.Record())
        {
            var e = Assert.Throws<InvalidOperationException>(() => x.Transpose(0, 1))!;
            Assert.That(e.Message, Does.Contain("transpose").And.Contain("not differentiable"));
        }
    }
}
