using Engine.Autograd;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.IO;
using Engine.Checkpoints;
using Engine.Imaging;
using Engine.Models.Vit;

namespace Engine.Tests;

/// <summary>ViT configuration, checkpoint loading (safetensors, Google npz, strict / non-strict / new head),
/// position-embedding resampling against Pillow and TensorFlow.js, and train/eval modes.</summary>
[TestFixture]
public class VitTests
{
    static string Fixture(string file) => Path.Combine(VitFixtureTests.FixtureDir("vit-tiny"), file);
    static VitConfig TinyConfig => VitConfig.FromJson(Fixture("config.json"));
    string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Files.TempDir();

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    static float[] Logits(VisionTransformer model, ulong? trainSeed = null)
    {
        var input = Npy.Read(Fixture("input.npy"));
        using var x = Tensor.FromArray(Device.Cpu, input.Data, input.Shape);
        using var logits = model.Forward(x, trainSeed);
        return logits.ToArray();
    }

    static void AssertScaledClose(float[] got, float[] want, double tol)
    {
        double scale = want.Max(v => Math.Abs(v));
        GradCheck.CheckClose("values", got, want.Select(v => (double)v).ToArray(), tol * scale, tol);
    }

    [TestCase("up4to6"), TestCase("up4to7x5"), TestCase("down7to3"), TestCase("down9to4x6")]
    public void ResamplingMatchesPillowBicubicAndTensorFlowBilinear(string name)
    {
        string dir = VitFixtureTests.FixtureDir("resample");
        var src = Npy.Read(Path.Combine(dir, name + ".src.npy"));
        var bicubic = Npy.Read(Path.Combine(dir, name + ".bicubic.npy"));
        var bilinear = Npy.Read(Path.Combine(dir, name + ".bilinear.npy"));
        int h = src.Shape[0], w = src.Shape[1], c = src.Shape[2], oh = bicubic.Shape[0], ow = bicubic.Shape[1];
        AssertScaledClose(Resample.Bicubic(src.Data, h, w, c, oh, ow), bicubic.Data, 1e-6);
        AssertScaledClose(Resample.Bilinear(src.Data, h, w, c, oh, ow), bilinear.Data, 1e-6);
    }

    [Test]
    public void PresetsHaveTimmParameterCounts()
    {
        // timm: vit_base_patch16_224 86,567,656 (1k head) and 102,595,923 with the 21843-class in21k head (models.md §1).
        using (var b = new VisionTransformer(Device.Cpu, VitConfig.Presets["vit_base_patch16_224"]))
            Assert.That(b.ParameterCount, Is.EqualTo(86_567_656));
        using (var b21k = new VisionTransformer(Device.Cpu, VitConfig.Presets["vit_base_patch16_224"] with { num_classes = 21843 }))
            Assert.That(b21k.ParameterCount, Is.EqualTo(102_595_923));
        using var tiny = new VisionTransformer(Device.Cpu, VitConfig.Presets["vit_tiny_patch16_224"]);
        Assert.That(tiny.ParameterCount, Is.EqualTo(5_717_416));
        Assert.That(tiny.Parameters.Select(p => p.Name).Take(4), Is.EqualTo(new[] { "cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias" }));
    }

    [Test]
    public void ConfigJsonUsesTimmNamesAndRejectsTyposAndBadValues()
    {
        Assert.That(TinyConfig, Is.EqualTo(new VitConfig { img_size = 16, patch_size = 4, num_classes = 5, embed_dim = 32, depth = 2, num_heads = 2 }));
        string typo = Path.Combine(_dir, "typo.json");
        File.WriteAllText(typo, """{"embed_dims": 32}""");
        var e = Assert.Throws<InvalidInputException>(() => VitConfig.FromJson(typo))!;
        Assert.That(e.Message, Does.Contain("typo.json").And.Contain("embed_dims"));
        string heads = Path.Combine(_dir, "heads.json");
        File.WriteAllText(heads, """{"embed_dim": 32, "num_heads": 5}""");
        Assert.That(Assert.Throws<InvalidInputException>(() => VitConfig.FromJson(heads))!.Message, Does.StartWith(heads).And.Contain("num_heads 5"));
        Assert.That(Assert.Throws<ArgumentException>(() => VitConfig.Resolve("vit_huge_nonsense"))!.Message, Does.Contain("vit_base_patch16_224"));
    }

