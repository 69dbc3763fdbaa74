using Engine.IO;

namespace Engine.Imaging;

/// <summary>
/// JPEG decoding through libjpeg-turbo's TurboJPEG library (P/Invoke; Debian <c>libturbojpeg0</c>) with its defaults,
/// accurate integer DCT and fancy upsampling, as Pillow decodes. Greyscale images come out with the grey value in all
/// three channels (Pillow's convert("RGB")). Any libjpeg warning, such as a premature end of the data, is an error:
/// a truncated file is refused rather than padded with grey.
/// </summary>
public static unsafe class Jpeg
{
    /// <summary>True when the TurboJPEG library can be loaded; otherwise <paramref name="reason"/> says what to install.</summary>
    public static bool IsAvailable(out string reason) => TurboJpeg.TryLoad(out reason);

    /// <summary>Decodes the JPEG file at <paramref name="path"/>.</summary>
    /// <exception cref="InvalidInputException">Unreadable, truncated or unsupported (CMYK); the message names the file.</exception>
    /// <exception cref="DllNotFoundException">libturbojpeg.so.0 is not installed.</exception>
    public static RgbImage Read(string path) => Decode(File.ReadAllBytes(path), path);

    /// <summary>Decodes JPEG bytes; <paramref name="source"/> names them in errors.</summary>
    public static RgbImage Decode(ReadOnlySpan<byte> jpeg, string source)
    {
        Require(source);
        if (jpeg.Length < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8) throw new InvalidInputException(source, $"not a JPEG file (no start-of-image marker)");
        using var decoder = TurboJpeg.Handle.Create(compress: false);
        fixed (byte* data = jpeg)
        {
            if (TurboJpeg.tjDecompressHeader3(decoder, data, (nuint)jpeg.Length, out int width, out int height, out _, out int colorspace) != 0)
                throw new InvalidInputException(source, $"unreadable JPEG header: {decoder.LastError}");
            if (colorspace is TurboJpeg.ColorspaceCmyk or TurboJpeg.ColorspaceYcck)
                throw new InvalidInputException(source, $"CMYK JPEG images are not supported (convert it to RGB)");
            if (width <= 0 || height <= 0 || (long)width * height > InputLimits.MaxImagePixels)
                throw new InvalidInputException(source, $"JPEG of {width}×{height} pixels is empty or larger than {InputLimits.MaxImagePixels} pixels");
            var rgb = new byte[(long)width * height * 3];
            fixed (byte* dst = rgb)
                if (TurboJpeg.tjDecompress2(decoder, data, (nuint)jpeg.Length, dst, width, width * 3, height, TurboJpeg.PixelFormatRgb, TurboJpeg.FlagStopOnWarning) != 0)
                    throw new InvalidInputException(source, $"corrupt or truncated JPEG: {decoder.LastError}");
            return new RgbImage(width, height, rgb);
        }
    }

    /// <summary>Encodes an image as a baseline JPEG (4:2:0 chroma, as Pillow saves by default) at
    /// <paramref name="quality"/> 1–100 (Pillow's default is 75).</summary>
    public static byte[] Encode(RgbImage image, int quality = 75)
    {
        Require("JPEG encoding");
        if (quality is < 1 or > 100) throw new ArgumentOutOfRangeException(nameof(quality), quality, "JPEG quality must be in 1..100");
        if (image.Rgb.Length != (long)image.Width * image.Height * 3 || image.Width <= 0 || image.Height <= 0)
            throw new ArgumentException($"image of {image.Width}×{image.Height} holds {image.Rgb.Length} bytes, not width·height·3");
        using var encoder = TurboJpeg.Handle.Create(compress: true);
        byte* jpeg = null;
        nuint size = 0;
        try
        {
            fixed (byte* src = image.Rgb)
                if (TurboJpeg.tjCompress2(encoder, src, image.Width, image.Width * 3, image.Height, TurboJpeg.PixelFormatRgb, ref jpeg, ref size,
                        TurboJpeg.Subsampling420, quality, 0) != 0)
                    throw new InvalidOperationException($"JPEG encoding failed: {encoder.LastError}");
            return new ReadOnlySpan<byte>(jpeg, checked((int)size)).ToArray();
        }
        finally
        {
            if (jpeg != null) TurboJpeg.tjFree(jpeg);
        }
    }

    static void Require(string what)
    {
        if (!TurboJpeg.TryLoad(out var reason)) throw new DllNotFoundException($"{what}: cannot use JPEG: {reason}");
    }
}
