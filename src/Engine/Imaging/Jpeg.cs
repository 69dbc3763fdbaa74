using Engine.IO;

namespace Engine.Imaging;

/// <summary>
/// JPEG in managed code, no native library: decoding gives the pixels Pillow gets (libjpeg-turbo's accurate integer
/// IDCT, fancy upsampling and colour tables, reproduced exactly: <see cref="JpegDecoder"/>), encoding gives the bytes
/// TurboJPEG writes (<see cref="JpegEncoder"/>). Greyscale images come out with the grey value in all three channels
/// (Pillow's convert("RGB")). A damaged or truncated file is an error, never padded with grey.
/// </summary>
public static class Jpeg
{
    /// <summary>The highest quality <see cref="Encode"/> takes (TurboJPEG switches to another DCT from 96).</summary>
    public const int MaxQuality = 95;

    /// <summary>Decodes the JPEG file at <paramref name="path"/>.</summary>
    /// <exception cref="InvalidInputException">Unreadable, truncated or unsupported (CMYK, arithmetic-coded, lossless,
    /// 12-bit); the message names the file.</exception>
    public static RgbImage Read(string path) => Decode(File.ReadAllBytes(path), path);

    /// <summary>Decodes JPEG bytes (baseline or progressive, greyscale or colour, any sampling, restart intervals);
    /// <paramref name="source"/> names them in errors.</summary>
    /// <exception cref="InvalidInputException">Not a JPEG, damaged, truncated or unsupported.</exception>
    public static RgbImage Decode(ReadOnlySpan<byte> jpeg, string source)
    {
        try { return JpegDecoder.Decode(jpeg, source); }
        catch (IndexOutOfRangeException) { throw new InvalidInputException(source, "corrupt JPEG: a marker segment or the entropy-coded data is inconsistent"); }
    }

    /// <summary>Encodes an image as a baseline JPEG with 4:2:0 chroma at <paramref name="quality"/> 1–95, byte for byte
    /// as TurboJPEG's <c>tjCompress2</c> with default flags (75 is Pillow's default quality).</summary>
    public static byte[] Encode(RgbImage image, int quality = 75)
    {
        if (quality is < 1 or > MaxQuality) throw new ArgumentOutOfRangeException(nameof(quality), quality, $"JPEG quality must be in 1..{MaxQuality}");
        if (image.Width <= 0 || image.Height <= 0 || image.Width > 65535 || image.Height > 65535 || image.Rgb.Length != (long)image.Width * image.Height * 3)
            throw new ArgumentException($"image of {image.Width}×{image.Height} holds {image.Rgb.Length} bytes, not width·height·3 (each side 1..65535)");
        return JpegEncoder.Encode(image, quality);
    }
}