    /// <summary>ViT's last block past its attention runs on the class row alone, in eval and in training with stochastic
    /// depth (one mask per image): logits and every gradient bit for bit those of the block on every token
    /// (<see cref="VisionTransformer.KeepEveryToken"/>), and the forward's GEMMs fewer by exactly the skipped rows.</summary>
    [TestCase(false), TestCase(true)]
    public void TheLastBlockRunsOnTheClassRowWithTheFullBlocksLogitsAndGradients(bool training)
    {
        var kernels = new InstrumentedKernels(new CpuKernels());
        var device = new CpuDevice(kernels);
        var config = TinyConfig with { drop_path_rate = training ? 0.5f : 0f };
        using var model = new VisionTransformer(device, config, seed: 3);
        model.Load(Fixture("weights.safetensors"));
        foreach (var p in model.Parameters) p.RequiresGrad = true;
        var input = Npy.Read(Fixture("input.npy"));
        int B = input.Shape[0];
        (float[] Logits, float[][] Grads, long ForwardFlops) Run(bool everyToken)
        {
            model.KeepEveryToken = everyToken;
            using var x = Tensor.FromArray(device, input.Data, input.Shape);
            using var targets = Tensor.FromArray(device, Enumerable.Range(0, B).Select(i => i % config.num_classes).ToArray(), B);
            var tape = new Tape();
            using (tape.Record())
            {
                kernels.Reset();
                using var y = model.Forward(x, training ? 7UL : null);
                long flops = kernels.Flops;
                using var loss = Ops.CrossEntropy(y, targets);
                tape.Backward(loss);
                var grads = model.Parameters.Select(p => p.Grad!.ToArray()).ToArray();
                foreach (var p in model.Parameters) p.DropGrad();
                return (y.ToArray(), grads, flops);
            }
        }
        var full = Run(everyToken: true);
        var classRow = Run(everyToken: false);
        Assert.That(classRow.Logits, Is.EqualTo(full.Logits), "logits, bit for bit");
        for (int i = 0; i < full.Grads.Length; i++)
            Assert.That(classRow.Grads[i], Is.EqualTo(full.Grads[i]), $"grad of {model.Parameters[i].Name}, bit for bit");
        // The last block's projection and MLP skip every row but the class token's.
        long C = config.embed_dim, H = config.MlpHidden, skipped = 2L * B * (config.Tokens - 1) * (C * C + C * H + H * C);
        Assert.That(full.ForwardFlops - classRow.ForwardFlops, Is.EqualTo(skipped));
    }

    [Test]
    public void SaveThenLoadRoundTrips()
    {
        using var a = new VisionTransformer(Device.Cpu, TinyConfig, seed: 1);
        string path = Path.Combine(_dir, "a.safetensors");
        a.Save(path);
        using var b = new VisionTransformer(Device.Cpu, TinyConfig, seed: 2);
        b.Load(path);
        foreach (var p in a.Parameters) Assert.That(b[p.Name!].ToArray(), Is.EqualTo(p.ToArray()), p.Name);
    }

    [Test]
    public void StrictLoadCountsEveryProblemInOneError()
    {
        using var model = new VisionTransformer(Device.Cpu, TinyConfig with { depth = 3, num_classes = 7 });
        var e = Assert.Throws<InvalidInputException>(() => model.Load(Fixture("weights.safetensors")))!;
        TestContext.Out.WriteLine(e.Message);
        Assert.That(e.Message, Does.Contain("weights.safetensors").And.Contain("12 missing key(s)").And.Contain("blocks.2.norm1.weight").And.Contain("and 7 more")
            .And.Contain("2 shape mismatch(es)").And.Contain("'head.weight': checkpoint [5, 32], model [7, 32]")
            .And.Contain("checkpoint: ViT, width 32, patch 4×4, 2 blocks, 17 tokens, 5 classes; model: ViT, width 32, patch 4×4, 3 blocks, 17 tokens, 7 classes"));
        using var shallow = new VisionTransformer(Device.Cpu, TinyConfig with { depth = 1 });
        e = Assert.Throws<InvalidInputException>(() => shallow.Load(Fixture("weights.safetensors")))!;
        Assert.That(e.Message, Does.Contain("12 unexpected key(s)").And.Contain("blocks.1.norm1.weight"));
    }

