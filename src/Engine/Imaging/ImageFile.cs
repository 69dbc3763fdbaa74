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
        // FIFOs, devices and /proc files report no size; reading one could block or never end, so only a non-empty
        // file of bounded size is opened, and no more than its size is read.
        long length = new FileInfo(path).Length;
        if (length == 0) throw new InvalidInputException(path, "empty, or not a regular file (a FIFO, a device)");
        if (length > InputLimits.MaxImageFileBytes) throw new InvalidInputException(path, $"{length} bytes, more than the {InputLimits.MaxImageFileBytes} an image may have");
        var bytes = new byte[length];
        using (var f = File.OpenRead(path))
        {
            int read = f.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
            if (read != bytes.Length) throw new InvalidInputException(path, $"shrank while being read ({read} of {length} bytes)");
        }
        if (bytes.Length >= 8 && bytes[0] == 0x89 && bytes[1] == (byte)'P') return Png.Decode(bytes, path);
        if (bytes.Length >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8) return Jpeg.Decode(bytes, path);
        throw new InvalidInputException(path, $"not a PNG or JPEG image ({bytes.Length} bytes, unrecognised header)");
    }
}
