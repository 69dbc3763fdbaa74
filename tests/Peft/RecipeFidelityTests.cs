using Engine.Models.Peft;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>The VTAB-1k recipes against a table of the official scripts' values (SSF train_ssf.sh, GPS train_gps.sh, SCT
/// configs/model_sct/vtab/*.yaml), the selection batch a run uses, and <c>peft vtab recipe</c>.</summary>
[TestFixture]
public class RecipeFidelityTests
{
    [TestCase("gps", "dtd", 16, 0.002f, 0f, 0f, false)]
    [TestCase("gps", "cifar", 32, 0.01f, 0f, 0f, false)]
    [TestCase("gps", "dsprites_ori", 16, 0.0005f, 0f, 0.2f, false)]
    [TestCase("ssf", "eurosat", 64, 3e-3f, 5e-2f, 0.2f, false)]
    [TestCase("ssf", "svhn", 64, 1e-2f, 5e-5f, 0f, false)]
    [TestCase("sct", "dtd", 64, 0.0032f, 0.04f, 0.1f, true)]
    [TestCase("sct", "dsprites_loc", 64, 0.003f, 0.001f, 0.1f, false)]
    public void RecipesMatchTheOfficialScripts(string method, string task, int batch, float lr, float wd, float dropPath, bool augment)
    {
        var r = PeftRecipe.For(method, task);
        Assert.That((r.BatchSize, r.LearningRate, r.WeightDecay, r.DropPath, r.Augment), Is.EqualTo((batch, lr, wd, dropPath, augment)));
        Assert.That(r.Problems(), Is.Empty);
    }

    /// <summary>SCT's configs set train_aug on these 11 tasks (flip, then timm RandAugment rand-m9-mstd0.5-inc1); SSF and
    /// GPS train on the resized image alone (--no-aug --direct-resize).</summary>
    [Test]
    public void SctAugmentsExactlyTheTasksItsConfigsSay()
    {
        string[] augmented = ["dtd", "oxford_iiit_pet", "svhn", "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy", "clevr_count",
            "clevr_dist", "dmlab", "kitti"];
        foreach (var task in PeftRecipe.VtabTasks)
        {
            var sct = PeftRecipe.For("sct", task);
            bool on = augmented.Contains(task);
            Assert.That((sct.Augment, sct.RandAugment), Is.EqualTo((on, on ? "rand-m9-mstd0.5-inc1" : null)), task);
            foreach (var method in new[] { "ssf", "gps" })
                Assert.That((PeftRecipe.For(method, task).Augment, PeftRecipe.For(method, task).RandAugment), Is.EqualTo((false, (string?)null)), $"{method} {task}");
        }
        Assert.That(new PeftRecipe { Method = "sct", LearningRate = 1e-3f, RandAugment = "rand-w0" }.Problems(),
            Has.Some.Contains("RandAugment").And.Some.Contains("unknown key 'w'"));
    }

    [Test]
    public void GpsSelectsWithTheTrainingBatchAndSctWithItsOwn()
    {
        Assert.That(SelectionPass.BatchSizeOf(PeftMethods.Gps, PeftRecipe.For("gps", "dtd")), Is.EqualTo(16), "train_gps.py passes args.batch_size");
        Assert.That(SelectionPass.BatchSizeOf(PeftMethods.Gps, PeftRecipe.For("gps", "cifar")), Is.EqualTo(32));
        Assert.That(SelectionPass.BatchSizeOf(PeftMethods.Sct, PeftRecipe.For("sct", "dtd")), Is.EqualTo(50));
    }

    [Test]
    public void SctOnSmallnorbEleKeepsTheOfficialHeadWidth()
    {
        Assert.That(PeftRecipe.For("sct", "smallnorb_ele").HeadClasses, Is.EqualTo(18), "configs/model_sct/vtab/smallnorb_ele.yaml: class_num 18");
        Assert.That(PeftRecipe.For("sct", "smallnorb_azi").HeadClasses, Is.Null);
        Assert.That(PeftRecipe.For("gps", "smallnorb_ele").HeadClasses, Is.Null);
    }

    [Test]
    public void VtabRecipePrintsEveryResolvedValueWithItsSource()
    {
        var (code, gps, _) = CliTests.Peft("vtab", "recipe", "--method", "gps", "--task", "dtd");
        Assert.That(code, Is.Zero);
        Assert.That(gps, Does.Contain("selection pass: train mode, 2 view(s) per image, batches of 16").And.Contain("AugReg")
            .And.Contain("batch size: 16 (drop_last)    [FightingFighting/GPS@72e0c31 train_scripts/vit/vtab/dtd/train_gps.sh: bz=]")
            .And.Contain("learning rate: 0.002 (no batch-size scaling)    [FightingFighting/GPS@72e0c31 train_scripts/vit/vtab/dtd/train_gps.sh: lr=]")
            .And.Contain("K: 1    [FightingFighting/GPS@72e0c31 train_scripts/vit/vtab/dtd/train_gps.sh: --times_para]"));
        // Each repository's own name of a task, and the baselines' learning rate marked as ours.
        Assert.That(CliTests.Peft("vtab", "recipe", "--method", "ssf", "--task", "oxford_iiit_pet").Item2,
            Does.Contain("[dongzelian/SSF@e94e0e7 train_scripts/vit/vtab/pets/train_ssf.sh: --lr]"));
        Assert.That(CliTests.Peft("vtab", "recipe", "--method", "sct", "--task", "cifar").Item2,
            Does.Contain("[showlab/SCT@384cecb run_model_sct.sh, the --dataset cifar100 line: --lr]").And.Contain("vtab/cifar100.yaml: class_num]"));
        Assert.That(CliTests.Peft("vtab", "recipe", "--method", "full", "--task", "dtd").Item2,
            Does.Contain("learning rate: 0.001 (no batch-size scaling)    [this project's choice"));
        (code, var sct, _) = CliTests.Peft("vtab", "recipe", "--method", "sct", "--task", "dtd");
        Assert.That(code, Is.Zero);
        Assert.That(sct, Does.Contain("augmentation: bicubic resize → horizontal flip p 0.5 → timm RandAugment rand-m9-mstd0.5-inc1 (2 of 15 ops, " +
            "each with p 0.5, magnitude N(9, 0.5²) clipped to [0, 10], bicubic, fill (124, 116, 104)) → imagenet normalisation")
            .And.Contain("ViT-B_16.npz").And.Contain("every 10 epoch(s)").And.Not.Contain("not implemented"));
        Assert.That(CliTests.Peft("vtab", "recipe", "--method", "sct", "--task", "cifar").Item2,
            Does.Contain("augmentation: bicubic resize only → imagenet normalisation"));
        foreach (var key in new[] { "optimizer", "learning rate", "weight decay", "batch size", "epochs", "warmup", "drop path", "label smoothing",
                     "augmentation", "selection pass", "K", "head width", "head init", "normalisation", "evaluation", "seed" })
            Assert.That(sct, Does.Match($"\n{key}: [^\n]+    \\[showlab/SCT@384cecb [^\n]+: [^\n]+\\]"), $"{key}: its value and the file and line it comes from");
    }

