using Engine.IO;
using Engine.Autograd;
using Engine.Models.Demo;
using Engine.Models.Peft;
using Engine.Models.Vit;
using Engine.Optim;

namespace Engine.Tests;

/// <summary>The PEFT methods on ViT: trainable counts against the papers' arithmetic, what a training step may
/// change, SSF re-parameterisation, SCT and GPS selection, sparse GPS against dense masked GPS, and saving only the
/// trained part.</summary>
[TestFixture, NonParallelizable]
public class PeftTests
{
    static readonly VitConfig Tiny = new() { img_size = 12, patch_size = 4, in_chans = 1, embed_dim = 16, depth = 2, num_heads = 2, mlp_ratio = 2, num_classes = 3 };

    /// <summary>Every method, by its command-line name (gps-dense: GPS with the dense masked gradient).</summary>
    public static readonly string[] Methods = ["full", "linear", "bias", "ssf", "sct", "gps", "gps-dense", "lora", "adapter", "adaptformer", "vpt"];

    /// <summary>LoRA on q and v of every qkv and on fc1, with dropout on its path.</summary>
    static readonly LoraSettings TinyLora = new() { Rank = 3, Alpha = 6, Dropout = 0.1f, Targets = ["attn.qkv[q,v]", "mlp.fc1"] };

    static Tensor Images(Device device, int batch, ulong seed)
    {
        var (x, _) = new PatternTask(1, 12, 4, 3, seed).Batch(batch, 1);
        return Tensor.FromArray(device, x, batch, 1, 12, 12);
    }

    /// <summary>Labelled batches of the pattern task (the caller disposes the images).</summary>
    static List<(Tensor Images, int[] Labels)> Batches(Device device, int count, int size, bool twoViews = false)
    {
        var task = new PatternTask(1, 12, 4, 3, 7);
        var batches = new List<(Tensor, int[])>();
        for (int i = 0; i < count; i++)
        {
            var (x, y) = task.Batch(size, (ulong)i);
            // Two views of each image (the plain image twice; train-mode dropout makes them differ when enabled).
            if (twoViews) (x, y) = ([.. x, .. x], [.. y, .. y]);
            batches.Add((Tensor.FromArray(device, x, y.Length, 1, 12, 12), y));
        }
        return batches;
    }

    static PeftMethod Create(string name, VisionTransformer vit)
    {
        switch (name)
        {
            case "full": return SubsetMethod.Full();
            case "linear": return SubsetMethod.Linear();
            case "bias": return SubsetMethod.Bias();
            case "ssf": return new Ssf(seed: 9);
            case "lora": return new Lora(TinyLora, seed: 9);
            case "adapter": return new Adapter(new AdapterSettings(8, 1f, 0f), seed: 9);
            case "adaptformer": return new AdaptFormer(new AdapterSettings(5, 0.1f, 0.1f), seed: 9);
            case "vpt": return new VptDeep(new VptSettings(3, 0.1f), seed: 9);
        }
        var batches = Batches(vit.Parameters[0].Device, 3, 6, twoViews: name.StartsWith("gps"));
        try
        {
            return name == "sct"
                ? new Sct(SctSelection.Compute(vit, batches, k: 5), seed: 9)
                : new Gps(GpsSelection.Compute(vit, batches, k: 2, seed: 5), sparse: name == "gps");
        }
        finally
        {
            foreach (var (images, _) in batches) images.Dispose();
        }
    }

