using System.Text;
using CsCheck;
using Engine.Checkpoints;
using Engine.Data;
using Engine.Imaging;
using Engine.IO;
using Engine.Models;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>
/// A CI-sized random campaign per input format: valid files mutated (bytes set to random or boundary values,
/// little-endian 32/64-bit fields set to boundary integers, ranges deleted or repeated, truncation), read the way the
/// program reads them (every tensor of a checkpoint read, every image decoded). The only exception allowed out is the
/// contract's <see cref="InvalidInputException"/>; anything else fails with CsCheck's seed to replay it.
/// </summary>
[TestFixture, NonParallelizable]
public class MutationTests
{
    /// <summary>Seconds per format (CsCheck runs on every core): 2 in CI; set PEFT_MUTATION_SECONDS for a longer campaign,
    /// and PEFT_MUTATION_SEED to replay one.</summary>
    static int Seconds => int.TryParse(Environment.GetEnvironmentVariable("PEFT_MUTATION_SECONDS"), out int s) && s > 0 ? s : 2;

    string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Files.TempDir();

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    static readonly long[] Boundaries = [0, 1, -1, 2, 255, 256, 65535, 65536, int.MaxValue, int.MinValue, uint.MaxValue, 1L << 32, long.MaxValue, long.MinValue, 1L << 62, 1 << 28, (1 << 28) + 1];

    /// <summary>The bytes of <paramref name="valid"/> after 1–4 mutations drawn from <paramref name="seed"/>.</summary>
    static byte[] Mutate(byte[] valid, ulong seed)
    {
        var bytes = new List<byte>(valid);
        ulong draw = 0;
        int Next(int n) => n <= 0 ? 0 : (int)(Kernels.CounterRng.Hash(seed, draw++) % (ulong)n);
        int mutations = 1 + Next(4);
        for (int m = 0; m < mutations && bytes.Count > 0; m++)
        {
            int at = Next(bytes.Count);
            switch (Next(7))
            {
                case 0: bytes[at] = (byte)Next(256); break;
                case 1: bytes[at] = new byte[] { 0, 0xff, 0x7f, 0x80, (byte)'"', (byte)'9', (byte)'-' }[Next(7)]; break;
                case 2 or 3:
                    int width = Next(2) == 0 ? 4 : 8;
                    var field = BitConverter.GetBytes(Boundaries[Next(Boundaries.Length)]);
                    for (int i = 0; i < width && at + i < bytes.Count; i++) bytes[at + i] = field[i];
                    break;
                case 4: bytes.RemoveRange(at, Math.Min(1 + Next(64), bytes.Count - at)); break;
                case 5: bytes.InsertRange(at, bytes.GetRange(at, Math.Min(1 + Next(64), bytes.Count - at))); break;
                default: bytes.RemoveRange(at, bytes.Count - at); break;
            }
        }
        return [.. bytes];
    }

    /// <summary>Runs <paramref name="read"/> on mutated copies of <paramref name="valid"/> (written to a fresh file each
    /// time) for a few seconds; only <see cref="InvalidInputException"/> may escape.</summary>
    void Campaign(byte[] valid, string extension, Action<string> read, int threads = -1)
    {
        long runs = 0, refused = 0;
        Gen.ULong.Sample(seed =>
        {
            string path = Path.Combine(_dir, $"{seed:x16}-{Environment.CurrentManagedThreadId}{extension}");
            File.WriteAllBytes(path, Mutate(valid, seed));
            Interlocked.Increment(ref runs);
            try
            {
                read(path);
            }
            catch (InvalidInputException e)
            {
                Assert.That(e.Message, Does.StartWith(Path.GetDirectoryName(path)!), "the message starts with the path");
                Interlocked.Increment(ref refused);
            }
            finally
            {
                File.Delete(path);
            }
        }, time: Seconds, threads: threads);
        TestContext.Out.WriteLine($"{extension}: {runs} mutated inputs, {refused} refused with the contract exception, none escaped otherwise");
    }

    static void ReadCheckpoint(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        foreach (var e in checkpoint.Entries) e.Read();
    }

    static string Fixture(params string[] parts) => Path.Combine([TestContext.CurrentContext.TestDirectory, "Fixtures", .. parts]);

    [Test]
    public void SafeTensors() => Campaign(File.ReadAllBytes(Fixture("vit-tiny", "weights.safetensors")), ".safetensors", ReadCheckpoint);

    [Test]
    public void Npy() => Campaign(File.ReadAllBytes(Fixture("vit-tiny", "input.npy")), ".npy", path => Checkpoints.Npy.Read(path));

