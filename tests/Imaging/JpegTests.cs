using Engine.IO;
using System.Text.Json;
using Engine.Imaging;

namespace Engine.Tests;

/// <summary>JPEG decoding (libturbojpeg) and the 8-bit bicubic resize against Pillow's output for the same files
/// (tests/Fixtures/make-jpeg.py), and the damaged files the decoder must refuse.</summary>
[TestFixture]
public class JpegTests
{
    static string Dir => VitFixtureTests.FixtureDir("jpeg");

    static IEnumerable<(string Name, int Height, int Width, int[][] Resized)> Cases()
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "manifest.json")));
        foreach (var entry in manifest.RootElement.EnumerateObject())
            yield return (entry.Name, entry.Value.GetProperty("height").GetInt32(), entry.Value.GetProperty("width").GetInt32(),
                [.. entry.Value.GetProperty("resized").EnumerateArray().Select(s => s.EnumerateArray().Select(v => v.GetInt32()).ToArray())]);
    }

    static void RequireTurboJpeg()
    {
        if (!Jpeg.IsAvailable(out var reason)) Assert.Ignore(reason);
    }

    [Test]
    public void DecodesEveryFixtureExactlyAsPillow()
    {
        RequireTurboJpeg();
        foreach (var (name, h, w, _) in Cases())
        {
            var image = ImageFile.Read(Path.Combine(Dir, name + ".jpg"));
            Assert.That((image.Height, image.Width), Is.EqualTo((h, w)), name);
            Assert.That(image.Rgb, Is.EqualTo(File.ReadAllBytes(Path.Combine(Dir, name + ".rgb"))), $"{name}: decoded pixels");
        }
    }

    [Test]
    public void ResizesExactlyAsPillowBicubic()
    {
        int checkedSizes = 0;
        foreach (var (name, h, w, sizes) in Cases())
        {
            var decoded = File.ReadAllBytes(Path.Combine(Dir, name + ".rgb"));
            foreach (var size in sizes)
            {
                var want = File.ReadAllBytes(Path.Combine(Dir, $"{name}.{size[0]}x{size[1]}.rgb"));
                var got = Resample.BicubicBytes(decoded, h, w, 3, size[0], size[1]);
                Assert.That(got, Is.EqualTo(want), $"{name} {h}×{w} → {size[0]}×{size[1]}");
                checkedSizes++;
            }
        }
        Assert.That(checkedSizes, Is.GreaterThanOrEqualTo(8));
    }

    [Test]
    public void RefusesDamagedFilesNamingThem()
    {
        RequireTurboJpeg();
        var good = File.ReadAllBytes(Path.Combine(Dir, "rgb420.jpg"));
        string dir = Directory.CreateTempSubdirectory("jpeg-").FullName;
        try
        {
            void Refused(string file, byte[] bytes, string expect)
            {
                string path = Path.Combine(dir, file);
                File.WriteAllBytes(path, bytes);
                var e = Assert.Throws<InvalidInputException>(() => ImageFile.Read(path))!;
                Assert.That(e.Message, Does.Contain(path).And.Contain(expect), e.Message);
            }
            Refused("truncated.jpg", good[..(good.Length * 2 / 3)], "truncated");
            Refused("header-only.jpg", good[..40], "JPEG");
            var garbled = (byte[])good.Clone();
            for (int i = good.Length / 2; i < good.Length / 2 + 64; i++) garbled[i] = 0xFF;
            Refused("garbled.jpg", garbled, "JPEG");
            Refused("text.jpg", "not an image"u8.ToArray(), "not a PNG or JPEG");
            Assert.Throws<FileNotFoundException>(() => ImageFile.Read(Path.Combine(dir, "missing.jpg")));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