    [Test]
    public void NonStrictLoadReportsMissingAndUnexpectedKeys()
    {
        using var model = new VisionTransformer(Device.Cpu, TinyConfig with { depth = 3 });
        var before = model["blocks.2.attn.qkv.weight"].ToArray();
        var report = model.Load(Fixture("weights.safetensors"), LoadMode.NonStrict);
        Assert.That(report.Missing, Has.Count.EqualTo(12));
        Assert.That(report.Unexpected, Is.Empty);
        Assert.That(model["blocks.2.attn.qkv.weight"].ToArray(), Is.EqualTo(before), "missing parameters keep their initialisation");
        using var file = Checkpoint.Open(Fixture("weights.safetensors"));
        Assert.That(model["blocks.1.attn.qkv.weight"].ToArray(), Is.EqualTo(file.Find("blocks.1.attn.qkv.weight")!.Read()));
    }

    [Test]
    public void NewHeadModeLoadsTheBackboneAndKeepsAFreshHead()
    {
        using var model = new VisionTransformer(Device.Cpu, TinyConfig with { num_classes = 7 }, seed: 9);
        var head = model["head.weight"].ToArray();
        var report = model.Load(Fixture("weights.safetensors"), LoadMode.NewHead);
        Assert.That(report.Skipped, Is.EqualTo(new[] { "head.weight", "head.bias" }));
        Assert.That(model["head.weight"].ToArray(), Is.EqualTo(head));
        Assert.That(model["head.bias"].ToArray(), Is.All.Zero);
        Assert.That(head.Max(Math.Abs), Is.LessThanOrEqualTo(2f).And.GreaterThan(0f), "timm init: truncated normal, std 0.02");
        using var file = Checkpoint.Open(Fixture("weights.safetensors"));
        Assert.That(model["norm.weight"].ToArray(), Is.EqualTo(file.Find("norm.weight")!.Read()));
    }

    /// <summary>The random initialisers run on the first use of the parameters, and never for the weights a checkpoint
    /// replaces first: after a load with a new head only the head's weight is drawn, with its seed's values, the same
    /// as when drawn before the load; after a strict load nothing is.</summary>
    [Test]
    public void WeightsACheckpointReplacesAreNeverDrawn()
    {
        using var eager = new VisionTransformer(Device.Cpu, TinyConfig with { num_classes = 7 }, seed: 9);
        var head = eager["head.weight"].ToArray();
        Assert.That(eager.InitializersRun, Is.EqualTo(3 + 4 * TinyConfig.depth), "pos_embed, the patch and head weights, four Linears a block");

        using var model = new VisionTransformer(Device.Cpu, TinyConfig with { num_classes = 7 }, seed: 9);
        Assert.That(model.InitializersRun, Is.Zero, "nothing drawn when built");
        model.Load(Fixture("weights.safetensors"), LoadMode.NewHead);
        Assert.That(model.InitializersRun, Is.Zero, "nothing drawn by the load");
        Assert.That(Logits(model), Has.Length.EqualTo(7 * Npy.Read(Fixture("input.npy")).Shape[0]));
        Assert.That(model.InitializersRun, Is.EqualTo(1), "the head's weight alone, before the forward");
        Assert.That(model["head.weight"].ToArray(), Is.EqualTo(head));

        using var strict = new VisionTransformer(Device.Cpu, TinyConfig, seed: 9);
        strict.Load(Fixture("weights.safetensors"));
        strict.Save(Path.Combine(_dir, "saved.safetensors"));
        Assert.That(strict.InitializersRun, Is.Zero);
        using var saved = Checkpoint.Open(Path.Combine(_dir, "saved.safetensors"));
        using var source = Checkpoint.Open(Fixture("weights.safetensors"));
        Assert.That(saved.Find("blocks.0.mlp.fc1.weight")!.Read(), Is.EqualTo(source.Find("blocks.0.mlp.fc1.weight")!.Read()));
    }

