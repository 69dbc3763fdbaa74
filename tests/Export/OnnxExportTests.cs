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
        // The batch is dynamic by default and fixed when asked.
        string fixedPath = Path.Combine(_dir, "fixed.onnx");
        ModelExport.ToOnnx(vit, fixedPath, new OnnxExportOptions { Batch = 3 });
        using (var dynamicSession = new InferenceSession(path))
        using (var fixedSession = new InferenceSession(fixedPath))
        {
            Assert.That(dynamicSession.InputMetadata["pixel_values"].Dimensions, Is.EqualTo(new[] { -1, 3, 16, 16 }));
            Assert.That(fixedSession.InputMetadata["pixel_values"].Dimensions, Is.EqualTo(new[] { 3, 3, 16, 16 }));
            Assert.That(fixedSession.OutputMetadata["logits"].Dimensions, Is.EqualTo(new[] { 3, 5 }));
        }
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

    /// <summary>peft export with a trained file of every method: merged where it folds (ssf, lora, gps, bias, linear,
    /// full), SCT and the adapters as nodes, SSF on ConvNeXt merged except its stage-output affine; ORT gives the
    /// trained model's logits.</summary>
    [TestCase("vit-tiny", "ssf"), TestCase("vit-tiny", "gps"), TestCase("vit-tiny", "bias"), TestCase("vit-tiny", "linear"),
     TestCase("vit-tiny", "full"), TestCase("vit-tiny", "sct"), TestCase("convnext-tiny", "ssf"), TestCase("swin-tiny", "ssf"),
     TestCase("vit-tiny", "lora"), TestCase("swin-tiny", "lora"), TestCase("convnext-tiny", "lora"),
     TestCase("vit-tiny", "adapter"), TestCase("convnext-tiny", "adapter"), TestCase("vit-tiny", "adaptformer"), TestCase("swin-tiny", "adaptformer"),
     TestCase("vit-tiny", "vpt")]
    public void ExportOfATrainedFileGivesTheTrainedModelsLogits(string fixture, string methodName)
    {
        string config = Fixture("config.json", fixture), weights = Fixture("weights.safetensors", fixture);
        var info = Models.Peft.PeftMethods.Get(methodName);
        string trained = Path.Combine(_dir, $"{methodName}.safetensors"), output = Path.Combine(_dir, $"{methodName}.onnx");
        var images = Npy.Read(Fixture("input.npy", fixture));
        int size = images.Shape[2];
        float[] want;
        using (var net = Models.ImageModels.Create(Device.Cpu, config, Models.ImageModels.HeadClasses(config, weights)))
        {
            net.Load(weights);
            string? selection = null;
            if (info.Selection != null)
            {
                selection = Path.Combine(_dir, "selection.safetensors");
                info.Selection.SaveUniform(net, methodName == "sct" ? 4 : 1, selection);
            }
            var recipe = Models.Peft.PeftRecipe.For(methodName, null, net.Family); // LoRA's targets on ConvNeXt: its MLP
            using var method = info.Create(new Models.Peft.MethodSetup(5, selection, recipe.Lora, recipe.Adapter, recipe.Vpt));
            method.Apply(net);
            foreach (var p in method.Trainable(net)) // trained-looking values
            {
                var v = p.ToArray();
                for (int i = 0; i < v.Length; i++) v[i] += 0.05f * MathF.Sin(7 * i + 2);
                p.CopyFrom(v);
            }
            method.SaveTrained(net, trained);
            // The reference: what the trained file holds, loaded as a user would (GPS saves only its selected entries).
            using var fresh = Models.ImageModels.Create(Device.Cpu, config, Models.ImageModels.HeadClasses(config, trained));
            fresh.Load(weights, Checkpoints.LoadMode.NewHead);
            using var reloaded = Models.Peft.PeftMethod.ForTrainedFile(trained);
            reloaded.Apply(fresh);
            reloaded.LoadTrained(fresh, trained);
            using var input = Tensor.FromArray(Device.Cpu, images.Data, images.Shape[0], 3, size, size);
            using var _ = Tape.NoGrad();
            using var logits = fresh.Forward(input);
            want = logits.ToArray();
        }
        var (code, stdout, stderr) = CliTests.Peft("export", "--model", config, "--weights", weights, "--trained", trained, "--output", output);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain(methodName is "sct" or "adapter" or "adaptformer" or "vpt" ? $"{info.Title} as explicit nodes" : $"{methodName} merged"));
        double worst = Ort(output, images.Data, images.Shape[0], size, GraphOptimizationLevel.ORT_ENABLE_ALL).Zip(want).Max(p => Math.Abs(p.First - p.Second));
        TestContext.Out.WriteLine($"{fixture} {methodName}: max |ORT − engine| = {worst:E2}");
        Assert.That(worst, Is.LessThan(1e-4));
    }

    /// <summary>Bad input: one error line naming the file, and no .onnx left behind.</summary>
    [Test]
    public void ExportRefusesBadInputWithoutLeavingAFile()
    {
        string output = Path.Combine(_dir, "model.onnx");
        string foreign = Path.Combine(_dir, "foreign.safetensors");
        using (var swin = Models.ImageModels.Create(Device.Cpu, Fixture("config.json", "swin-tiny"), 5))
        using (var ssf = new Models.Peft.Ssf(seed: 1))
        {
            ssf.Apply(swin);
            ssf.SaveTrained(swin, foreign); // a trained file of another architecture
        }
        var (code, _, stderr) = CliTests.Peft("export", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"), "--trained", foreign, "--output", output);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.StartWith("error: ").And.Contain("foreign.safetensors"));
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        (code, _, stderr) = CliTests.Peft("export", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"), "--trained", Fixture("weights.safetensors"), "--output", output);
        Assert.That((code, stderr), Is.EqualTo((1, $"error: {Fixture("weights.safetensors")}: no 'peft_method' in its metadata (not a file written by SaveTrained)\n")));
        // A trained file naming a method this project does not have.
        string unknown = Path.Combine(_dir, "unknown.safetensors");
        using (var vit = new VisionTransformer(Device.Cpu, VitConfig.Resolve(Fixture("config.json"))))
        using (var ssf = new Models.Peft.Ssf(seed: 1))
        {
            ssf.Apply(vit);
            ssf.SaveTrained(vit, unknown);
        }
        var bytes = File.ReadAllBytes(unknown);
        var text = System.Text.Encoding.ASCII.GetString(bytes);
        int at = text.IndexOf("\"ssf\"", StringComparison.Ordinal);
        Assert.That(at, Is.GreaterThan(0), "the method's name in the header");
        System.Text.Encoding.ASCII.GetBytes("\"xyz\"").CopyTo(bytes, at);
        File.WriteAllBytes(unknown, bytes);
        (code, _, stderr) = CliTests.Peft("export", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"), "--trained", unknown, "--output", output);
        Assert.That((code, stderr), Is.EqualTo((1, $"error: {unknown}: written by unknown method 'xyz' (known: {string.Join(", ", Models.Peft.PeftMethods.Names)})\n")));
        (code, _, stderr) = CliTests.Peft("export", "--model", Fixture("config.json"), "--weights", Fixture("weights.safetensors"), "--output", Path.Combine(_dir, "missing", "m.onnx"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("does not exist"));
        Assert.That(Directory.GetFiles(_dir, "*.onnx*"), Is.Empty, "no partial export");
    }

    /// <summary>The engine on every backend gives what ONNX Runtime gives for the exported file (the export reads the
    /// weights wherever they live).</summary>
    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void EveryBackendAgreesWithOnnxRuntime(string backend)
    {
        var device = Backends.Get(backend);
        using var vit = new VisionTransformer(device, VitConfig.Resolve(Fixture("config.json")));
        vit.Load(Fixture("weights.safetensors"));
        var images = Npy.Read(Fixture("input.npy")).Data;
        string path = Path.Combine(_dir, "vit.onnx");
        ModelExport.ToOnnx(vit, path);
        using var input = Tensor.FromArray(device, images, 3, 3, 16, 16);
        using var _ = Tape.NoGrad();
        using var logits = vit.Forward(input);
        double worst = Ort(path, images, 3, 16, GraphOptimizationLevel.ORT_ENABLE_ALL).Zip(logits.ToArray()).Max(p => Math.Abs(p.First - p.Second));
        TestContext.Out.WriteLine($"{backend}: max |ORT − engine| = {worst:E2}");
        Assert.That(worst, Is.LessThan(1e-4));
    }
}
