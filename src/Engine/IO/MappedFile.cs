using System.IO.MemoryMappedFiles;

namespace Engine.IO;

/// <summary>A read-only memory mapping of a whole (non-empty) file, alive until disposed: checkpoints and image caches
/// read their data straight from it.</summary>
public sealed unsafe class MappedFile : IDisposable
{
    readonly MemoryMappedFile _file;
    readonly MemoryMappedViewAccessor _view;
    readonly byte* _base;
    bool _disposed;

    /// <summary>Maps <paramref name="path"/>.</summary>
    public MappedFile(string path)
    {
        Path = path;
        Length = new FileInfo(path).Length;
        if (Length == 0) throw new InvalidInputException(path, "empty file (nothing to read)");
        _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;
    }

    /// <summary>The mapped file.</summary>
    public string Path { get; }

    /// <summary>The file's length in bytes.</summary>
    public long Length { get; }

    /// <summary>The first byte; <paramref name="what"/> names the data being read in the error after disposal.</summary>
    public byte* Pointer(string what) =>
        _disposed ? throw new ObjectDisposedException($"{Path}: {what} read after the file was closed") : _base;

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
