using System.Security.Cryptography;
using System.Text;
using Engine.Imaging;
using Engine.IO;
using Engine.Kernels;

namespace Engine.Data;

/// <summary>
/// A split's images decoded and resized once (Pillow-exact bicubic, to size×size) and stored as 8-bit RGB in one file,
/// read back memory-mapped: epochs never decode again, and a large test split is never held in memory (readers copy
/// the images they need). The file is named after a hash of the list file's bytes, every image's size and modification
/// time, and the target size, so a changed folder gets a new cache; it is written atomically.
/// Layout: "PEFTU8\0\x01", int32 count, height, width, channels (3), int32 labels[count], then pixels [count, h, w, 3].
/// </summary>
public sealed unsafe class ImageCache : IDisposable
{
    static readonly byte[] Magic = "PEFTU8\0\x01"u8.ToArray();
    const int HeaderInts = 4;
    readonly MappedFile _file;
    readonly long _pixelsAt;

    ImageCache(string path)
    {
        CachePath = path;
        _file = new MappedFile(path);
        byte* header = _file.Pointer("the header");
        long length = _file.Length;
        if (length < Magic.Length + 4 * HeaderInts || !new ReadOnlySpan<byte>(header, Magic.Length).SequenceEqual(Magic))
            throw Corrupt("bad header");
        var sizes = new ReadOnlySpan<int>(header + Magic.Length, HeaderInts);
        (Count, Height, Width) = (sizes[0], sizes[1], sizes[2]);
        if (Count <= 0 || Height <= 0 || Width <= 0 || sizes[3] != 3 || 3L * Height * Width > int.MaxValue) throw Corrupt("bad sizes");
        _pixelsAt = Magic.Length + 4L * HeaderInts + 4L * Count;
        if (length != _pixelsAt + (long)Count * ImageBytes) throw Corrupt($"{length} bytes, expected {_pixelsAt + (long)Count * ImageBytes}");
        Labels = new ReadOnlySpan<int>(header + Magic.Length + 4 * HeaderInts, Count).ToArray();
    }

    Exception Corrupt(string why)
    {
        Dispose();
        return new InvalidInputException(CachePath, $"not a valid image cache ({why}); delete it to rebuild");
    }

    /// <summary>The cache file.</summary>
    public string CachePath { get; }

    /// <summary>Number of images.</summary>
    public int Count { get; }

    /// <summary>Image height in pixels.</summary>
    public int Height { get; }

    /// <summary>Image width in pixels.</summary>
    public int Width { get; }

    /// <summary>Bytes per image (h·w·3).</summary>
    public int ImageBytes => Height * Width * 3;

    /// <summary>Each image's label.</summary>
    public int[] Labels { get; }

    /// <summary>Image <paramref name="index"/>'s pixels [h, w, 3] (valid until the cache is disposed).</summary>
    public ReadOnlySpan<byte> Pixels(int index)
    {
        if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"the cache holds {Count} images");
        return new ReadOnlySpan<byte>(_file.Pointer($"image {index}") + _pixelsAt + (long)index * ImageBytes, ImageBytes);
    }

    /// <summary>Writes images <paramref name="indices"/>, normalised, into <paramref name="batch"/> [n, 3, h, w], each
    /// augmented first by <paramref name="augmentation"/> (if any) with the seed Hash(<paramref name="seed"/>, position
    /// in the batch); augmented images are prepared in parallel.</summary>
    public void FillBatch(ReadOnlySpan<int> indices, Normalization normalization, Span<float> batch, TrainAugmentation? augmentation = null, ulong seed = 0)
    {
        int floats = ImageBytes;
        if (batch.Length != indices.Length * floats) throw new ArgumentException($"batch of {batch.Length} floats for {indices.Length} images of {floats}");
        if (augmentation == null || augmentation.IsIdentity)
        {
            for (int i = 0; i < indices.Length; i++) normalization.Normalize(Pixels(indices[i]), batch.Slice(i * floats, floats));
            return;
        }
        var images = indices.ToArray();
        var augmented = new byte[images.Length][];
        Parallel.For(0, images.Length, i =>
        {
            augmented[i] = Pixels(images[i]).ToArray();
            augmentation.Apply(augmented[i], Height, Width, CounterRng.Hash(seed, (ulong)i));
        });
        for (int i = 0; i < images.Length; i++) normalization.Normalize(augmented[i], batch.Slice(i * floats, floats));
    }

    /// <summary>
    /// Opens the cache of <paramref name="list"/> at size×size under <paramref name="cacheDir"/>, building it first
    /// when it does not exist (decoding on <paramref name="threads"/> threads, reporting images done to
    /// <paramref name="progress"/>). A bad image is an error naming the list file, line and image.
    /// </summary>
    public static ImageCache Open(ImageList list, int size, string cacheDir, int threads = 2, Action<int, int>? progress = null)
    {
        string path = Path.Combine(cacheDir, $"{Path.GetFileNameWithoutExtension(list.ListFile)}.{size}.{Key(list, size)}.u8");
        if (!File.Exists(path)) Build(list, size, path, threads, progress);
        var cache = new ImageCache(path);
        if (cache.Count != list.Count || cache.Height != size || cache.Width != size || !cache.Labels.AsSpan().SequenceEqual(list.Labels.ToArray()))
            throw cache.Corrupt($"it does not hold the {list.Count} images and labels of {list.ListFile} at {size}×{size}");
        return cache;
    }

    /// <summary>Hex prefix of SHA-256 over the list file's path and bytes, each image's size and modification time, and the size.</summary>
    static string Key(ImageList list, int size)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes($"{list.ListFile}\n{size}\n"));
        hash.AppendData(File.ReadAllBytes(list.ListFile));
        foreach (var file in list.Files)
        {
            var info = new FileInfo(file);
            hash.AppendData(Encoding.UTF8.GetBytes($"{info.Length}:{info.LastWriteTimeUtc.Ticks}\n"));
        }
        return Convert.ToHexString(hash.GetHashAndReset())[..16].ToLowerInvariant();
    }

    static void Build(ImageList list, int size, string path, int threads, Action<int, int>? progress)
    {
        int imageBytes = size * size * 3, chunk = 64;
        AtomicFile.Write(path, stream =>
        {
            stream.Write(Magic);
            var ints = new int[HeaderInts + list.Count];
            (ints[0], ints[1], ints[2], ints[3]) = (list.Count, size, size, 3);
            for (int i = 0; i < list.Count; i++) ints[HeaderInts + i] = list.Labels[i];
            stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(ints.AsSpan()));
            var buffer = new byte[chunk * imageBytes];
            for (int start = 0; start < list.Count; start += chunk)
            {
                int n = Math.Min(chunk, list.Count - start);
                var errors = new Exception?[n];
                Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, threads) }, i =>
                {
                    try
                    {
                        Normalization.Resize(ImageFile.Read(list.Files[start + i]), size).CopyTo(buffer, i * imageBytes);
                    }
                    catch (Exception e) when (e is InvalidDataException or IOException) // ours included: it gets the list line
                    {
                        errors[i] = e;
                    }
                });
                // The first bad image in list order, named by its list line (the partial cache file is discarded).
                if (Array.FindIndex(errors, e => e != null) is int bad and >= 0)
                    throw new InvalidInputException(list.Where(start + bad), $"{errors[bad]!.Message}", errors[bad]);
                stream.Write(buffer, 0, n * imageBytes);
                progress?.Invoke(start + n, list.Count);
            }
        });
    }

    /// <inheritdoc/>
    public void Dispose() => _file.Dispose();
}
