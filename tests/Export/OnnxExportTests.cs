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

    static string Fixture(string file) => Path.Combine(VitFixtureTests.FixtureDir("vit-tiny"), file);

    static float[] Ort(string path, float[] images, int batch, int size, GraphOptimizationLevel level)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = level };
        using var session = new InferenceSession(path, options);
        var input = new DenseTensor<float>(images, [batch, 3, size, size]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("pixel_values", input)]);
        return [.. results.Single(r => r.Name == "logits").AsEnumerable<float>()];
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
}
