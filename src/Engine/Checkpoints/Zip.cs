using System.IO.Compression;
using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>Opening the zip archives that hold checkpoints (.npz, PyTorch's .pth).</summary>
static class Zip
{
    /// <summary>Opens <paramref name="path"/> for reading; a damaged archive is an error naming the file.</summary>
    public static ZipArchive Open(string path)
    {
        var file = File.OpenRead(path);
        try
        {
            return new ZipArchive(file, ZipArchiveMode.Read, leaveOpen: false);
        }
        catch (InvalidDataException e)
        {
            file.Dispose();
            throw new InvalidInputException(path, $"not a valid zip archive (truncated?): {e.Message}");
        }
    }
}
