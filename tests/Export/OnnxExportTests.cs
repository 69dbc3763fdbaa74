using Engine.Autograd;
using Engine.Checkpoints;
using Engine.Models.Export;
using Engine.Models.Vit;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Engine.Tests;

/// <summary>Exported models run in ONNX Runtime (a real one, no mock) and give the engine's logits: one file at batch 1
/// and 3 (dynamic batch), with graph optimisations on and off, with the weights inline or in a sidecar file.</summary>
[TestFixture]
public class OnnxExportTests
{
    string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Files.TempDir();

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    static string Fixture(string file, string family = "vit-tiny") => Path.Combine(VitFixtureTests.FixtureDir(family), file);

    static float[] Ort(string path, float[] images, int batch, int size, GraphOptimizationLevel level)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = level };
        using var session = new InferenceSession(path, options);
        var input = new DenseTensor<float>(images, [batch, 3, size, size]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("pixel_values", input)]);
        return [.. results.Single(r => r.Name == "logits").AsEnumerable<float>()];
    }

    /// <summary>ConvNeXt (channels-last norms and MLPs, convolutions transposed around) and Swin (patch merging, shifted
    /// windows with the relative position bias and the shift mask): the engine's logits at batch 1 and 3, with opset 17
    /// and 18 (ReduceMean's axes moved to an input).</summary>
    [TestCase("convnext-tiny", 17), TestCase("convnext-tiny", 18), TestCase("swin-tiny", 17), TestCase("swin-tiny", 18)]
    public void ConvNeXtAndSwinGiveTheEnginesLogitsInOnnxRuntime(string fixture, int opset)
    {
        string config = Fixture("config.json", fixture);
        using var net = Models.ImageModels.Create(Device.Cpu, config, Models.ImageModels.HeadClasses(config, Fixture("weights.safetensors", fixture)));
        net.Load(Fixture("weights.safetensors", fixture));
        var images = Npy.Read(Fixture("input.npy", fixture));
        int size = images.Shape[2], per = 3 * size * size;
        string path = Path.Combine(_dir, $"{fixture}{opset}.onnx");
        ModelExport.ToOnnx(net, path, new OnnxExportOptions { Opset = opset });
        foreach (int batch in new[] { images.Shape[0], 1 })
        {
            var x = images.Data[..(batch * per)];
            using var input = Tensor.FromArray(Device.Cpu, x, batch, 3, size, size);
            using var _ = Tape.NoGrad();
            using var logits = net.Forward(input);
            double worst = Ort(path, x, batch, size, GraphOptimizationLevel.ORT_ENABLE_ALL).Zip(logits.ToArray()).Max(p => Math.Abs(p.First - p.Second));
            TestContext.Out.WriteLine($"{fixture} opset {opset}, batch {batch}: max |ORT − engine| = {worst:E2}");
            Assert.That(worst, Is.LessThan(1e-4));
        }
    }

    [Test]
    public void AViTGivesTheEnginesLogitsInOnnxRuntime()
    {
        using var vit = new VisionTransformer(Device.Cpu, VitConfig.Resolve(Fixture("config.json")));
        vit.Load(Fixture("weights.safetensors"));
        var images = Npy.Read(Fixture("input.npy")).Data; // [3, 3, 16, 16]
        string path = Path.Combine(_dir, "vit.onnx");
        ModelExport.ToOnnx(vit, path);
        foreach (int batch in new[] { 3, 1 })
        {
            var x = images[..(batch * 3 * 16 * 16)];
            using var input = Tensor.FromArray(Device.Cpu, x, batch, 3, 16, 16);
            using var _ = Tape.NoGrad();
            using var logits = vit.Forward(input);
            var want = logits.ToArray();
            foreach (var level in new[] { GraphOptimizationLevel.ORT_ENABLE_ALL, GraphOptimizationLevel.ORT_DISABLE_ALL })
            {
                var got = Ort(path, x, batch, 16, level);
                Assert.That(got, Has.Length.EqualTo(want.Length));
                double worst = got.Zip(want).Max(p => Math.Abs(p.First - p.Second));
                TestContext.Out.WriteLine($"batch {batch}, {level}: max |ORT − engine| = {worst:E2}");
                Assert.That(worst, Is.LessThan(1e-4), $"batch {batch}, {level}");
            }
        }
        Assert.That(File.Exists(path + ".data"), Is.False, "small weights stay inline");
        // Forced external data: the weights beside the model, read back by ORT from the file's folder.
        string external = Path.Combine(_dir, "external.onnx");
        long bytes = ModelExport.ToOnnx(vit, external, new OnnxExportOptions { ExternalDataThreshold = 0 });
        Assert.That(new FileInfo(external + ".data").Length, Is.EqualTo(bytes));
        Assert.That(new FileInfo(external).Length, Is.LessThan(new FileInfo(path).Length - bytes / 2));
        using var all = Tensor.FromArray(Device.Cpu, images, 3, 3, 16, 16);
        using (Tape.NoGrad())
        using (var logits = vit.Forward(all))
            Assert.That(Ort(external, images, 3, 16, GraphOptimizationLevel.ORT_ENABLE_ALL).Zip(logits.ToArray()).Max(p => Math.Abs(p.First - p.Second)), Is.LessThan(1e-4));
    }

    /// <summary>SCT cannot fold: it is written as explicit nodes (gather, K×K linear with bias, scatter by a one-hot
    /// matrix) and ORT gives the SCT model's logits, on ViT and on Swin's last stages.</summary>
    [TestCase("vit-tiny"), TestCase("swin-tiny")]
    public void SctIsWrittenAsExplicitNodes(string fixture)
    {
        string config = Fixture("config.json", fixture);
        using var net = Models.ImageModels.Create(Device.Cpu, config, Models.ImageModels.HeadClasses(config, Fixture("weights.safetensors", fixture)));
        net.Load(Fixture("weights.safetensors", fixture));
        var sites = Models.Peft.SctSelection.Sites(net).ToList();
        var selection = sites.ToDictionary(s => s.Name, s => Enumerable.Range(0, Math.Max(1, s.Channels / 4)).Select(i => (i * 3 + 1) % s.Channels).Distinct().ToArray());
        using var sct = new Models.Peft.Sct(selection, seed: 3);
        sct.Apply(net);
        foreach (var p in sct.Trainable(net)) // trained-looking values, so the modules matter
        {
            var v = p.ToArray();
            for (int i = 0; i < v.Length; i++) v[i] += 0.1f * MathF.Sin(3 * i + 1);
            p.CopyFrom(v);
        }
        var images = Npy.Read(Fixture("input.npy", fixture));
        int size = images.Shape[2];
        string path = Path.Combine(_dir, "sct.onnx");
        ModelExport.ToOnnx(net, path, new OnnxExportOptions { Method = sct });
        using var input = Tensor.FromArray(Device.Cpu, images.Data, images.Shape[0], 3, size, size);
        using var _ = Tape.NoGrad();
        using var logits = net.Forward(input);
        double worst = Ort(path, images.Data, images.Shape[0], size, GraphOptimizationLevel.ORT_ENABLE_ALL).Zip(logits.ToArray()).Max(p => Math.Abs(p.First - p.Second));
        TestContext.Out.WriteLine($"{fixture} with SCT on {sites.Count} site(s): max |ORT − engine| = {worst:E2}");
        Assert.That(worst, Is.LessThan(1e-4));
        // Without the method the export is the plain backbone: the logits differ, so the nodes are really there.
        string plain = Path.Combine(_dir, "plain.onnx");
        ModelExport.ToOnnx(net, plain);
        double gap = Ort(plain, images.Data, images.Shape[0], size, GraphOptimizationLevel.ORT_ENABLE_ALL).Zip(logits.ToArray()).Max(p => Math.Abs(p.First - p.Second));
        Assert.That(gap, Is.GreaterThan(1e-3), "SCT changes the logits");
    }
}