    /// <summary>SCT's head as the official reset_classifier: nn.Linear's default, weight and bias uniform ±1/√fan_in
    /// (mean |w| = bound/2), not timm's truncated normal.</summary>
    [Test]
    public void SctReinitialisesTheHeadAsNnLinear()
    {
        var config = new Models.Vit.VitConfig { img_size = 16, patch_size = 4, embed_dim = 64, depth = 2, num_heads = 2, num_classes = 300 };
        using var vit = new Models.Vit.VisionTransformer(Device.Cpu, config, seed: 1);
        using var sct = new Sct(SctSelection.Sites(vit).ToDictionary(s => s.Name, _ => new[] { 0, 1, 2, 3 }), seed: 5);
        sct.Apply(vit);
        float bound = 1f / MathF.Sqrt(64);
        foreach (var name in new[] { "head.weight", "head.bias" })
        {
            var values = vit.Parameters.Single(p => p.Name == name).ToArray();
            Assert.That(values.Max(MathF.Abs), Is.LessThanOrEqualTo(bound).And.GreaterThan(0.9f * bound), name);
            Assert.That(values.Average(MathF.Abs), Is.EqualTo(bound / 2).Within(0.1 * bound), $"{name}: uniform, not a narrow normal");
        }
    }

    /// <summary>SSF and GPS start from the AugReg checkpoint, SCT from the original release: a suite mixing them with one
    /// --weights file is refused unless --same-weights says so, and a family's file goes to that family's methods.</summary>
    [Test]
    public void ASuiteRefusesToStartMethodsFromAnotherFamilysCheckpoint()
    {
        string dir = Files.TempDir();
        try
        {
            Directory.CreateDirectory(Path.Combine(dir, "data", "dtd"));
            File.WriteAllText(Path.Combine(dir, "data", "dtd", "train800val200.txt"), "");
            string weights = Path.Combine(dir, "w.safetensors");
            File.WriteAllText(weights, "x");
            var (code, _, err) = CliTests.Peft("vtab", "suite", "--data", Path.Combine(dir, "data"), "--methods", "ssf", "sct", "--weights", weights,
                "--output", Path.Combine(dir, "runs"), "--device", "cpu");
            Assert.That(code, Is.EqualTo(1));
            Assert.That(err, Does.Contain("ssf: augreg, sct: original").And.Contain("--same-weights"));
            (code, _, err) = CliTests.Peft("vtab", "run", "--data", Path.Combine(dir, "data"), "--task", "dtd", "--method", "sct",
                "--weights", $"augreg={weights}", "--output", Path.Combine(dir, "runs"), "--device", "cpu");
            Assert.That(code, Is.EqualTo(1));
            Assert.That(err, Does.Contain("a pretrained checkpoint is required for sct (its family: original"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public void TheReportSaysWhichBackboneEachMethodStartedFrom()
    {
        string runs = Files.TempDir();
        try
        {
            foreach (var (method, file, sha) in new[] { ("ssf", "B_16-augreg.npz", "aaaaaaaaaaaaaaaa"), ("gps", "B_16-augreg.npz", "aaaaaaaaaaaaaaaa"), ("sct", "ViT-B_16.npz", "bbbbbbbbbbbbbbbb") })
            {
                string run = Path.Combine(runs, "dtd", method);
                Directory.CreateDirectory(run);
                new RunConfig { Task = "dtd", TaskFolder = "/data/dtd", Classes = 47, Model = "vit_base_patch16_224", Recipe = PeftRecipe.For(method, "dtd") }
                    .Save(Path.Combine(run, "config.json"));
                File.WriteAllText(Path.Combine(run, "result.json"), System.Text.Json.JsonSerializer.Serialize(
                    new RunResult("dtd", method, 100, 50, 60, 90, 1000, 10, file, sha), RunConfig.Json));
            }
            Assert.That(VtabReport.Collect(runs).Markdown(),
                Does.Contain("Backbones: ssf, gps from B_16-augreg.npz (SHA-256 aaaaaaaaaaaa…); sct from ViT-B_16.npz (SHA-256 bbbbbbbbbbbb…)."));
        }
        finally
        {
            Directory.Delete(runs, true);
        }
    }
}
