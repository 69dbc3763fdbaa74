using Engine.Imaging;

namespace Engine.Tests;

/// <summary><c>peft synthetic pretrain</c> and <c>peft synthetic</c> end to end, cut down to seconds.</summary>
[TestFixture, NonParallelizable]
public class SyntheticCliTests
{
    [Test]
    public void PretrainsThenFineTunesAndComparesWithLinearProbing()
    {
        if (!Jpeg.IsAvailable(out var reason)) Assert.Ignore(reason);
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
}