    [Test]
    public void PositionEmbeddingIsResampledForAnotherImageSize()
    {
        using var model = new VisionTransformer(Device.Cpu, TinyConfig with { img_size = 24 });
        model.Load(Fixture("weights.safetensors"));
        using var file = Checkpoint.Open(Fixture("weights.safetensors"));
        var src = file.Find("pos_embed")!.Read();
        var got = model["pos_embed"].ToArray();
        Assert.That(got.Length, Is.EqualTo((1 + 36) * 32));
        Assert.That(got[..32], Is.EqualTo(src[..32]), "the class row is kept");
        Assert.That(got[32..], Is.EqualTo(Resample.Bicubic(src.AsSpan(32), 4, 4, 32, 6, 6)), "the grid is resampled bicubically");
        Assert.That(Assert.Throws<ArgumentException>(() => Logits(model))!.Message, Does.Contain("[B, 3, 24, 24]"));
    }

    /// <summary>Google's Flax layout of the fixture weights (the inverse of models.md 4a, written out here).</summary>
    internal static List<(string, byte[])> GoogleMembers(string prefix)
    {
        using var w = Checkpoint.Open(Fixture("weights.safetensors"));
        const int D = 32, NH = 2, HD = 16, H = 128, NC = 5, P = 4;
        float[] Get(string k) => w.Find(k)!.Read();
        float[] T(float[] a, int rows, int cols)
        {
            var t = new float[a.Length];
            for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c];
            return t;
        }
        var members = new List<(string, byte[])>();
        void Add(string key, int[] shape, float[] v) => members.Add((prefix + key + ".npy", Files.Npy(shape, v)));
        var pw = Get("patch_embed.proj.weight"); // [o, c, y, x] → [y, x, c, o]
        var kernel = new float[pw.Length];
        for (int o = 0; o < D; o++) for (int c = 0; c < 3; c++) for (int y = 0; y < P; y++) for (int x = 0; x < P; x++)
            kernel[((y * P + x) * 3 + c) * D + o] = pw[((o * 3 + c) * P + y) * P + x];
        Add("embedding/kernel", [P, P, 3, D], kernel);
        Add("embedding/bias", [D], Get("patch_embed.proj.bias"));
        Add("cls", [1, 1, D], Get("cls_token"));
        Add("Transformer/posembed_input/pos_embedding", [1, 17, D], Get("pos_embed"));
        for (int i = 0; i < 2; i++)
        {
            string p = $"Transformer/encoderblock_{i}/", b = $"blocks.{i}.", m = p + "MultiHeadDotProductAttention_1/";
            Add(p + "LayerNorm_0/scale", [D], Get(b + "norm1.weight"));
            Add(p + "LayerNorm_0/bias", [D], Get(b + "norm1.bias"));
            var qkv = Get(b + "attn.qkv.weight");
            var qkvBias = Get(b + "attn.qkv.bias");
            string[] names = ["query", "key", "value"];
            for (int s = 0; s < 3; s++)
            {
                var k = new float[D * D]; // K_s[c, h, d] = qkv[s·D + h·HD + d, c]
                for (int c = 0; c < D; c++) for (int j = 0; j < D; j++) k[c * D + j] = qkv[(s * D + j) * D + c];
                Add(m + names[s] + "/kernel", [D, NH, HD], k);
                Add(m + names[s] + "/bias", [NH, HD], qkvBias[(s * D)..((s + 1) * D)]);
            }
            Add(m + "out/kernel", [NH, HD, D], T(Get(b + "attn.proj.weight"), D, D));
            Add(m + "out/bias", [D], Get(b + "attn.proj.bias"));
            Add(p + "LayerNorm_2/scale", [D], Get(b + "norm2.weight"));
            Add(p + "LayerNorm_2/bias", [D], Get(b + "norm2.bias"));
            Add(p + "MlpBlock_3/Dense_0/kernel", [D, H], T(Get(b + "mlp.fc1.weight"), H, D));
            Add(p + "MlpBlock_3/Dense_0/bias", [H], Get(b + "mlp.fc1.bias"));
            Add(p + "MlpBlock_3/Dense_1/kernel", [H, D], T(Get(b + "mlp.fc2.weight"), D, H));
            Add(p + "MlpBlock_3/Dense_1/bias", [D], Get(b + "mlp.fc2.bias"));
        }
        Add("Transformer/encoder_norm/scale", [D], Get("norm.weight"));
        Add("Transformer/encoder_norm/bias", [D], Get("norm.bias"));
        Add("head/kernel", [D, NC], T(Get("head.weight"), NC, D));
        Add("head/bias", [NC], Get("head.bias"));
        Add("pre_logits/kernel", [D, D], new float[D * D]);
        Add("pre_logits/bias", [D], new float[D]);
        return members;
    }

    [TestCase(""), TestCase("opt/target/")]
    public void GoogleNpzLoadsWithKeyMappingAndTransposes(string prefix)
    {
        string npz = Files.Npz(_dir, GoogleMembers(prefix), "ViT-tiny.npz");
        using var model = new VisionTransformer(Device.Cpu, TinyConfig);
        var report = model.Load(npz);
        Assert.That(report.Unexpected, Is.Empty, "pre_logits is dropped");
        AssertScaledClose(Logits(model), Npy.Read(Fixture("logits.npy")).Data, 1e-6);
    }

    [Test]
    public void GoogleNpzWithAWrongRankOrAnUnknownKeyIsRefusedByName()
    {
        var members = GoogleMembers("");
        int at = members.FindIndex(m => m.Item1 == "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel.npy");
        members[at] = (members[at].Item1, Files.Npy([32, 32], new float[32 * 32]));
        string rank = Files.Npz(_dir, members, "rank.npz");
        using var model = new VisionTransformer(Device.Cpu, TinyConfig);
        var e = Assert.Throws<InvalidInputException>(() => model.Load(rank))!;
        Assert.That(e.Message, Does.Contain("rank.npz").And.Contain("query/kernel").And.Contain("2 dimensions"));
        var extra = GoogleMembers("");
        extra.Add(("Transformer/mystery.npy", Files.Npy([1], [1f])));
        string unknown = Files.Npz(_dir, extra, "unknown.npz");
        e = Assert.Throws<InvalidInputException>(() => model.Load(unknown))!;
        Assert.That(e.Message, Does.Contain("unknown.npz").And.Contain("1 unexpected key(s): Transformer/mystery"));
    }

    [Test]
    public void NpzPositionEmbeddingIsResampledBilinearly()
    {
        string npz = Files.Npz(_dir, GoogleMembers(""), "ViT-tiny.npz");
        using var model = new VisionTransformer(Device.Cpu, TinyConfig with { img_size = 20 });
        model.Load(npz);
        using var file = Checkpoint.Open(Fixture("weights.safetensors"));
        var src = file.Find("pos_embed")!.Read();
        Assert.That(model["pos_embed"].ToArray()[32..], Is.EqualTo(Resample.Bilinear(src.AsSpan(32), 4, 4, 32, 5, 5)));
    }

    [Test]
    public void TrainModeIsSeededAndEvalModeIsDeterministic()
    {
        using var model = new VisionTransformer(Device.Cpu, TinyConfig with { drop_rate = 0.1f, pos_drop_rate = 0.1f, proj_drop_rate = 0.1f, drop_path_rate = 0.2f });
        model.Load(Fixture("weights.safetensors"));
        var eval = Logits(model);
        AssertScaledClose(eval, Npy.Read(Fixture("logits.npy")).Data, 1e-6);
        Assert.That(Logits(model), Is.EqualTo(eval));
        var train1 = Logits(model, trainSeed: 1);
        Assert.That(Logits(model, trainSeed: 1), Is.EqualTo(train1), "same seed, same masks");
        Assert.That(train1, Is.Not.EqualTo(eval));
        Assert.That(Logits(model, trainSeed: 2), Is.Not.EqualTo(train1));
    }
}