    static float TrainStep(VisionTransformer vit, Adam opt, Device device, ulong batch)
    {
        var (x, y) = new PatternTask(1, 12, 4, 3, 2).Batch(8, batch);
        using var images = Tensor.FromArray(device, x, 8, 1, 12, 12);
        using var targets = Tensor.FromArray(device, y, 8);
        var tape = new Tape();
        float value;
        using (tape.Record())
        {
            using var logits = vit.Forward(images, trainSeed: batch);
            using var loss = Ops.CrossEntropy(logits, targets);
            value = loss.ToArray()[0];
            tape.Backward(loss);
        }
        opt.Step();
        opt.ZeroGrad();
        return value;
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
                vit.SiteAffine = null;
                vit.LinearHook = null;
                vit.MlpHook = null;
                vit.BlockInputHook = null;
            }
        }
        Expect(new Ssf(), 205_824 + head);                          // SSF paper: 1,536 + 12·2·8,448 + 1,536
        Expect(new Sct(SctSelection.Sites(vit).ToDictionary(s => s.Name, _ => Enumerable.Range(0, 96).ToArray())), 111_744 + head); // 12·(96² + 96)
        foreach (int k in new[] { 1, 2 })                         // GPS: 83,712·K weights + 83,712 biases
        {
            var selection = GpsSelection.SelectedWeights(vit)
                .ToDictionary(p => p.Name!, p => new GpsRows(p.Shape[0], k, [.. Enumerable.Range(0, p.Shape[0] * k).Select(e => e % k)]));
            Expect(new Gps(selection), 83_712L * k + 83_712 + head);
        }
        Expect(new Lora(), 12 * 2 * (8 * 768 + 768 * 8) + head);    // q and v: A [8, 768] and B [768, 8] each, per block
        Expect(new Lora(new LoraSettings { Rank = 4, Targets = ["qkv", "mlp.fc2"] }), 12 * (4 * 768 + 2304 * 4 + 4 * 3072 + 768 * 4) + head);
        Expect(new Adapter(), 12 * (768 * 8 + 8 + 8 * 768 + 768) + head);        // 156,768: down [8, 768] + 8, up [768, 8] + 768
        Expect(new AdaptFormer(), 12 * (768 * 64 + 64 + 64 * 768 + 768) + head); // 1,189,632
        Expect(new VptDeep(), 12 * 50 * 768 + head);                               // 460,800: 50 prompts of 768 per block
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
        Assert.That(vit.SiteAffine, Is.Null);
    }

    [Test]
    public void MergedLoraComputesTheSameLogitsWithOnlyTheModelsOwnParameters()
    {
        using var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3);
        int parameters = vit.Parameters.Count;
        using var lora = new Lora(TinyLora with { Targets = ["attn.qkv[q,v]", "attn.proj", "mlp.fc1", "fc2"] }, seed: 9);
        lora.Apply(vit);
        TrainedLoraB(lora);
        using var images = Images(Device.Cpu, 5, 1);
        float[] want;
        using (var plain = Tape.NoGrad())
        {
            using var before = vit.Forward(images);
            want = before.ToArray();
        }
        var qkv = vit["blocks.1.attn.qkv.weight"].ToArray();
        Assert.That(lora.Merge(), Is.Empty);
        using var after = vit.Forward(images);
        GradCheck.CheckClose("merged logits", after.ToArray(), [.. want.Select(v => (double)v)], 1e-5 * want.Max(Math.Abs), 1e-5);
        Assert.That(vit.LinearHook, Is.Null);
        Assert.That(vit.Parameters, Has.Count.EqualTo(parameters), "the merged model has only its own parameters");
        var merged = vit["blocks.1.attn.qkv.weight"].ToArray();
        int C = Tiny.embed_dim;
        Assert.That(merged.Skip(C * C).Take(C * C), Is.EqualTo(qkv.Skip(C * C).Take(C * C)), "k rows are untouched");
        Assert.That(merged.Take(C * C), Is.Not.EqualTo(qkv.Take(C * C)), "q rows took B·A");
    }

    /// <summary>The adapters compute what their definitions say: Adapter z + up(GELU(down(z))) on the MLP's output z,
    /// AdaptFormer z + s·up(ReLU(down(x))) from the branch's input x (the residual stream after attention), against a
    /// double-precision recomputation from x and z recorded on the plain one-block model; neither merges.</summary>
    [TestCase("adapter"), TestCase("adaptformer")]
    public void TheAdaptersComputeTheirDefinitions(string name)
    {
        var config = Tiny with { depth = 1, num_classes = 0 };
        using var vit = new VisionTransformer(Device.Cpu, config, seed: 3);
        using var images = Images(Device.Cpu, 2, 1);
        using var _ = Tape.NoGrad();
        // The plain model's MLP input and output, recorded at the sites.
        float[]? branchInput = null, mlpOutput = null;
        vit.KeepEveryToken = true; // every token through the one block, in both runs, for the comparison to see them all
        vit.SiteHook = (site, x) =>
        {
            if (site.Name == "blocks.0.attn_residual") branchInput = x.ToArray();
            if (site.Name == "blocks.0.mlp.fc2") mlpOutput = x.ToArray();
            return x;
        };
        using (var plain = vit.Forward(images)) { }
        vit.SiteHook = null;
        using var method = (BottleneckAdapter)Create(name, vit);
        method.Apply(vit);
        TrainedLoraB(method);
        foreach (var b in method.AddedParameters.Where(p => p.Name!.EndsWith("bias"))) Init.Normal(b, 0.2f, 5);
        int C = config.embed_dim, d = method.Settings.Bottleneck, rows = branchInput!.Length / C;
        float[] dw = method.AddedParameters[0].ToArray(), db = method.AddedParameters[1].ToArray(), uw = method.AddedParameters[2].ToArray(), ub = method.AddedParameters[3].ToArray();
        var want = new double[rows * C];
        float[] source = method.Parallel ? branchInput : mlpOutput!;
        for (int r = 0; r < rows; r++)
        {
            var h = new double[d];
            for (int j = 0; j < d; j++)
            {
                double v = db[j];
                for (int c = 0; c < C; c++) v += (double)source[r * C + c] * dw[j * C + c];
                h[j] = method.Gelu ? 0.5 * v * (1 + MathNet.Numerics.SpecialFunctions.Erf(v / Math.Sqrt(2))) : Math.Max(v, 0);
            }
            for (int c = 0; c < C; c++)
            {
                double u = ub[c];
                for (int j = 0; j < d; j++) u += h[j] * uw[c * d + j];
                want[r * C + c] = mlpOutput![r * C + c] + method.Settings.Scale * u;
            }
        }
        // The model's MLP branch with the method applied, on the recorded input and output.
        var fc2 = vit.Sites.First(s => s.Name == "blocks.0.mlp.fc2");
        using var input = Tensor.FromArray(Device.Cpu, branchInput, rows, C);
        var output = Tensor.FromArray(Device.Cpu, mlpOutput!, rows, C);
        using var got = vit.MlpBranch(fc2, input, output, trainSeed: null);
        GradCheck.CheckClose($"{name} branch output", got.ToArray(), want, 1e-5, 1e-5);
        Assert.That(() => method.Merge(), Throws.InstanceOf<NotSupportedException>().With.Message.Contains(method.Gelu ? "GELU" : "ReLU"));
    }

    /// <summary>VPT-deep's prompts get the gradient finite differences of the logits give (every block's prompts matter,
    /// the last block's only through the class token's attention); eval mode is deterministic; it refuses Swin and merging.</summary>
    [Test]
    public void VptDeepPromptGradientsMatchFiniteDifferences()
    {
        using var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3);
        using var vpt = new VptDeep(new VptSettings(Length: 3, Dropout: 0f), seed: 4);
        vpt.Apply(vit);
        using var images = Images(Device.Cpu, 2, 1);
        var upstream = Init.NormalValues(2 * Tiny.num_classes, 0, 1, 9);
        double Objective()
        {
            using var _ = Tape.NoGrad();
            using var logits = vit.Forward(images);
            return logits.ToArray().Select((v, i) => (double)v * upstream[i]).Sum();
        }
        var tape = new Tape();
        using (tape.Record())
        {
            using var logits = vit.Forward(images);
            using var r = Tensor.FromArray(Device.Cpu, upstream, logits.Shape);
            tape.Backward(logits, r);
        }
        foreach (var prompt in vpt.AddedParameters)
        {
            var analytic = prompt.Grad!.ToArray();
            var values = prompt.ToArray();
            var numeric = new double[values.Length];
            const float h = 1e-2f;
            for (int i = 0; i < values.Length; i++)
            {
                float v = values[i];
                values[i] = v + h; prompt.CopyFrom(values); double plus = Objective();
                values[i] = v - h; prompt.CopyFrom(values); double minus = Objective();
                values[i] = v; prompt.CopyFrom(values);
                numeric[i] = (plus - minus) / (2 * h);
            }
            double scale = numeric.Max(Math.Abs);
            Assert.That(scale, Is.GreaterThan(1e-4), $"{prompt.Name} matters to the logits");
            GradCheck.CheckClose(prompt.Name!, analytic, numeric, 2e-3 * scale, 2e-2);
        }
        Assert.That(() => vpt.Merge(), Throws.InstanceOf<NotSupportedException>());
        using var swin = new Models.Swin.Swin(Device.Cpu, new Models.Swin.SwinConfig { img_size = 16, patch_size = 2, embed_dim = 8, depths = [2], num_heads = [2], window_size = 4, num_classes = 3 });
        Assert.That(() => new VptDeep().Apply(swin), Throws.ArgumentException.With.Message.Contains("ViT"));
    }

    [Test]
    public void LoraRefusesTargetsAndSettingsItCannotApply()
    {
        using var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3);
        Assert.That(() => new Lora(new LoraSettings { Targets = ["mlp.fc3"] }).Apply(vit),
            Throws.ArgumentException.With.Message.Contains("'mlp.fc3' matches no Linear layer").And.Message.Contains("attn.qkv, attn.proj, mlp.fc1, mlp.fc2"));
        Assert.That(() => new Lora(new LoraSettings { Targets = ["mlp.fc1[q]"] }).Apply(vit),
            Throws.ArgumentException.With.Message.Contains("not to blocks.0.mlp.fc1"));
        Assert.That(() => new Lora(new LoraSettings { Targets = ["patch_embed"] }).Apply(vit),
            Throws.ArgumentException.With.Message.Contains("matches no Linear layer"), "a convolution is not a Linear layer");
        Assert.That(vit.LinearHook, Is.Null, "a refused Apply installs nothing");
        Assert.That(() => new Lora(new LoraSettings { Rank = 0 }), Throws.ArgumentException.With.Message.Contains("rank 0"));
        Assert.That(() => new Lora(new LoraSettings { Targets = ["attn.qkv[q,x]"] }), Throws.ArgumentException.With.Message.Contains("among q, k, v"));
        Assert.That(() => new Lora(new LoraSettings { Dropout = 1f }), Throws.ArgumentException.With.Message.Contains("dropout 1"));
        Assert.That((PeftRecipe.For("lora") with { Lora = new LoraSettings { Alpha = -1 } }).Problems(), Has.Some.Contains("alpha -1"));
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void FoldedSsfEqualsAScaleShiftAfterEverySite(string backend)
    {
        // The training forward folds each γ, β into its LayerNorm or the Linear bias epilogue; the reference runs
        // Ops.ScaleShift on every site's output instead. Logits and every gradient (scales, shifts, head) must agree.
        var device = Backends.Get(backend);
        using var vit = new VisionTransformer(device, Tiny, seed: 3);
        ulong stream = 100; // biases and norm weights away from their 0 and 1 initialisation, so every fold term counts
        foreach (var p in vit.Parameters.Where(p => p.Name!.EndsWith(".bias") || p.Name.Contains("norm")))
            Init.Normal(p, 0.3f, stream++, mean: p.Name!.EndsWith(".weight") ? 1f : 0f);
        using var ssf = new Ssf(seed: 9);
        ssf.Apply(vit);
        var trainable = ssf.Trainable(vit);
        using var images = Images(device, 4, 1);
        using var targets = Tensor.FromArray(device, [0, 2, 1, 2], 4);
        (float[] Logits, Dictionary<string, float[]> Grads) Run()
        {
            var tape = new Tape();
            float[] logits;
            using (tape.Record())
            {
                using var y = vit.Forward(images);
                using var loss = Ops.CrossEntropy(y, targets);
                logits = y.ToArray();
                tape.Backward(loss);
            }
            var grads = trainable.ToDictionary(p => p.Name!, p => p.Grad!.ToArray());
            foreach (var p in trainable) p.DropGrad();
            return (logits, grads);
        }
        var folded = Run();
        var affine = vit.SiteAffine!;
        vit.SiteAffine = null;
        vit.SiteHook = (site, x) => affine(site) is { } a ? Ops.ScaleShift(x, a.Scale, a.Shift) : x;
        var reference = Run();
        Assert.That(folded.Grads.Keys, Has.Count.EqualTo(2 * (2 + 6 * Tiny.depth) + 2));
        GradCheck.CheckClose("logits", folded.Logits, [.. reference.Logits.Select(v => (double)v)], 1e-5, 1e-5);
        foreach (var (name, want) in reference.Grads)
            GradCheck.CheckClose(name, folded.Grads[name], [.. want.Select(v => (double)v)], 1e-5 * want.Max(Math.Abs) + 1e-7, 1e-4);
    }

    [Test]
    public void AStepChangesOnlyWhatTrains([ValueSource(typeof(Backends), nameof(Backends.Names))] string backend,
        [ValueSource(nameof(Methods))] string methodName)
    {
        var device = Backends.Get(backend);
        using var vit = new VisionTransformer(device, Tiny, seed: 3);
        using var method = Create(methodName, vit);
        method.Apply(vit);
        TrainedLoraB(method);
        var before = vit.Parameters.Concat(method.AddedParameters).ToDictionary(p => p.Name!, p => p.ToArray());
        var trainable = method.Trainable(vit);
        Assert.That(trainable.Select(p => p.Name), Does.Contain("head.weight"));
        using var opt = new Adam(trainable, new AdamOptions { LearningRate = 1e-2f });
        TrainStep(vit, opt, device, 1);
        foreach (var p in vit.Parameters.Where(p => !p.RequiresGrad))
        {
            Assert.That(p.Grad, Is.Null, $"{p.Name}: a frozen tensor got a gradient");
            Assert.That(p.ToArray(), Is.EqualTo(before[p.Name!]), $"{p.Name}: frozen but changed");
        }
        foreach (var p in trainable)
        {
            var now = p.ToArray();
            Assert.That(now, Is.Not.EqualTo(before[p.Name!]), $"{p.Name}: trainable but unchanged");
            var selected = Selected(p);
            if (selected == null) continue;
            for (int i = 0; i < now.Length; i++)
                if (!selected[i]) Assert.That(now[i], Is.EqualTo(before[p.Name!][i]), $"{p.Name}[{i}]: not selected but changed");
        }
    }

    /// <summary>LoRA's B and the adapters' up-projections away from their zero start, as after training (while they
    /// are zero, the first gradient of what feeds them is zero).</summary>
    static void TrainedLoraB(PeftMethod method)
    {
        ulong seed = 77;
        foreach (var b in method.AddedParameters.Where(p => p.Name!.Contains(".lora_B") || p.Name!.Contains(".up_proj.")))
            Init.Normal(b, 0.3f, seed++);
    }

    /// <summary>Which elements of a GPS weight are selected (null: the whole tensor trains).</summary>
    static bool[]? Selected(Tensor p)
    {
        if (p.Trainability.Mask is { } mask) return [.. mask.ToArray().Select(v => v != 0f)];
        if (p.Trainability.Entries is not { } entries) return null;
        var selected = new bool[p.Count];
        var index = entries.ToIntArray();
        int k = entries.Shape[1], perRow = (int)(p.Count / p.Shape[0]);
        for (int e = 0; e < index.Length; e++) selected[e / k * perRow + index[e]] = true;
        return selected;
    }

    [TestCaseSource(nameof(Methods))]
    public void ATrainingLoopLowersTheLoss(string methodName)
    {
        using var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3);
        using var method = Create(methodName, vit);
        method.Apply(vit);
        using var opt = new Adam(method.Trainable(vit), new AdamOptions { LearningRate = 1e-2f });
        // Fitting one batch: the loss must fall below its start whatever the method trains. (On this random tiny model
        // BitFit plateaus near the class prior, so the bar is modest: the mean of the last 10 steps 3% under the start.)
        var losses = Enumerable.Range(0, 60).Select(_ => TrainStep(vit, opt, Device.Cpu, 0)).ToArray();
        double last = losses.TakeLast(10).Average();
        Assert.That(last, Is.LessThan(losses[0] * 0.97), $"{methodName}: loss {losses[0]:F4} → {last:F4}");
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void SparseGpsMatchesDenseMaskedGpsStepForStep(string backend)
    {
        var device = Backends.Get(backend);
        // No qkv bias: the key bias has an exactly zero true gradient (softmax ignores a shift shared by all keys), so
        // its computed gradient is rounding noise that Adam turns into ±lr steps, in either implementation.
        var config = Tiny with { qkv_bias = false };
        using var sparseVit = new VisionTransformer(device, config, seed: 3);
        using var denseVit = new VisionTransformer(device, config, seed: 3);
        var batches = Batches(device, 2, 6, twoViews: true);
        var selection = GpsSelection.Compute(sparseVit, batches, k: 3);
        foreach (var (images, _) in batches) images.Dispose();
        using var sparse = new Gps(selection);
        using var dense = new Gps(selection, sparse: false);
        sparse.Apply(sparseVit);
        dense.Apply(denseVit);
        Assert.That(sparseVit["blocks.0.mlp.fc1.weight"].Trainability.Entries, Is.Not.Null);
        Assert.That(denseVit["blocks.0.mlp.fc1.weight"].Trainability.Mask, Is.Not.Null);
        var options = new AdamOptions { LearningRate = 1e-2f, WeightDecay = 0, Decoupled = false }; // GPS: plain Adam, no decay
        using var sparseOpt = new Adam(sparse.Trainable(sparseVit), options);
        using var denseOpt = new Adam(dense.Trainable(denseVit), options);
        long trainable = sparse.TrainableCount(sparseVit);
        Assert.That(dense.TrainableCount(denseVit), Is.EqualTo(trainable));
        Assert.That(sparseOpt.StateBytes, Is.EqualTo(2 * 4 * trainable), "sparse optimizer state grows with the trainable entries only");
        for (ulong step = 0; step < 4; step++)
        {
            float a = TrainStep(sparseVit, sparseOpt, device, step), b = TrainStep(denseVit, denseOpt, device, step);
            Assert.That(a, Is.EqualTo(b).Within(1e-5 * Math.Abs(b)), $"loss at step {step}");
            foreach (var p in sparseVit.Parameters)
            {
                var want = denseVit[p.Name!].ToArray();
                GradCheck.CheckClose($"step {step} {p.Name}", p.ToArray(), [.. want.Select(v => (double)v)], 2e-6, 1e-5);
            }
        }
    }

    /// <summary>On ViT (class token dropped) and on Swin (no class token; two stages of sites, one shifted).</summary>
    [TestCase("vit"), TestCase("swin")]
    public void SctSelectionEqualsAStraightforwardRecomputation(string family)
    {
        using Models.IImageClassifier vit = family == "vit" ? new VisionTransformer(Device.Cpu, Tiny, seed: 3)
            : new Models.Swin.Swin(Device.Cpu, new Models.Swin.SwinConfig
            {
                img_size = 12, in_chans = 1, patch_size = 2, embed_dim = 8, depths = [2, 2], num_heads = [2, 2], window_size = 3, num_classes = 3,
            }, seed: 3);
        var batches = Batches(Device.Cpu, 3, 5);
        const int k = 5;
        var selection = SctSelection.Compute(vit, batches, k);
        // Recompute one image at a time: keep each image's residual stream after attention, then by the definition
        // score_d = mean over classes c of sqrt(Σ_{images of c, patch tokens} x²), keep the channels strictly above the
        // (K+1)-th largest score (the reference's threshold rule), ascending.
        var features = SctSelection.Sites(vit).ToDictionary(s => s.Name, _ => new List<(int Label, float[] X)>());
        int label = 0;
        vit.KeepEveryToken = true; // the hook reads every token of every site
        vit.SiteHook = (site, x) =>
        {
            if (features.TryGetValue(site.Name, out var list)) list.Add((label, x.ToArray()));
            return x;
        };
        foreach (var (images, labels) in batches)
            for (int b = 0; b < labels.Length; b++)
            {
                label = labels[b];
                using var one = images.Slice(0, b, 1).Contiguous();
                using var _ = Tape.NoGrad();
                vit.ForwardFeatures(one).Dispose();
            }
        vit.SiteHook = null;
        vit.KeepEveryToken = false;
        Assert.That(selection.Keys, Is.EquivalentTo(features.Keys));
        foreach (var (site, list) in features)
        {
            int C = vit.Sites.First(s => s.Name == site).Channels, T = list[0].X.Length / C, first = vit.NumPrefixTokens;
            var scores = new double[C];
            var classes = list.Select(f => f.Label).Distinct().ToList();
            foreach (int c in classes)
                for (int d = 0; d < C; d++)
                    scores[d] += Math.Sqrt(list.Where(f => f.Label == c).Sum(f => Enumerable.Range(first, T - first).Sum(t => (double)f.X[t * C + d] * f.X[t * C + d]))) / classes.Count;
            double threshold = scores.OrderDescending().ElementAt(k);
            var want = Enumerable.Range(0, C).Where(d => scores[d] > threshold).ToArray();
            Assert.That(selection[site], Is.EqualTo(want), site);
        }
        foreach (var (images, _) in batches) images.Dispose();
    }

    [Test]
    public void GpsSelectionKeepsTheLargestAccumulatedGradientsPerRow()
    {
        using var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3);
        var batches = Batches(Device.Cpu, 2, 4, twoViews: true);
        var selection = GpsSelection.Compute(vit, batches, k: 2, seed: 11);
        Assert.That(GpsSelection.Compute(vit, batches, k: 2, seed: 11)["blocks.1.attn.qkv.weight"].Columns,
            Is.EqualTo(selection["blocks.1.attn.qkv.weight"].Columns), "the same seed selects the same entries");
        Assert.That(vit.Parameters.All(p => p.Grad == null), "the selection pass leaves no gradient behind");
        Assert.That(selection.Keys, Does.Not.Contain("head.weight").And.Not.Contain("pos_embed").And.Not.Contain("blocks.0.norm1.weight"));
        // Recompute the accumulated gradient with a plain tape over every parameter, then rank by sorting.
        foreach (var p in vit.Parameters) p.RequiresGrad = true;
        var tape = new Tape();
        ulong batch = 0;
        foreach (var (images, labels) in batches)
        {
            using var lt = Tensor.FromArray(Device.Cpu, labels, labels.Length);
            Tensor loss;
            using (tape.Record())
            {
                using var f = vit.ForwardFeatures(images, Kernels.CounterRng.Hash(11, batch++));
                using var z = Ops.L2Normalize(f);
                using var s = Ops.Linear(z, z);
                loss = Ops.SupConLoss(s, lt, 0.07f);
            }
            using (loss) tape.Backward(loss);
        }
        Assert.That(vit["head.weight"].Grad, Is.Null, "the contrastive loss never reaches the head");
        foreach (var (name, rows) in selection)
        {
            var g = vit[name].Grad!.ToArray();
            int perRow = g.Length / rows.Rows;
            for (int o = 0; o < rows.Rows; o++)
            {
                var want = Enumerable.Range(0, perRow).OrderByDescending(c => Math.Abs(g[o * perRow + c])).Take(2).Order();
                Assert.That(rows.Columns.Skip(o * 2).Take(2), Is.EqualTo(want), $"{name} row {o}");
            }
        }
        foreach (var (images, _) in batches) images.Dispose();
    }

    [TestCaseSource(nameof(Methods))]
    public void TheTrainedPartReloadsOntoTheBaseWeights(string methodName)
    {
        string dir = Files.TempDir();
        string path = Path.Combine(dir, "trained.safetensors");
        using var images = Images(Device.Cpu, 3, 4);
        float[] want;
        long fileBytes;
        using (var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3))
        using (var method = Create(methodName, vit))
        {
            method.Apply(vit);
            using (var opt = new Adam(method.Trainable(vit), new AdamOptions { LearningRate = 1e-2f }))
                for (ulong i = 0; i < 3; i++) TrainStep(vit, opt, Device.Cpu, i);
            method.SaveTrained(vit, path);
            using var logits = vit.Forward(images);
            want = logits.ToArray();
            fileBytes = new FileInfo(path).Length;
            if (methodName != "full") Assert.That(fileBytes, Is.LessThan(vit.ParameterCount * 4 / 2), "only the trained part is saved");
        }
        using (var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3))
        {
            using PeftMethod method = methodName switch
            {
                "sct" => new Sct(SctSelection.Read(path), seed: 1234),
                "gps" or "gps-dense" => new Gps(GpsSelection.Read(path), sparse: methodName == "gps"),
                "ssf" => new Ssf(seed: 1234),
                "lora" or "adapter" or "adaptformer" or "vpt" => PeftMethod.ForTrainedFile(path), // settings from the file's metadata
                _ => Create(methodName, vit),
            };
            method.Apply(vit);
            method.LoadTrained(vit, path);
            using var logits = vit.Forward(images);
            Assert.That(logits.ToArray(), Is.EqualTo(want));
            var wrong = methodName == "bias" ? SubsetMethod.Linear() : SubsetMethod.Bias();
            var e = Assert.Throws<InvalidInputException>(() => wrong.LoadTrained(vit, path))!;
            Assert.That(e.Message, Does.Contain(method.Name).And.Contain(wrong.Name));
        }
        Directory.Delete(dir, true);
    }

    [Test]
    public void SelectionsRoundTripAndBadSelectionsAreRefused()
    {
        string dir = Files.TempDir();
        using var vit = new VisionTransformer(Device.Cpu, Tiny, seed: 3);
        var sct = new Dictionary<string, int[]> { ["blocks.0.attn_residual"] = [1, 3, 8], ["blocks.1.attn_residual"] = [0, 2, 15] };
        SctSelection.Save(Path.Combine(dir, "sct.safetensors"), sct);
        Assert.That(SctSelection.Read(Path.Combine(dir, "sct.safetensors")), Is.EqualTo(sct));
        var gps = new Dictionary<string, GpsRows> { ["blocks.0.mlp.fc2.weight"] = new(16, 2, [.. Enumerable.Range(0, 32).Select(i => i % 32)]) };
        GpsSelection.Save(Path.Combine(dir, "gps.safetensors"), gps);
        var read = GpsSelection.Read(Path.Combine(dir, "gps.safetensors"));
        Assert.That(read["blocks.0.mlp.fc2.weight"].Columns, Is.EqualTo(gps["blocks.0.mlp.fc2.weight"].Columns));
        var e1 = Assert.Throws<InvalidInputException>(() => GpsSelection.Read(Path.Combine(dir, "sct.safetensors")))!;
        Assert.That(e1.Message, Does.Contain("sct.safetensors").And.Contain("gps_index"));
        var e2 = Assert.Throws<ArgumentException>(() => new Sct(new Dictionary<string, int[]> { ["blocks.7.attn_residual"] = [1] }).Apply(vit))!;
        Assert.That(e2.Message, Does.Contain("blocks.7.attn_residual"));
        var e3 = Assert.Throws<ArgumentException>(() => new Sct(new Dictionary<string, int[]> { ["blocks.0.attn_residual"] = [1, 16] }).Apply(vit))!;
        Assert.That(e3.Message, Does.Contain("[0, 16)"));
        var e4 = Assert.Throws<ArgumentException>(() => new Gps(gps).Apply(vit))!;
        Assert.That(e4.Message, Does.Contain("no entry"));
        Directory.Delete(dir, true);
    }
}

