using Engine.IO;

namespace Engine.Imaging;

/// <summary>Reads a PNG or JPEG file, recognised by its first bytes (not its name).</summary>
public static class ImageFile
{
    /// <summary>Decodes the image at <paramref name="path"/> to 8-bit RGB.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidInputException">Neither PNG nor JPEG, or malformed; the message names the file.</exception>
    public static RgbImage Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such image file", path);
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length >= 8 && bytes[0] == 0x89 && bytes[1] == (byte)'P') return Png.Decode(bytes, path);
        if (bytes.Length >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8) return Jpeg.Decode(bytes, path);
        throw new InvalidInputException(path, $"not a PNG or JPEG image ({bytes.Length} bytes, unrecognised header)");
    }
}
