using Engine.IO;
using Engine.Data;
using Engine.Imaging;
using Engine.Kernels;

namespace Engine.Tests;

/// <summary>The VTAB-1k folder loader and the image cache on a generated miniature task tree, including every bad
/// input the loader must refuse with the file and line named.</summary>
[TestFixture, NonParallelizable]
public class VtabDataTests
{
    string _root = "";

    [SetUp]
    public void SetUp()
    {
        _root = Directory.CreateTempSubdirectory("vtab-").FullName;
    }

    [TearDown]
    public void TearDown()
    {
        if (_root.Length > 0) Directory.Delete(_root, true);
    }

    [Test]
    public void ReadsEverySplitOfATaskFolder()
    {
        string task = MiniVtab.Write(_root, "tint", train: 20, test: 7);
        var train = ImageList.Read(task, "train800val200", classes: 3);
        Assert.That(train.Count, Is.EqualTo(20));
        Assert.That(ImageList.Read(task, "train800").Count + ImageList.Read(task, "val200").Count, Is.EqualTo(20));
        Assert.That(ImageList.Read(task, "test").Count, Is.EqualTo(7));
        Assert.That(train.Files.All(File.Exists) && train.Labels.All(l => l is >= 0 and < 3));
        Assert.That(train.Where(3), Is.EqualTo($"{Path.Combine(task, "train800val200.txt")}:4"));
    }

    [Test]
    public void RefusesBadListsNamingTheFileAndLine()
    {
        string task = MiniVtab.Write(_root, "tint", train: 10, test: 5);
        string list = Path.Combine(task, "test.txt");
        var good = File.ReadAllLines(list);
        void Refused<T>(string[] lines, string expect, int? classes = 3) where T : Exception
        {
            File.WriteAllLines(list, lines);
            var e = Assert.Throws<T>(() => ImageList.Read(task, "test", classes))!;
            Assert.That(e.Message, Does.Contain(list).And.Contain(expect), e.Message);
        }
        Refused<InvalidInputException>([good[0], "images/test/000001.jpg"], ":2: expected '<image path> <integer label>'");
        Refused<InvalidInputException>([good[0], "images/test/000001.jpg one"], ":2: expected");
        Refused<InvalidInputException>([good[0], good[1].Split(' ')[0] + " 3"], ":2: label 3 is outside [0, 3)");
        Refused<InvalidInputException>([good[0], good[1].Split(' ')[0] + " -1"], ":2: label -1 is negative", classes: null);
        Refused<InvalidInputException>(["../../etc/passwd 0"], ":1: '../../etc/passwd' points outside the task folder");
        Refused<InvalidInputException>(["/etc/passwd 0"], ":1: '/etc/passwd' points outside");
        Refused<InvalidInputException>([good[0], "images/test/999999.jpg 1"], ":2: image 'images/test/999999.jpg' does not exist");
        Refused<InvalidInputException>(["", "  "], "lists no images");
        File.Delete(list);
        Assert.That(Assert.Throws<FileNotFoundException>(() => ImageList.Read(task, "test"))!.Message, Does.Contain(list));
        Assert.Throws<DirectoryNotFoundException>(() => ImageList.Read(Path.Combine(_root, "nope"), "test"));
    }

    static bool Flips(ulong seed, int position) => CounterRng.Uniform(CounterRng.Hash(seed, (ulong)position), 0) < 0.5f;

    [Test]
    public void TheCacheHoldsPillowResizedPixelsAndIsBuiltOnce()
    {
        string task = MiniVtab.Write(_root, "quadrant", train: 12, test: 5);
        string cacheDir = Path.Combine(_root, "cache");
        var list = ImageList.Read(task, "train800val200", 4);
        int builds = 0;
        using (var cache = ImageCache.Open(list, 16, cacheDir, progress: (done, total) => builds += done == total ? 1 : 0))
        {
            Assert.That((cache.Count, cache.Height, cache.Width), Is.EqualTo((12, 16, 16)));
            Assert.That(cache.Labels, Is.EqualTo(list.Labels));
            for (int i = 0; i < cache.Count; i++)
                Assert.That(cache.Pixels(i).ToArray(), Is.EqualTo(Normalization.Resize(ImageFile.Read(list.Files[i]), 16)), $"image {i}");
            // A seed whose draws flip the first image and not the second.
            ulong seed = 0;
            while (!(Flips(seed, 0) && !Flips(seed, 1))) seed++;
            var batch = new float[2 * 3 * 16 * 16];
            cache.FillBatch([3, 0], Normalization.Inception, batch, new TrainAugmentation(HorizontalFlip: true, RandAugment: null), seed);
            var plain = new float[3 * 16 * 16];
            Normalization.Inception.Normalize(cache.Pixels(3), plain);
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < 16; y++)
                    for (int x = 0; x < 16; x++)
                        Assert.That(batch[(c * 16 + y) * 16 + x], Is.EqualTo(plain[(c * 16 + y) * 16 + 15 - x]), "the first image is flipped");
            var second = new float[3 * 16 * 16];
            Normalization.Inception.Normalize(cache.Pixels(0), second);
            Assert.That(batch[768..], Is.EqualTo(second), "the second image is not");
        }
        using (ImageCache.Open(list, 16, cacheDir, progress: (_, _) => builds++)) { }
        Assert.That(builds, Is.EqualTo(1), "the second open reads the cache");
        Assert.That(Directory.GetFiles(cacheDir), Has.Length.EqualTo(1));
        // A changed image gets a new cache (the key covers every image's size and time).
        File.SetLastWriteTimeUtc(list.Files[0], DateTime.UtcNow.AddMinutes(1));
        using (ImageCache.Open(ImageList.Read(task, "train800val200", 4), 16, cacheDir)) { }
        Assert.That(Directory.GetFiles(cacheDir), Has.Length.EqualTo(2));
        // A damaged cache file is refused with the advice to delete it, never read past its end.
        string damaged = Directory.GetFiles(cacheDir).OrderBy(File.GetLastWriteTimeUtc).Last();
        var bytes = File.ReadAllBytes(damaged);
        File.WriteAllBytes(damaged, bytes[..^100]);
        var e = Assert.Throws<InvalidInputException>(() => ImageCache.Open(ImageList.Read(task, "train800val200", 4), 16, cacheDir))!;
        Assert.That(e.Message, Does.Contain(damaged).And.Contain("delete it to rebuild"));
    }

    [Test]
    public void ABadImageStopsTheCacheNamingTheListLineAndLeavesNoFile()
    {
        string task = MiniVtab.Write(_root, "tint", train: 10, test: 5);
        var list = ImageList.Read(task, "test", 3);
        var bytes = File.ReadAllBytes(list.Files[2]);
        File.WriteAllBytes(list.Files[2], bytes[..(bytes.Length * 9 / 10)]);
        string cacheDir = Path.Combine(_root, "cache");
        var e = Assert.Throws<InvalidInputException>(() => ImageCache.Open(list, 16, cacheDir))!;
        Assert.That(e.Message, Does.Contain($"test.txt:3").And.Contain(list.Files[2]).And.Contain("truncated"), e.Message);
        Assert.That(Directory.Exists(cacheDir) ? Directory.GetFiles(cacheDir) : [], Is.Empty, "no partial cache file is left");
    }
}
