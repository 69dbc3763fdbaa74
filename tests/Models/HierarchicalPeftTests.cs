using Engine.Autograd;
using Engine.Models;
using Engine.Models.ConvNeXt;
using Engine.Models.Peft;
using Engine.Models.Swin;

namespace Engine.Tests;

/// <summary>The PEFT methods on ConvNeXt and Swin: a training run changes only what the method trains and lowers the
/// loss; SSF merges exactly (ConvNeXt's final stage-output affine stays an affine); SCT takes K per stage on Swin.</summary>
[TestFixture]
public class HierarchicalPeftTests
{
    const int Size = 16, Classes = 3;

    static IImageClassifier Create(string family) => family switch
    {
        "swin" => new Swin(Device.Cpu, new SwinConfig { img_size = Size, patch_size = 2, embed_dim = 8, depths = [2, 2], num_heads = [2, 2], window_size = 4, num_classes = Classes }, seed: 4),
        _ => WithLayerScale(new ConvNeXt(Device.Cpu, new ConvNeXtConfig { img_size = Size, depths = [1, 1], dims = [8, 16], num_classes = Classes }, seed: 4)),
    };

    /// <summary>Layer scale away from its 1e-6 init, so the blocks matter to the output.</summary>
    static ConvNeXt WithLayerScale(ConvNeXt model)
    {
        foreach (var p in model.Parameters.Where(p => p.Name!.EndsWith(".gamma"))) Init.Constant(p, 0.5f);
        return model;
    }

    static (Tensor Images, Tensor Targets, int[] Labels) Batch()
    {
        var (x, y) = new Models.Demo.PatternTask(Classes, Size, 4, 3, 2).Batch(12, 0);
        return (Tensor.FromArray(Device.Cpu, x, 12, 3, Size, Size), Tensor.FromArray(Device.Cpu, y, 12), y);
    }

    /// <summary>A GPS selection of one input per output row (row r keeps input r mod inputs) for every selected weight.</summary>
    static Dictionary<string, GpsRows> EveryRowOnce(IPeftModel model) =>
        GpsSelection.SelectedWeights(model).ToDictionary(p => p.Name!,
            p => new GpsRows(p.Shape[0], 1, [.. Enumerable.Range(0, p.Shape[0]).Select(r => r % (int)(p.Count / p.Shape[0]))]));

    static PeftMethod Method(string name, IImageClassifier model, Tensor images, int[] labels) => name switch
    {
        "full" => SubsetMethod.Full(),
        "linear" => SubsetMethod.Linear(),
        "bias" => SubsetMethod.Bias(),
        "ssf" => new Ssf(seed: 3),
        "gps" => new Gps(EveryRowOnce(model)),
        "gps-dense" => new Gps(EveryRowOnce(model), sparse: false),
        "sct" => new Sct(SctSelection.Compute(model, [(images, labels)], k: 4, new Dictionary<string, int> { ["layers.1"] = 6 })),
        "lora" => new Lora(LoraOn(model) with { Rank = 2, Dropout = 0.1f }, seed: 3),
        "adapter" => new Adapter(new AdapterSettings(3, 1f, 0f), seed: 3),
        "adaptformer" => new AdaptFormer(new AdapterSettings(4, 0.1f, 0.1f), seed: 3),
        _ => throw new ArgumentException(name),
    };

    /// <summary>LoRA's defaults for the model's family (ConvNeXt, which has no attention: its MLP layers).</summary>
    static LoraSettings LoraOn(IImageClassifier model) => LoraSettings.For(model.Family);