/// <summary>The recipes: the official scripts' values and schedules.</summary>
public class PeftRecipeTests
{
    [Test]
    public void SchedulesFollowTheScripts()
    {
        var ssf = PeftRecipe.For("ssf", "cifar");
        Assert.That(ssf.TotalEpochs, Is.EqualTo(110), "100 epochs plus timm's 10 cooldown epochs");
        Assert.That(ssf.LearningRateAt(0), Is.EqualTo(1e-7f));
        Assert.That(ssf.LearningRateAt(5), Is.EqualTo(1e-7f + 5 * (5e-3f - 1e-7f) / 10).Within(1e-9));
        Assert.That(ssf.LearningRateAt(10), Is.EqualTo(1e-8 + 0.5 * (5e-3 - 1e-8) * (1 + Math.Cos(Math.PI * 10 / 100))).Within(1e-9));
        Assert.That(ssf.LearningRateAt(105), Is.EqualTo(1e-8f));
        var sct = PeftRecipe.For("sct", "dtd");
        Assert.That((sct.LearningRate, sct.WeightDecay, sct.Augment, sct.LabelSmoothing, sct.TotalEpochs), Is.EqualTo((0.0032f, 0.04f, true, 0.1f, 100)));
        Assert.That(sct.LearningRateAt(0), Is.EqualTo(1e-6f));
        Assert.That(sct.LearningRateAt(1), Is.EqualTo(1e-6f), "SCT steps its scheduler with the epoch just run");
        Assert.That(sct.LearningRateAt(11), Is.EqualTo(1e-5 + 0.5 * (0.0032 - 1e-5) * (1 + Math.Cos(Math.PI * 10 / 100))).Within(1e-9));
        var gps = PeftRecipe.For("gps", "patch_camelyon");
        Assert.That((gps.Optimizer, gps.WeightDecay, gps.BatchSize, gps.K, gps.LearningRate), Is.EqualTo((OptimizerKind.Adam, 0f, 32, 2, 0.004f)));
        Assert.That(PeftRecipe.For("gps").K, Is.EqualTo(1));
        Assert.That(PeftRecipe.For("gps", "dtd", "swin").Normalization, Is.EqualTo("imagenet"), "Swin and ConvNeXt: ImageNet statistics");
        Assert.That(PeftRecipe.For("ssf", "dtd", "convnext") with { Normalization = "inception" }, Is.EqualTo(PeftRecipe.For("ssf", "dtd")), "nothing else differs");
        Assert.That(() => PeftRecipe.For("ssf", null, "resnet"), Throws.ArgumentException.With.Message.Contains("resnet"));
        var e = Assert.Throws<ArgumentException>(() => PeftRecipe.For("dora"))!;
        Assert.That(e.Message, Does.Contain("dora").And.Contain("ssf").And.Contain("lora"));
        Assert.That(PeftRecipe.For("lora", "cifar", "convnext").Lora!.Targets, Is.EqualTo(new[] { "mlp.fc1", "mlp.fc2" }), "ConvNeXt has no attention");
        Assert.That(PeftRecipe.For("ssf").Lora, Is.Null);
        Assert.That(Assert.Throws<ArgumentException>(() => PeftRecipe.For("ssf", "cifar100"))!.Message, Does.Contain("cifar100").And.Contain("cifar,"));
    }

