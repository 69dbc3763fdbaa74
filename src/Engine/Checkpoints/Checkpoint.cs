using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>
/// One tensor of a checkpoint: its name, shape and on-disk dtype, and a reader that converts its elements to
/// float32. Entries of a memory-mapped file read straight from the mapping; derived entries (key-mapped npz
/// kernels, resampled position embeddings) compute their values from other entries.
/// </summary>
public sealed class CheckpointEntry
{
    readonly Action<Span<float>> _read;

    /// <summary>Creates an entry whose elements <paramref name="read"/> writes, in row-major order.</summary>
    public CheckpointEntry(string name, int[] shape, string dtype, Action<Span<float>> read)
    {
        Name = name;
        Shape = shape;
        DType = dtype;
        _read = read;
        Count = 1;
        foreach (int d in shape) Count = checked(Count * d);
    }

    /// <summary>The key, e.g. <c>blocks.0.attn.qkv.weight</c>.</summary>
    public string Name { get; }

    /// <summary>Dimensions, outermost first.</summary>
    public int[] Shape { get; }

    /// <summary>The dtype as the file names it (safetensors names: F32, F16, BF16, ...; npy descr mapped to them).</summary>
    public string DType { get; }

    /// <summary>Number of elements.</summary>
    public long Count { get; }

    /// <summary>Shape as text, e.g. [768, 3, 16, 16].</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    /// <summary>Converts the elements to float32 into <paramref name="destination"/> (length <see cref="Count"/>).</summary>
    public void ReadInto(Span<float> destination)
    {
        if (destination.Length != Count)
            throw new ArgumentException($"checkpoint tensor '{Name}' has {Count} elements, the destination holds {destination.Length}");
        _read(destination);
    }

    /// <summary>The elements as a new float32 array.</summary>
    public float[] Read()
    {
        var values = new float[Count];
        _read(values);
        return values;
    }
}

/// <summary>
/// An open checkpoint file: its tensors by name, in file order. <see cref="Open"/> picks the reader from the file's
/// first bytes (safetensors, npz, or PyTorch's zip .pth). Dispose releases the file (entries stop being readable).
/// </summary>
public sealed class Checkpoint : IDisposable
{
    readonly Dictionary<string, CheckpointEntry> _byName = new(StringComparer.Ordinal);
    readonly IDisposable? _owner;

    internal Checkpoint(string path, string format, IEnumerable<CheckpointEntry> entries, IReadOnlyDictionary<string, string>? metadata, IDisposable? owner)
    {
        Path = path;
        Format = format;
        var list = new List<CheckpointEntry>();
        foreach (var e in entries)
        {
            if (!_byName.TryAdd(e.Name, e)) throw new InvalidInputException(path, $"tensor '{e.Name}' appears twice");
            list.Add(e);
        }
        Entries = list;
        Metadata = metadata ?? new Dictionary<string, string>();
        _owner = owner;
    }

    /// <summary>Opens a .safetensors or .npz file (detected from its content, not its name).</summary>
    /// <exception cref="InvalidInputException">The file is malformed; the message names the file, the tensor and the problem.</exception>
    public static Checkpoint Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: checkpoint file not found", path);
        Span<byte> magic = stackalloc byte[4];
        int read;
        using (var f = File.OpenRead(path)) read = f.ReadAtLeast(magic, 4, throwOnEndOfStream: false);
        if (read == 4 && magic[0] == (byte)'P' && magic[1] == (byte)'K')
        {
            var zip = Zip.Open(path);
            return Pth.IsPth(zip) ? Pth.Read(zip, path) : Npz.Read(zip, path);
        }
        if (path.EndsWith(".pth", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".pt", StringComparison.OrdinalIgnoreCase)) return Pth.Open(path);
        if (path.EndsWith(".npz", StringComparison.OrdinalIgnoreCase))
            throw new InvalidInputException(path, $"not a zip archive (an .npz must start with 'PK')");
        return SafeTensors.Open(path);
    }

    /// <summary>The file this checkpoint was read from.</summary>
    public string Path { get; }

    /// <summary>"safetensors", "npz" or "pth".</summary>
    public string Format { get; }

    /// <summary>Every tensor, in file order.</summary>
    public IReadOnlyList<CheckpointEntry> Entries { get; }

    /// <summary>The safetensors <c>__metadata__</c> map (empty for npz).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The tensor called <paramref name="name"/>, or null.</summary>
    public CheckpointEntry? Find(string name) => _byName.GetValueOrDefault(name);

    /// <inheritdoc/>
    public void Dispose() => _owner?.Dispose();
}