    [Test]
    public void Npz()
    {
        string valid = Files.Npz(_dir, [("a.npy", Files.Npy([2, 3], [1f, 2f, 3f, 4f, 5f, 6f])), ("b/c.npy", Files.Npy([4], new byte[16], "<i4"))],
            level: System.IO.Compression.CompressionLevel.Optimal);
        Campaign(File.ReadAllBytes(valid), ".npz", ReadCheckpoint);
    }

    [Test]
    public void Pth() => Campaign(File.ReadAllBytes(Fixture("pth", "checkpoint.pth")), ".pth", ReadCheckpoint);

    [Test]
    public void Png() => Campaign(PngTests.EncodeRgb(5, 4, [.. Enumerable.Range(0, 60).Select(i => (byte)(i * 37))]), ".png", path => ImageFile.Read(path));

    [Test]
    public void Jpeg()
    {
        Campaign(File.ReadAllBytes(Fixture("jpeg", "rgb420.jpg")), ".jpg", path => ImageFile.Read(path));
    }

    [Test]
    public void VtabList()
    {
        string task = Path.Combine(_dir, "task");
        Directory.CreateDirectory(Path.Combine(task, "images"));
        File.WriteAllBytes(Path.Combine(task, "images", "0.png"), PngTests.EncodeRgb(2, 2, new byte[12]));
        File.WriteAllBytes(Path.Combine(task, "images", "1.png"), PngTests.EncodeRgb(2, 2, new byte[12]));
        var valid = Encoding.UTF8.GetBytes("images/0.png 0\nimages/1.png 1\n");
        Campaign(valid, ".txt", path =>
        {
            string split = Path.GetFileNameWithoutExtension(path);
            File.Move(path, Path.Combine(task, split + ".txt"));
            try
            {
                ImageList.Read(task, split, 2);
            }
            finally
            {
                File.Delete(Path.Combine(task, split + ".txt"));
            }
        });
    }

    [Test]
    public void ImageCache()
    {
        string task = Path.Combine(_dir, "task");
        Directory.CreateDirectory(Path.Combine(task, "images"));
        File.WriteAllBytes(Path.Combine(task, "images", "0.png"), PngTests.EncodeRgb(2, 2, new byte[12]));
        File.WriteAllLines(Path.Combine(task, "train.txt"), ["images/0.png 0"]);
        var list = ImageList.Read(task, "train", 2);
        string cacheDir = Path.Combine(_dir, "cache"), cachePath;
        using (var cache = Data.ImageCache.Open(list, 3, cacheDir)) cachePath = cache.CachePath;
        var valid = File.ReadAllBytes(cachePath);
        Campaign(valid, ".u8", path =>
        {
            File.Copy(path, cachePath, overwrite: true);
            Data.ImageCache.Open(list, 3, cacheDir).Dispose();
        }, threads: 1);
    }

    [TestCase("vit", """{ "img_size": 16, "patch_size": 4, "in_chans": 3, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2 }""")]
    [TestCase("swin", """{ "img_size": 32, "patch_size": 4, "window_size": 2, "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2] }""")]
    [TestCase("convnext", """{ "img_size": 32, "depths": [1, 1], "dims": [8, 16] }""")]
    public void ModelConfig(string family, string json) =>
        Campaign(Encoding.UTF8.GetBytes(json), $".{family}.json", path => ImageModels.Create(Device.Cpu, path, 2).Dispose());

    [Test]
    public void RunConfigAndState()
    {
        var config = new RunConfig
        {
            Task = "t", TaskFolder = _dir, Classes = 2, Model = "vit_tiny_patch16_224",
            Recipe = Models.Peft.PeftRecipe.For("ssf") with { Epochs = 3, CooldownEpochs = 0 },
        };
        string configPath = Path.Combine(_dir, "config.json");
        config.Save(configPath);
        Campaign(File.ReadAllBytes(configPath), ".config.json", path => RunConfig.Load(path));

        string run = Path.Combine(_dir, "run");
        Directory.CreateDirectory(Path.Combine(run, "checkpoint", "epoch-0001"));
        var state = """{ "EpochsDone": 1, "Checkpoint": "checkpoint/epoch-0001", "Log": [ { "Epoch": 1, "LearningRate": 0.001, "Loss": 1.5, "TrainAccuracy": 50, "TestAccuracy": 40, "ImagesPerSecond": 100, "Seconds": 1 } ], "Seconds": 1 }""";
        Campaign(Encoding.UTF8.GetBytes(state), ".state.json", path => FineTuneRun.ReadState(path, run, 3));
    }
}
