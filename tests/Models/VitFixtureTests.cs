using Engine.Autograd;
using Engine.Checkpoints;
using Engine.Models.Vit;

namespace Engine.Tests;

/// <summary>
/// Model-level check (llm.c's pattern): a tiny ViT loaded from weights written by TensorFlow.js must reproduce that
/// implementation's logits, loss and the gradient of every parameter (tests/Fixtures/vit-tiny/make-fixtures.js).
/// </summary>
[TestFixture]
public class VitFixtureTests
{
    /// <summary>The folder of a fixture set, next to the test assembly.</summary>
    public static string FixtureDir(string name) => Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", name);

    /// <summary>Per-tensor tolerance: |got − want| ≤ tol·(max|want| + |want|); both implementations are float32
    /// with different summation orders, so the error scales with the tensor's magnitude.</summary>
    static void AssertTensorClose(string what, float[] got, float[] want, double tol)
    {
        double scale = want.Max(v => Math.Abs((double)v));
        double worst = got.Zip(want, (g, w) => Math.Abs(g - w) / (scale + Math.Abs(w))).Max();
        TestContext.Out.WriteLine($"{what,-32} max|want| {scale,10:G4}  worst scaled error {worst:G3}");
        GradCheck.CheckClose(what, got, want.Select(v => (double)v).ToArray(), tol * scale, tol);
    }

    [TestCaseSource(typeof(Backends), nameof(Backends.Names))]
    public void LogitsLossAndEveryGradientMatchTensorFlowJs(string backend)
    {
        var device = Backends.Get(backend);
        string dir = FixtureDir("vit-tiny");
        using var model = new VisionTransformer(device, VitConfig.FromJson(Path.Combine(dir, "config.json")), seed: 123);
        var report = model.Load(Path.Combine(dir, "weights.safetensors"));
        Assert.That(report.Loaded, Has.Count.EqualTo(model.Parameters.Count));
        CheckAgainstFixture(device, dir, model.Parameters, x => model.Forward(x));
    }

    /// <summary>Loads the fixture's input and targets, runs <paramref name="forward"/> and backward with every parameter
    /// trainable, and compares logits, loss and each parameter's gradient with the fixture's (per-tensor tolerance).</summary>
    public static void CheckAgainstFixture(Device device, string dir, IReadOnlyList<Tensor> parameters, Func<Tensor, Tensor> forward,
        double valueTolerance = 1e-6, double gradientTolerance = 3e-6)
    {
        foreach (var p in parameters) p.RequiresGrad = true;
        var input = Npy.Read(Path.Combine(dir, "input.npy"));
        using var expected = Checkpoint.Open(Path.Combine(dir, "expected.safetensors"));
        var targets = expected.Find("targets")!.Read().Select(v => (int)v).ToArray();
        using var x = Tensor.FromArray(device, input.Data, input.Shape);
        using var y = Tensor.FromArray(device, targets, targets.Length);
        var tape = new Tape();
        using (tape.Record())
        {
            using var logits = forward(x);
            using var loss = Ops.CrossEntropy(logits, y);
            AssertTensorClose("logits", logits.ToArray(), Npy.Read(Path.Combine(dir, "logits.npy")).Data, valueTolerance);
            AssertTensorClose("loss", loss.ToArray(), expected.Find("loss")!.Read(), valueTolerance);
            tape.Backward(loss);
        }
        foreach (var p in parameters)
        {
            var want = expected.Find("grad." + p.Name) ?? throw new AssertionException($"fixture lacks grad.{p.Name}");
            Assert.That(p.Grad, Is.Not.Null, $"no gradient reached {p.Name}");
            AssertTensorClose("grad." + p.Name, p.Grad!.ToArray(), want.Read(), gradientTolerance);
        }
    }
}
