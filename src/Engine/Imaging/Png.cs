using System.Buffers.Binary;
using System.IO.Compression;
using Engine.IO;

namespace Engine.Imaging;

/// <summary>An 8-bit RGB image, rows top to bottom, pixels [height, width, 3].</summary>
/// <param name="Width">Pixels per row.</param>
/// <param name="Height">Rows.</param>
/// <param name="Rgb">Interleaved R, G, B bytes.</param>
public sealed record RgbImage(int Width, int Height, byte[] Rgb);

/// <summary>
/// A PNG decoder for non-interlaced images: greyscale (1/2/4/8/16-bit), RGB (8/16), palette (1/2/4/8), grey+alpha and
/// RGBA (8/16). Chunk CRCs are verified, sizes are bounded before anything is allocated, alpha is dropped (as
/// Pillow's convert("RGB")) and 16-bit samples keep their high byte.
/// </summary>
public static class Png
{
    static readonly uint[] CrcTable = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    /// <summary>CRC-32 (the zlib/PNG polynomial) of <paramref name="data"/>.</summary>
    public static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFFu;
        foreach (byte b in data) c = CrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }

    /// <summary>Decodes the PNG file at <paramref name="path"/>.</summary>
    /// <exception cref="InvalidInputException">Malformed or unsupported; the message names the file and the problem.</exception>
    public static RgbImage Read(string path) => Decode(File.ReadAllBytes(path), path);

    /// <summary>Decodes PNG bytes; <paramref name="source"/> names them in errors.</summary>
    public static RgbImage Decode(ReadOnlySpan<byte> png, string source)
    {
        ReadOnlySpan<byte> signature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];
        if (png.Length < 8 || !png[..8].SequenceEqual(signature)) throw Bad(source, "not a PNG file (bad signature)");
        int width = 0, height = 0, depth = 0, colorType = -1;
        byte[]? palette = null;
        using var idat = new MemoryStream();
        bool ended = false;
        for (int at = 8; !ended;)
        {
            if (at + 12 > png.Length) throw Bad(source, "truncated (a chunk header runs past the end)");
            uint length = BinaryPrimitives.ReadUInt32BigEndian(png[at..]);
            if (length > int.MaxValue || at + 12 + (long)length > png.Length) throw Bad(source, $"truncated (a {length}-byte chunk runs past the end)");
            var type = png.Slice(at + 4, 4);
            var data = png.Slice(at + 8, (int)length);
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(png[(at + 8 + (int)length)..]);
            string name = System.Text.Encoding.ASCII.GetString(type);
            if (Crc32(png.Slice(at + 4, 4 + (int)length)) != crc) throw Bad(source, $"chunk {name} fails its CRC check (corrupt file)");
            at += 12 + (int)length;
            switch (name)
            {
                case "IHDR":
                    if (length != 13) throw Bad(source, "IHDR has the wrong length");
                    width = BinaryPrimitives.ReadInt32BigEndian(data);
                    height = BinaryPrimitives.ReadInt32BigEndian(data[4..]);
                    depth = data[8];
                    colorType = data[9];
                    if (width <= 0 || height <= 0 || (long)width * height > InputLimits.MaxImagePixels)
                        throw Bad(source, $"image size {width}×{height} is empty or larger than {InputLimits.MaxImagePixels} pixels");
                    if (data[12] != 0) throw Bad(source, "interlaced PNGs are not supported");
                    break;
                case "PLTE": palette = data.ToArray(); break;
                case "IDAT": idat.Write(data); break;
                case "IEND": ended = true; break;
            }
        }
        int channels = colorType switch { 0 => 1, 2 => 3, 3 => 1, 4 => 2, 6 => 4, _ => throw Bad(source, $"missing IHDR or unknown color type {colorType}") };
        bool depthOk = colorType switch { 0 => depth is 1 or 2 or 4 or 8 or 16, 3 => depth is 1 or 2 or 4 or 8, _ => depth is 8 or 16 };
        if (!depthOk) throw Bad(source, $"bit depth {depth} is invalid for color type {colorType}");
        if (colorType == 3 && palette == null) throw Bad(source, "palette image without a PLTE chunk");
        int bitsPerPixel = channels * depth, step = Math.Max(1, bitsPerPixel / 8);
        int stride = (int)(((long)width * bitsPerPixel + 7) / 8); // < 2³¹: width ≤ 2²⁶ pixels of ≤ 64 bits
        var raw = new byte[(long)height * (stride + 1)];
        try
        {
            idat.Position = 0;
            using var z = new ZLibStream(idat, CompressionMode.Decompress);
            z.ReadExactly(raw);
        }
        catch (Exception e) when (e is not InvalidInputException && e is InvalidDataException or EndOfStreamException)
        {
            throw Bad(source, $"image data is truncated or corrupt ({e.Message})");
        }
        Unfilter(raw, height, stride, step, source);
        return new RgbImage(width, height, ToRgb(raw, width, height, stride, depth, colorType, palette, source));
    }

    /// <summary>Undoes the per-row filters in place (row r's bytes start at r·(stride+1)+1).</summary>
    static void Unfilter(byte[] raw, int height, int stride, int step, string source)
    {
        for (int r = 0; r < height; r++)
        {
            int row = r * (stride + 1) + 1, prev = row - stride - 1;
            byte filter = raw[row - 1];
            for (int i = 0; i < stride; i++)
            {
                int left = i >= step ? raw[row + i - step] : 0, up = r > 0 ? raw[prev + i] : 0, upLeft = r > 0 && i >= step ? raw[prev + i - step] : 0;
                raw[row + i] += filter switch
                {
                    0 => 0,
                    1 => (byte)left,
                    2 => (byte)up,
                    3 => (byte)((left + up) / 2),
                    4 => (byte)Paeth(left, up, upLeft),
                    _ => throw Bad(source, $"row {r} has unknown filter type {filter}"),
                };
            }
        }
    }

    static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }

    static byte[] ToRgb(byte[] raw, int width, int height, int stride, int depth, int colorType, byte[]? palette, string source)
    {
        var rgb = new byte[(long)width * height * 3];
        int channels = colorType switch { 0 or 3 => 1, 2 => 3, 4 => 2, _ => 4 };
        for (int y = 0; y < height; y++)
        {
            int row = y * (stride + 1) + 1;
            for (int x = 0; x < width; x++)
            {
                int o = (y * width + x) * 3;
                if (depth < 8)
                {   // packed 1/2/4-bit samples, most significant bits first
                    int bit = x * depth, v = (raw[row + bit / 8] >> (8 - depth - bit % 8)) & ((1 << depth) - 1);
                    if (colorType == 3) SetPaletteColor(rgb, o, palette!, v, source);
                    else rgb[o] = rgb[o + 1] = rgb[o + 2] = (byte)(v * 255 / ((1 << depth) - 1));
                    continue;
                }
                int bytes = depth / 8, at = row + x * channels * bytes; // 16-bit: the high byte comes first
                if (colorType == 3) SetPaletteColor(rgb, o, palette!, raw[at], source);
                else if (channels <= 2) rgb[o] = rgb[o + 1] = rgb[o + 2] = raw[at];
                else
                {
                    rgb[o] = raw[at];
                    rgb[o + 1] = raw[at + bytes];
                    rgb[o + 2] = raw[at + 2 * bytes];
                }
            }
        }
        return rgb;
    }

    static void SetPaletteColor(byte[] rgb, int o, byte[] palette, int index, string source)
    {
        if (3 * index + 2 >= palette.Length) throw Bad(source, $"palette index {index} is outside the {palette.Length / 3}-entry palette");
        rgb[o] = palette[3 * index];
        rgb[o + 1] = palette[3 * index + 1];
        rgb[o + 2] = palette[3 * index + 2];
    }

    static InvalidInputException Bad(string source, string problem) => new(source, problem);
}
