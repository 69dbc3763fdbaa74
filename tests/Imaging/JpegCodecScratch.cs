using Engine.Imaging;
namespace Engine.Tests;
[TestFixture]
public class JpegCodecScratch
{
    [Test]
    public void ManagedDecodeMatchesPillowFixtures()
    {
        string dir = VitFixtureTests.FixtureDir("jpeg");
        foreach (var name in new[] { "rgb420", "rgb444", "rgb422", "gray" })
        {
            var img = JpegDecoder.Decode(File.ReadAllBytes(Path.Combine(dir, name + ".jpg")), name);
            var expected = File.ReadAllBytes(Path.Combine(dir, name + ".rgb"));
            int diff = img.Rgb.Zip(expected).Count(p => p.First != p.Second);
            TestContext.Out.WriteLine($"{name}: {diff} bytes differ");
            Assert.That(diff, Is.Zero, name);
        }
    }

    [Test]
    public void ManagedEncodeMatchesTurbo()
    {
        var rng = new Random(3);
        int bad = 0;
        foreach (var (w, h, q) in Enumerable.Range(0, 300).Select(i => (rng.Next(1, 90), rng.Next(1, 90), rng.Next(1, 96))))
        {
            var rgb = new byte[w * h * 3];
            for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) for (int c = 0; c < 3; c++)
                rgb[(y * w + x) * 3 + c] = (byte)Math.Clamp(128 + 90 * Math.Sin(0.2 * x + 0.13 * y + c) + rng.Next(-30, 30), 0, 255);
            var image = new RgbImage(w, h, rgb);
            var turbo = Jpeg.Encode(image, q);
            var mine = JpegEncoder.Encode(image, q);
            int first = Enumerable.Range(0, Math.Min(turbo.Length, mine.Length)).FirstOrDefault(i => turbo[i] != mine[i], -1);
            TestContext.Out.WriteLine($"{w}x{h} q{q}: turbo {turbo.Length} bytes, managed {mine.Length}, first difference at {first}");
            if (first >= 0 || turbo.Length != mine.Length) bad++;
            var back = JpegDecoder.Decode(turbo, "t");
            var viaTurbo = Jpeg.Decode(turbo, "t");
            Assert.That(back.Rgb, Is.EqualTo(viaTurbo.Rgb), $"{w}x{h}: managed decode of turbo's file");
        }
        Assert.That(bad, Is.Zero);
    }
}
