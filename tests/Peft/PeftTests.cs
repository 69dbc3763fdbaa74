using Engine.Autograd;
using Engine.Models.Demo;
using Engine.Models.Peft;
using Engine.Models.Vit;
using Engine.Optim;

namespace Engine.Tests;

/// <summary>The PEFT methods on ViT: trainable counts against the papers' arithmetic, what a training step may
/// change, SSF re-parameterisation, and saving only the trained part.</summary>
[TestFixture, NonParallelizable]
public class PeftTests
{
    static readonly VitConfig Tiny = new() { img_size = 12, patch_size = 4, in_chans = 1, embed_dim = 16, depth = 2, num_heads = 2, mlp_ratio = 2, num_classes = 3 };

    static Tensor Images(Device device, int batch, ulong seed)
    {
        var (x, _) = new PatternTask(1, 12, 4, 3, seed).Batch(batch, 1);
        return Tensor.FromArray(device, x, batch, 1, 12, 12);
    }

    [Test]
    public void TrainableCountsOnVitB16MatchThePapers()
    {
        const int classes = 100, head = 769 * classes;
        using var vit = new VisionTransformer(Device.Cpu, VitConfig.Presets["vit_base_patch16_224"] with { num_classes = classes });
        void Expect(PeftMethod method, long count)
        {
            using (method)
            {
                method.Apply(vit);
                Assert.That(method.TrainableCount(vit), Is.EqualTo(count), method.Name);
                vit.SiteHook = null;
            }
        }
        Expect(new Ssf(), 205_824 + head);                          // SSF paper: 1,536 + 12·2·8,448 + 1,536
        Expect(SubsetMethod.Linear(), head);
        Expect(SubsetMethod.Bias(), 768 + 12 * (2304 + 768 + 3072 + 768 + 2 * 768) + 768 + head);
        Expect(SubsetMethod.Full(), vit.ParameterCount);
    }

    [Test]
    public void MergedSsfComputesTheSameLogitsWithOnlyTheModelsOwnParameters()
    {
        using var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3);
        using var ssf = new Ssf(seed: 9);
        ssf.Apply(vit);
        using var images = Images(Device.Cpu, 5, 1);
        using var before = vit.Forward(images);
        ssf.Merge();
        using var after = vit.Forward(images);
        var want = before.ToArray();
        double scale = want.Max(Math.Abs);
        GradCheck.CheckClose("merged logits", after.ToArray(), want.Select(v => (double)v).ToArray(), 1e-5 * scale, 1e-5);
        Assert.That(vit.SiteHook, Is.Null);
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void AStepChangesOnlyWhatTrains(string backend)
    {
        var device = Backends.Get(backend);
        using var vit = new VisionTransformer(device, Tiny, seed: 3);
        using var ssf = new Ssf(seed: 9);
        ssf.Apply(vit);
        var frozenBefore = vit.Parameters.Where(p => !p.RequiresGrad).ToDictionary(p => p.Name!, p => p.ToArray());
        var trainable = ssf.Trainable(vit);
        var trainableBefore = trainable.ToDictionary(p => p.Name!, p => p.ToArray());
        Assert.That(frozenBefore.Keys, Does.Not.Contain("head.weight"));
        using var opt = new Adam(trainable, new AdamOptions { LearningRate = 1e-2f });
        var (x, y) = new PatternTask(1, 12, 4, 3, 2).Batch(4, 1);
        using var images = Tensor.FromArray(device, x, 4, 1, 12, 12);
        using var targets = Tensor.FromArray(device, y, 4);
        var tape = new Tape();
        using (tape.Record())
        {
            using var logits = vit.Forward(images, trainSeed: 1);
            using var loss = Ops.CrossEntropy(logits, targets);
            tape.Backward(loss);
        }
        opt.Step();
        foreach (var p in vit.Parameters.Where(p => !p.RequiresGrad))
        {
            Assert.That(p.Grad, Is.Null, $"{p.Name}: a frozen tensor got a gradient");
            Assert.That(p.ToArray(), Is.EqualTo(frozenBefore[p.Name!]), $"{p.Name}: frozen but changed");
        }
        foreach (var p in trainable)
            Assert.That(p.ToArray(), Is.Not.EqualTo(trainableBefore[p.Name!]), $"{p.Name}: trainable but unchanged");
    }

    [Test]
    public void TheTrainedPartReloadsOntoTheBaseWeights()
    {
        string dir = Files.TempDir();
        string path = Path.Combine(dir, "ssf.safetensors");
        using var images = Images(Device.Cpu, 3, 4);
        float[] want;
        using (var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3))
        using (var ssf = new Ssf(seed: 9))
        {
            ssf.Apply(vit);
            vit["head.bias"].CopyFrom([0.5f, -0.25f, 1f]); // a "trained" head
            ssf.SaveTrained(vit, path);
            using var logits = vit.Forward(images);
            want = logits.ToArray();
        }
        using (var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3))
        using (var ssf = new Ssf(seed: 1234))
        {
            ssf.Apply(vit);
            ssf.LoadTrained(vit, path);
            using var logits = vit.Forward(images);
            Assert.That(logits.ToArray(), Is.EqualTo(want));
            var e = Assert.Throws<InvalidDataException>(() => SubsetMethod.Bias().LoadTrained(vit, path))!;
            Assert.That(e.Message, Does.Contain("ssf").And.Contain("bias"));
        }
        Directory.Delete(dir, true);
    }
}
