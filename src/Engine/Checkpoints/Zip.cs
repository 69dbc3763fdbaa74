using System.IO.Compression;
using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>Opening the zip archives that hold checkpoints (.npz, PyTorch's .pth), with their central directory read
/// and checked up front.</summary>
static class Zip
{
    /// <summary>Opens <paramref name="path"/> for reading and reads its directory; a damaged archive, one with more than
    /// <see cref="InputLimits.MaxTensors"/> members, or a member whose declared size could not come from its compressed
    /// bytes (a decompression bomb) is an error naming the file and the member.</summary>
    public static ZipArchive Open(string path)
    {
        var file = File.OpenRead(path);
        ZipArchive? zip = null;
        try
        {
            zip = new ZipArchive(file, ZipArchiveMode.Read, leaveOpen: false);
            var entries = zip.Entries; // the central directory, read here so its errors are named
            if (entries.Count > InputLimits.MaxTensors) throw new InvalidInputException(path, $"{entries.Count} zip members, more than {InputLimits.MaxTensors}");
            foreach (var member in entries)
                if (member.Length < 0 || member.Length > Math.Max(member.CompressedLength, 1) * InputLimits.MaxCompressionRatio + (1 << 20))
                    throw new InvalidInputException(path, $"member '{member.FullName}' declares {member.Length} bytes from {member.CompressedLength} compressed ones (a decompression bomb?)");
            return zip;
        }
        catch (Exception e) when (e is InvalidDataException or IOException or ArgumentException or NotSupportedException)
        {
            if (zip != null) zip.Dispose();
            else file.Dispose();
            if (e is InvalidInputException) throw;
            throw new InvalidInputException(path, $"not a valid zip archive (truncated?): {e.Message}", e);
        }
    }

    /// <summary>Reads exactly <paramref name="destination"/>'s length from <paramref name="member"/>, after skipping
    /// <paramref name="skip"/> bytes (deflated members cannot seek): only the bytes a tensor needs are decompressed.</summary>
    public static void ReadRange(ZipArchiveEntry member, long skip, Span<byte> destination, string where)
    {
        try
        {
            using var s = member.Open();
            var scratch = new byte[(int)Math.Min(skip, 1 << 20)];
            for (long left = skip; left > 0;)
            {
                int n = s.Read(scratch, 0, (int)Math.Min(left, scratch.Length));
                if (n == 0) throw new EndOfStreamException();
                left -= n;
            }
            s.ReadExactly(destination);
        }
        catch (Exception e) when (e is not InvalidInputException && e is IOException or InvalidDataException)
        {
            throw new InvalidInputException(where, $"unreadable (truncated or corrupt): {e.Message}", e);
        }
    }
}
