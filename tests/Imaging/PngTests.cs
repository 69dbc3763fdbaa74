using Engine.IO;
using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using Engine.Imaging;

namespace Engine.Tests;

/// <summary>The PNG decoder against images encoded here with every row filter, colour type and bit depth it
/// supports, and the corrupt files it must refuse.</summary>
[TestFixture]
public class PngTests
{
    /// <summary>Encodes raw samples (rows of <paramref name="stride"/> bytes) as a PNG, cycling the row filter
    /// through None, Sub, Up, Average and Paeth so the decoder must undo each one.</summary>
    public static byte[] Encode(int width, int height, int depth, int colorType, byte[] samples, int stride, int bytesPerPixel,
        byte[]? palette = null, bool interlaced = false)
    {
        var filtered = new MemoryStream();
        for (int r = 0; r < height; r++)
        {
            int filter = r % 5;
            filtered.WriteByte((byte)filter);
            for (int i = 0; i < stride; i++)
            {
                int x = samples[r * stride + i];
                int a = i >= bytesPerPixel ? samples[r * stride + i - bytesPerPixel] : 0;
                int b = r > 0 ? samples[(r - 1) * stride + i] : 0;
                int c = r > 0 && i >= bytesPerPixel ? samples[(r - 1) * stride + i - bytesPerPixel] : 0;
                int predictor = filter switch
                {
                    0 => 0, 1 => a, 2 => b, 3 => (a + b) >> 1,
                    _ => Math.Abs(b - c) <= Math.Abs(a - c) && Math.Abs(b - c) <= Math.Abs(a + b - 2 * c) ? a : Math.Abs(a - c) <= Math.Abs(a + b - 2 * c) ? b : c,
                };
                filtered.WriteByte((byte)(x - predictor));
            }
        }
        var z = new MemoryStream();
        using (var zs = new ZLibStream(z, CompressionLevel.Optimal, leaveOpen: true)) zs.Write(filtered.ToArray());
        var png = new MemoryStream();
        png.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        void Chunk(string type, byte[] data)
        {
            var head = new byte[8];
            BinaryPrimitives.WriteUInt32BigEndian(head, (uint)data.Length);
            Encoding.ASCII.GetBytes(type).CopyTo(head, 4);
            png.Write(head);
            png.Write(data);
            var crcInput = head[4..].Concat(data).ToArray();
            var crc = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(crc, Png.Crc32(crcInput));
            png.Write(crc);
        }
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = (byte)depth;
        ihdr[9] = (byte)colorType;
        ihdr[12] = (byte)(interlaced ? 1 : 0);
        Chunk("IHDR", ihdr);
        if (palette != null) Chunk("PLTE", palette);
        var zd = z.ToArray();
        Chunk("IDAT", zd[..(zd.Length / 2)]); // split the stream over two IDAT chunks
        Chunk("IDAT", zd[(zd.Length / 2)..]);
        Chunk("IEND", []);
        return png.ToArray();
    }

    /// <summary>An RGB PNG of the given pixels.</summary>
    public static byte[] EncodeRgb(int width, int height, byte[] rgb) => Encode(width, height, 8, 2, rgb, width * 3, 3);

    static byte[] Pattern(int n, int seed) => Enumerable.Range(0, n).Select(i => (byte)((i * 37 + seed * 11 + i * i / 7) & 255)).ToArray();

    [Test]
    public void RgbAndRgbaWithEveryFilterDecode()
    {
        const int W = 7, H = 11;
        var rgb = Pattern(W * H * 3, 1);
        Assert.That(Png.Decode(EncodeRgb(W, H, rgb), "rgb").Rgb, Is.EqualTo(rgb));
        var rgba = Pattern(W * H * 4, 2);
        var expected = Enumerable.Range(0, W * H).SelectMany(p => new[] { rgba[4 * p], rgba[4 * p + 1], rgba[4 * p + 2] }).ToArray();
        Assert.That(Png.Decode(Encode(W, H, 8, 6, rgba, W * 4, 4), "rgba").Rgb, Is.EqualTo(expected), "alpha dropped");
    }

    [Test]
    public void GreyPaletteAndSixteenBitDecode()
    {
        const int W = 5, H = 6;
        var grey = Pattern(W * H, 3);
        Assert.That(Png.Decode(Encode(W, H, 8, 0, grey, W, 1), "grey").Rgb, Is.EqualTo(grey.SelectMany(g => new[] { g, g, g }).ToArray()));
        var grey16 = Pattern(W * H * 2, 4);
        Assert.That(Png.Decode(Encode(W, H, 16, 0, grey16, W * 2, 2), "grey16").Rgb,
            Is.EqualTo(Enumerable.Range(0, W * H).SelectMany(p => new[] { grey16[2 * p], grey16[2 * p], grey16[2 * p] }).ToArray()), "high byte kept");
        // 4-bit palette: two pixels per byte, high nibble first; 3 bytes per row for 5 pixels.
        var palette = Enumerable.Range(0, 16).SelectMany(i => new[] { (byte)(i * 16), (byte)(255 - i), (byte)(i * 3) }).ToArray();
        var indices = Enumerable.Range(0, W * H).Select(i => (i * 7) % 16).ToArray();
        var packed = new byte[H * 3];
        for (int y = 0; y < H; y++) for (int x = 0; x < W; x++) packed[y * 3 + x / 2] |= (byte)(indices[y * W + x] << (x % 2 == 0 ? 4 : 0));
        Assert.That(Png.Decode(Encode(W, H, 4, 3, packed, 3, 1, palette), "palette").Rgb,
            Is.EqualTo(indices.SelectMany(i => new[] { palette[3 * i], palette[3 * i + 1], palette[3 * i + 2] }).ToArray()));
    }

    [Test]
    public void CorruptTruncatedAndInterlacedFilesAreRefused()
    {
        var good = EncodeRgb(4, 4, Pattern(48, 5));
        var corrupt = (byte[])good.Clone();
        corrupt[40] ^= 0xFF;
        Assert.That(Assert.Throws<InvalidInputException>(() => Png.Decode(corrupt, "corrupt.png"))!.Message, Does.Contain("corrupt.png").And.Contain("CRC"));
        Assert.That(Assert.Throws<InvalidInputException>(() => Png.Decode(good[..50], "cut.png"))!.Message, Does.Contain("cut.png").And.Contain("truncated"));
        Assert.That(Assert.Throws<InvalidInputException>(() => Png.Decode("GIF89a....."u8, "gif.png"))!.Message, Does.Contain("not a PNG"));
        var interlaced = Encode(4, 4, 8, 2, Pattern(48, 5), 12, 3, interlaced: true);
        Assert.That(Assert.Throws<InvalidInputException>(() => Png.Decode(interlaced, "i.png"))!.Message, Does.Contain("interlaced"));
    }
}
