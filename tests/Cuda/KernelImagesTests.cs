using Engine.Kernels.Cuda;

namespace Engine.Tests;

/// <summary>How a GPU's kernel families are compiled (DriverRuntime, which needs a GPU, uses this): all at once in
/// the background from the start, each once, a failure thrown where its family is asked for.</summary>
[TestFixture]
public class KernelImagesTests
{
    [Test]
    public void EveryFamilyCompilesOnceInTheBackgroundAndAFailureWaitsForItsFirstUse()
    {
        var started = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        using var release = new ManualResetEventSlim(false);
        byte[] Compile(string file)
        {
            started.AddOrUpdate(file, 1, (_, n) => n + 1);
            release.Wait(TimeSpan.FromSeconds(30)); // every compile stays in flight until all have started
            if (file == "broken.cu") throw new InvalidOperationException("broken.cu(3): error: expected a ';'");
            return [(byte)file.Length];
        }
        string[] files = ["a.cu", "bb.cu", "broken.cu"];
        var images = new KernelImages(files, Compile);
        // Nothing asked for yet: the background starts every family, at once (each waits until the release).
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (started.Count < files.Length && DateTime.UtcNow < deadline) Thread.Sleep(10);
        Assert.That(started.Keys, Is.EquivalentTo(files), "every family started before any was asked for or finished");
        release.Set();
        Assert.That(images.Image("bb.cu"), Is.EqualTo(new byte[] { 5 }));
        Assert.That(images.Background.Wait(TimeSpan.FromSeconds(30)), Is.True, "the background ends, failure and all");
        var e = Assert.Throws<InvalidOperationException>(() => images.Image("broken.cu"))!;
        Assert.That(e.Message, Does.Contain("broken.cu(3)"));
        Assert.That(images.Image("a.cu"), Is.EqualTo(new byte[] { 4 }));
        Assert.That(images.Image("other.cu"), Is.EqualTo(new byte[] { 8 }), "a family outside the list compiles when asked");
        Assert.That(started.Values, Is.All.EqualTo(1), "each family compiled once");
    }
}