    [TestCase("convnext", "full"), TestCase("convnext", "linear"), TestCase("convnext", "bias"), TestCase("convnext", "ssf"),
     TestCase("convnext", "gps"), TestCase("convnext", "gps-dense"), TestCase("convnext", "lora"), TestCase("swin", "lora"),
     TestCase("convnext", "adapter"), TestCase("swin", "adapter"), TestCase("convnext", "adaptformer"), TestCase("swin", "adaptformer"),
     TestCase("swin", "full"), TestCase("swin", "linear"), TestCase("swin", "bias"), TestCase("swin", "ssf"),
     TestCase("swin", "gps"), TestCase("swin", "gps-dense"), TestCase("swin", "sct")]
    public void TrainingChangesOnlyWhatTrainsAndLowersTheLoss(string family, string methodName)
    {
        using var model = Create(family);
        var (images, targets, labels) = Batch();
        using var _i = images;
        using var _t = targets;
        using var method = Method(methodName, model, images, labels);
        method.Apply(model);
        var trainable = method.Trainable(model).ToHashSet();
        var before = model.Parameters.ToDictionary(p => p.Name!, p => p.ToArray());
        using var opt = new Optim.Adam(method.Trainable(model), new Optim.AdamOptions { LearningRate = 1e-2f, WeightDecay = 0 });
        var losses = new List<float>();
        for (int step = 0; step < 40; step++)
        {
            var tape = new Tape();
            using (tape.Record())
            {
                using var logits = model.Forward(images, trainSeed: (ulong)step);
                using var loss = Ops.CrossEntropy(logits, targets);
                losses.Add(loss.ToArray()[0]);
                tape.Backward(loss);
            }
            opt.Step();
            opt.ZeroGrad();
        }
        foreach (var p in model.Parameters.Where(p => !trainable.Contains(p)))
            Assert.That(p.ToArray(), Is.EqualTo(before[p.Name!]), $"{family} {methodName}: frozen {p.Name} changed");
        if (methodName.StartsWith("gps"))
            foreach (var (p, rows) in model.Parameters.Where(p => p.Trainability.Kind != TrainableKind.Dense).Select(p => (p, EveryRowOnce(model)[p.Name!])))
            {
                var after = p.ToArray();
                var selected = Enumerable.Range(0, rows.Columns.Length).Select(e => rows.FlatIndex(e, (int)(p.Count / rows.Rows))).ToHashSet();
                Assert.That(Enumerable.Range(0, after.Length).Where(i => !selected.Contains(i)).All(i => after[i] == before[p.Name!][i]),
                    $"{family} {methodName}: an unselected entry of {p.Name} changed");
            }
        Assert.That(losses.TakeLast(5).Average(), Is.LessThan(losses[0] * 0.9), $"{family} {methodName}: loss {losses[0]:F3} → {losses[^1]:F3}");
    }

    /// <summary>Sparse GPS covers every weight whose op has a sparse gradient (ConvNeXt's depthwise kernels, Swin's
    /// patch-merging reductions, which are no site's); only Swin's relative position tables fall back to a mask.</summary>
    [TestCase("convnext"), TestCase("swin")]
    public void SparseGpsReachesEveryWeightWithASparseGradient(string family)
    {
        using var model = Create(family);
        using var method = new Gps(EveryRowOnce(model));
        method.Apply(model);
        var selected = GpsSelection.SelectedWeights(model).ToList();
        Assert.That(selected.Where(p => p.Trainability.Entries == null).Select(p => p.Name), Is.Empty);
        if (family == "swin") // its name contains "bias": trained whole, as the reference's utils/pruning.py
            Assert.That(model.Parameters.Where(p => p.Name!.EndsWith("relative_position_bias_table")).All(p => p.RequiresGrad && p.Trainability.Kind == TrainableKind.Dense));
        Assert.That(selected.Select(p => p.Name), family == "swin" ? Has.Some.EndsWith("downsample.reduction.weight") : Has.Some.EndsWith("conv_dw.weight"));
    }

    [TestCase("swin"), TestCase("convnext")]
    public void SsfMergesIntoTheSameLogits(string family)
    {
        using var model = Create(family);
        var (images, targets, _) = Batch();
        using var _i = images;
        using var _t = targets;
        using var ssf = new Ssf(seed: 5);
        ssf.Apply(model);
        foreach (var p in ssf.AddedParameters) // move every γ, β well away from 1, 0
            p.CopyFrom([.. p.ToArray().Select((v, i) => v + 0.3f * MathF.Sin(i + p.Count))]);
        using var _g = Tape.NoGrad();
        float[] want;
        using (var logits = model.Forward(images)) want = logits.ToArray();
        var kept = ssf.Merge();
        Assert.That(kept, Is.EqualTo(family == "convnext" ? new[] { "stages.1" } : Array.Empty<string>()), "only ConvNeXt's stage output stays an affine");
        using var merged = model.Forward(images);
        GradCheck.CheckClose($"{family} merged logits", merged.ToArray(), [.. want.Select(v => (double)v)], 2e-5, 2e-5);
        Assert.That(model.SiteAffine == null, Is.EqualTo(family == "swin"), "nothing is left to apply on Swin");
    }