    [Test]
    public void WeightDecayGoesWhereTheRecipeSaysSo()
    {
        using var vit = new VisionTransformer(Device.Cpu, new VitConfig { img_size = 8, patch_size = 4, in_chans = 1, embed_dim = 8, depth = 1, num_heads = 2, num_classes = 3 });
        using var ssf = new Ssf();
        ssf.Apply(vit);
        var recipe = PeftRecipe.For("ssf");
        using var opt = new Adam(ssf.Trainable(vit), recipe.AdamOptions);
        recipe.ConfigureWeightDecay(opt);
        Assert.That(opt.WeightDecays.Where(kv => kv.Value > 0).Select(kv => kv.Key.Name), Is.EqualTo(new[] { "head.weight" }), "SSF: only the head weight decays");
        var sct = PeftRecipe.For("sct");
        using var opt2 = new Adam(ssf.Trainable(vit), sct.AdamOptions);
        sct.ConfigureWeightDecay(opt2);
        Assert.That(opt2.WeightDecays.Values, Has.All.EqualTo(sct.WeightDecay), "SCT: every trainable decays");
        Assert.That(opt2.Options.Decoupled, Is.True);
        Assert.That(PeftRecipe.For("gps").AdamOptions.Decoupled, Is.False, "GPS: plain Adam");
    }
}
