using Engine.Imaging;

namespace Engine.Tests;

/// <summary><c>peft synthetic pretrain</c> and <c>peft synthetic</c> end to end, cut down to seconds.</summary>
[TestFixture, NonParallelizable]
public class SyntheticCliTests
{
    [Test]
    public void PretrainsThenFineTunesAndComparesWithLinearProbing()
    {
        string dir = Files.TempDir();
        try
        {
            string model = Path.Combine(dir, "model"), output = Path.Combine(dir, "suite");
            var (code, stdout, _) = CliTests.Peft("synthetic", "pretrain", "--output", model, "--steps", "20", "--batch-size", "16", "--device", "cpu");
            Assert.That(code, Is.Zero);
            Assert.That(stdout, Does.Contain("step 20/20").And.Contain("held-out source accuracy"));
            Assert.That(File.Exists(Path.Combine(model, "config.json")) && File.Exists(Path.Combine(model, "weights.safetensors")));

            (code, stdout, _) = CliTests.Peft("synthetic", "--model-dir", model, "--output", output, "--tasks", "orientation",
                "--methods", "linear", "bias", "--epochs", "1", "--device", "cpu");
            Assert.That(code, Is.Zero);
            Assert.That(stdout, Does.Contain("generated orientation: 8 classes").And.Contain("| bias |").And.Contain("| linear |"));
            Assert.That(stdout, Does.Contain("Structured tasks (orientation), mean best top-1: linear probing"));
            Assert.That(stdout, Does.Match(@"bias: [0-9.]+% \([+-][0-9.]+ points\): (beats|does NOT beat) linear probing"));
            Assert.That(Directory.GetFiles(Path.Combine(output, "data", "orientation", "images", "test")), Has.Length.EqualTo(500));

            (code, _, var stderr) = CliTests.Peft("synthetic", "--model-dir", Path.Combine(dir, "none"), "--output", output);
            Assert.That(code, Is.EqualTo(1));
            Assert.That(stderr, Does.StartWith($"error: --model-dir {Path.Combine(dir, "none")}: needs config.json and weights.safetensors"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>The shipped small Swin and ConvNeXt configs (models/configs) go through pretraining and the suite;
    /// SCT, which needs attention residuals, is refused on ConvNeXt by name.</summary>
    [TestCase("swin", "sct"), TestCase("convnext", "gps")]
    public void PretrainsAndFineTunesTheSmallSwinAndConvNeXt(string family, string method)
    {
        string dir = Files.TempDir();
        try
        {
            string config = Path.Combine(TestContext.CurrentContext.TestDirectory, "model-configs", $"synthetic-{family}.json");
            string model = Path.Combine(dir, "model"), output = Path.Combine(dir, "suite");
            var (code, stdout, _) = CliTests.Peft("synthetic", "pretrain", "--model", config, "--output", model, "--steps", "4", "--batch-size", "8", "--device", "cpu");
            Assert.That(code, Is.Zero);
            Assert.That(stdout, Does.Contain($"pretraining a {family}").And.Contain("step 4/4"));

            (code, stdout, _) = CliTests.Peft("synthetic", "--model-dir", model, "--output", output, "--tasks", "location",
                "--methods", "linear", "ssf", method, "--epochs", "1", "--device", "cpu");
            Assert.That(code, Is.Zero);
            Assert.That(stdout, Does.Contain("| linear |").And.Contain("| ssf |").And.Contain($"| {method} |"));
            Assert.That(stdout, Does.Match($@"{method}: [0-9.]+% \([+-][0-9.]+ points\): (beats|does NOT beat) linear probing"));
            Assert.That(File.Exists(Path.Combine(output, "runs", "location", method, "result.json")));

            if (family == "convnext")
            {
                (code, _, var stderr) = CliTests.Peft("synthetic", "--model-dir", model, "--output", output, "--methods", "sct", "--device", "cpu");
                Assert.That(code, Is.EqualTo(1));
                Assert.That(stderr, Does.Contain("--methods: SCT is defined for ViT and Swin only"));
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