    [TestCase("swin"), TestCase("convnext")]
    public void LoraMergesIntoTheSameLogits(string family)
    {
        using var model = Create(family);
        var (images, targets, _) = Batch();
        using var _i = images;
        using var _t = targets;
        using var lora = new Lora(LoraOn(model) with { Rank = 3, Alpha = 4 }, seed: 5);
        lora.Apply(model);
        foreach (var p in lora.AddedParameters.Where(p => p.Name!.Contains(".lora_B"))) // as after training
            p.CopyFrom([.. p.ToArray().Select((_, i) => 0.3f * MathF.Sin(i + p.Count))]);
        using var _g = Tape.NoGrad();
        float[] want;
        using (var logits = model.Forward(images)) want = logits.ToArray();
        Assert.That(lora.Merge(), Is.Empty);
        using var merged = model.Forward(images);
        GradCheck.CheckClose($"{family} merged logits", merged.ToArray(), [.. want.Select(v => (double)v)], 2e-5, 2e-5);
        Assert.That(model.LinearHook, Is.Null);
    }

    [Test]
    public void SctKPerStageIsValidated()
    {
        using var model = Create("swin");
        var (images, targets, labels) = Batch();
        using var _i = images;
        using var _t = targets;
        var selection = SctSelection.Compute(model, [(images, labels)], k: 4, new Dictionary<string, int> { ["layers.1"] = 6 });
        Assert.That(selection.Where(kv => kv.Key.StartsWith("layers.0.")).Select(kv => kv.Value.Length), Is.All.EqualTo(4));
        Assert.That(selection.Where(kv => kv.Key.StartsWith("layers.1.")).Select(kv => kv.Value.Length), Is.All.EqualTo(6));
        Assert.That(() => SctSelection.Compute(model, [(images, labels)], 4, new Dictionary<string, int> { ["layers.7"] = 2 }),
            Throws.ArgumentException.With.Message.Contains("layers.7"));
        Assert.That(() => SctSelection.Compute(model, [(images, labels)], 4, new Dictionary<string, int> { ["layers.1"] = 17 }),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("layers.1.blocks.0.attn_residual"));
    }

    /// <summary>Trainable counts on Swin-B and ConvNeXt-B (100 classes), derived by hand from the site lists of
    /// peft-methods.md 2.3 and the GPS masking rule: widths C = 128, 256, 512, 1024 per stage, so Σ C over Swin-B's
    /// 2+2+18+2 blocks is 12,032 and over ConvNeXt-B's 3+3+27+3 blocks 18,048.</summary>
    [TestCase("swin_base_patch4_window7_224"), TestCase("convnext_base")]
    public void TrainableCountsOnTheBaseModels(string preset)
    {
        const int classes = 100, head = 1025 * classes;
        using var model = ImageModels.Create(Device.Cpu, preset, classes);
        bool swin = model.Family == "swin";
        void Expect(PeftMethod method, long count)
        {
            using (method)
            {
                method.Apply(model);
                Assert.That(method.TrainableCount(model), Is.EqualTo(count), $"{preset} {method.Name}");
                model.SiteHook = null;
                model.SiteAffine = null;
                model.LinearHook = null;
                model.MlpHook = null;
            }
        }
        // SSF, γ and β per channel. Swin: patch embed conv + norm (2·128), 11·C per block (norm1, qkv 3C, proj, norm2,
        // fc1 4C, fc2), the merge norms 4C (512 + 1,024 + 2,048), the final norm 1,024.
        // ConvNeXt: stem conv + norm (2·128), 7·C per block (dwconv, norm, fc1 4C, fc2), each downsample's norm and conv
        // ((128 + 256) + (256 + 512) + (512 + 1,024)), the final stage output 1,024.
        Expect(new Ssf(), 2 * (swin ? 256 + 11 * 12_032 + 3_584 + 1_024 : 256 + 7 * 18_048 + 2_688 + 1_024) + head);
        // GPS K = 1: one entry per row of every weight and conv kernel, every non-norm bias (and ConvNeXt's layer scale).
        // Swin rows: patch embed 128, 9·C per block (qkv 3C, proj, fc1 4C, fc2), the merge reductions 2C
        // (256 + 512 + 1,024); whole: biases 128 + 9·C per block, and the relative position tables (their name contains
        // "bias"), 169 × heads per block: 169·(2·4 + 2·8 + 18·16 + 2·32).
        // ConvNeXt rows: stem 128, 6·C per block (dwconv, fc1 4C, fc2), the downsample convs 1,792; trained whole:
        // biases 128 + 6·C per block + 1,792, layer scale Σ C.
        var gps = GpsSelection.SelectedWeights(model)
            .ToDictionary(p => p.Name!, p => new GpsRows(p.Shape[0], 1, new int[p.Shape[0]]));
        Expect(new Gps(gps), swin ? (128 + 9 * 12_032 + 1_792) + (128 + 9 * 12_032 + 169 * 376) + head
                                  : (128 + 6 * 18_048 + 1_792) + (128 + 6 * 18_048 + 1_792 + 18_048) + head);
        // BitFit: every bias, norms included. Swin: 2·128 + 11·C per block + merge norms + final norm;
        // ConvNeXt: 2·128 + 7·C per block + downsample norm and conv biases + the final norm's.
        Expect(SubsetMethod.Bias(), (swin ? 256 + 11 * 12_032 + 3_584 + 1_024 : 256 + 7 * 18_048 + 2_688 + 1_024) + head);
        // LoRA rank 8. Swin: q and v of every qkv, A [8, C] and B [C, 8] each: 32·C per block. ConvNeXt (no attention):
        // fc1 (A [8, C], B [4C, 8]) and fc2 (A [8, 4C], B [C, 8]): 80·C per block.
        Expect(new Lora(LoraOn(model)), (swin ? 32 * 12_032 : 80 * 18_048) + head);
        // Adapter (8) and AdaptFormer (64) per block: down [d, C] + d, up [C, d] + C, i.e. (2d + 1)·C + d; blocks:
        // Swin-B 24, ConvNeXt-B 36.
        int blocks = swin ? 24 : 36;
        long sumC = swin ? 12_032 : 18_048;
        Expect(new Adapter(), 17 * sumC + blocks * 8 + head);
        Expect(new AdaptFormer(), 129 * sumC + blocks * 64 + head);
        Expect(SubsetMethod.Linear(), head); // ConvNeXt's head.norm is backbone (the reference's norm.*)
        Expect(SubsetMethod.Full(), model.ParameterCount);
        if (swin) // SCT, K = 96 on the last 9 blocks of stage 3 and both of stage 4: 11·(96² + 96)
            Expect(new Sct(SctSelection.Sites(model).ToDictionary(s => s.Name, _ => Enumerable.Range(0, 96).ToArray())), 11 * (96 * 96 + 96) + head);
    }

