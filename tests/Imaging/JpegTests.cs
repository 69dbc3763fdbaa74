using Engine.IO;
using System.Text.Json;
using Engine.Imaging;

namespace Engine.Tests;

/// <summary>The managed JPEG codec against independent implementations (tests/Fixtures/make-jpeg.py): decoding against
/// Pillow's pixels for files from Pillow and from libjpeg-turbo's cjpeg (baseline, progressive, restart intervals, every
/// upsampling path, RGB components), encoding against TurboJPEG's bytes; the 8-bit bicubic resize against Pillow's; and
/// the damaged files the decoder must refuse.</summary>
[TestFixture]
public class JpegTests
{
    static string Dir => VitFixtureTests.FixtureDir("jpeg");

    static IEnumerable<(string Name, int Height, int Width, int[][] Resized)> Cases()
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "manifest.json")));
        foreach (var entry in manifest.RootElement.EnumerateObject().Where(e => e.Name != "encoded"))
            yield return (entry.Name, entry.Value.GetProperty("height").GetInt32(), entry.Value.GetProperty("width").GetInt32(),
                [.. entry.Value.GetProperty("resized").EnumerateArray().Select(s => s.EnumerateArray().Select(v => v.GetInt32()).ToArray())]);
    }

    [Test]
    public void DecodesEveryFixtureExactlyAsPillow()
    {
        foreach (var (name, h, w, _) in Cases())
        {
            var image = ImageFile.Read(Path.Combine(Dir, name + ".jpg"));
            Assert.That((image.Height, image.Width), Is.EqualTo((h, w)), name);
            Assert.That(image.Rgb, Is.EqualTo(File.ReadAllBytes(Path.Combine(Dir, name + ".rgb"))), $"{name}: decoded pixels");
        }
    }

    [Test]
    public void CoversEveryDecoderPath()
    {
        var names = Cases().Select(c => c.Name).ToList();
        Assert.That(names, Is.SupersetOf(new[] { "rgb420", "rgb422", "rgb444", "gray", "progressive420", "progressive444opt", "progressivegray",
            "restart420", "restartprogressive", "s440", "s411", "mixed", "narrow420", "rgbcomponents" }));
    }

    [Test]
    public void EncodesExactlyAsTurboJpeg()
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "manifest.json")));
        int cases = 0;
        foreach (var e in manifest.RootElement.GetProperty("encoded").EnumerateArray())
        {
            string name = e.GetProperty("name").GetString()!;
            var image = new RgbImage(e.GetProperty("width").GetInt32(), e.GetProperty("height").GetInt32(),
                File.ReadAllBytes(Path.Combine(Dir, "encoded", name + ".rgb")));
            var expected = File.ReadAllBytes(Path.Combine(Dir, "encoded", name + ".jpg"));
            var bytes = Jpeg.Encode(image, e.GetProperty("quality").GetInt32());
            int first = Enumerable.Range(0, Math.Min(bytes.Length, expected.Length)).FirstOrDefault(i => bytes[i] != expected[i], -1);
            Assert.That((bytes.Length, first), Is.EqualTo((expected.Length, -1)), $"{name}: {bytes.Length} bytes vs TurboJPEG's {expected.Length}, first difference at {first}");
            cases++;
        }
        Assert.That(cases, Is.GreaterThanOrEqualTo(9));
        Assert.Throws<ArgumentOutOfRangeException>(() => Jpeg.Encode(new RgbImage(1, 1, [1, 2, 3]), 96));
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