    /// <summary>The GPS selection pass on Swin and ConvNeXt: every selected weight gets [rows, K] entries, each row the
    /// columns of largest |gradient| summed over the pass (recomputed here with the same loss); a row shorter than K
    /// (Swin's relative position tables: one column per head) trains whole; the pass leaves no gradient behind.</summary>
    [TestCase("swin"), TestCase("convnext")]
    public void GpsSelectionKeepsTheLargestGradientsPerRow(string family)
    {
        using var model = Create(family);
        var (images, _, labels) = Batch();
        using var _i = images;
        int[] views = [.. labels.Take(6), .. labels.Take(6)]; // 12 rows as two views of 6 images
        const int k = 3;
        var selection = GpsSelection.Compute(model, [(images, views)], k, seed: 9);
        var weights = GpsSelection.SelectedWeights(model).ToList();
        Assert.That(selection.Keys, Is.EquivalentTo(weights.Select(p => p.Name)));
        Assert.That(model.Parameters.All(p => p.Grad == null), "no gradient left behind");

        // The same pass by hand: SupCon on the normalised pooled features, gradients of the selected weights.
        foreach (var p in model.Parameters) p.RequiresGrad = weights.Contains(p);
        var tape = new Tape();
        using var labelTensor = Tensor.FromArray(Device.Cpu, views, views.Length);
        using (tape.Record())
        {
            using var features = model.ForwardFeatures(images, Kernels.CounterRng.Hash(9, 0));
            using var z = Ops.L2Normalize(features);
            using var s = Ops.Linear(z, z);
            using var loss = Ops.SupConLoss(s, labelTensor, GpsSelection.Temperature);
            tape.Backward(loss);
        }
        foreach (var p in weights)
        {
            int rows = p.Shape[0], perRow = (int)(p.Count / rows), rowK = Math.Min(k, perRow);
            var g = p.Grad!.ToArray();
            var got = selection[p.Name!];
            Assert.That((got.Rows, got.K), Is.EqualTo((rows, rowK)), p.Name);
            for (int o = 0; o < rows; o++)
            {
                var chosen = got.Columns.Skip(o * rowK).Take(rowK).ToHashSet();
                float weakestChosen = chosen.Min(c => MathF.Abs(g[o * perRow + c]));
                float strongestLeft = Enumerable.Range(0, perRow).Where(c => !chosen.Contains(c)).Select(c => MathF.Abs(g[o * perRow + c])).DefaultIfEmpty(0f).Max();
                Assert.That(weakestChosen, Is.GreaterThanOrEqualTo(strongestLeft), $"{p.Name} row {o}");
            }
        }
        Assert.That(selection.Keys, Has.None.EndsWith("relative_position_bias_table"), "trained whole, never selected");
    }
}
