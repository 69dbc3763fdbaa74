using System.Runtime.InteropServices;
using System.Text.Json;
using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>
/// The safetensors format: u64 little-endian header length N, N bytes of UTF-8 JSON mapping each tensor name to
/// {dtype, shape, data_offsets [begin, end)} relative to the byte buffer that follows (plus an optional
/// <c>__metadata__</c> string map), then the buffer. Reads are memory-mapped and every header field is validated
/// before anything is sized by it.
/// </summary>
public static class SafeTensors
{
    /// <summary>Headers longer than this are refused (the reference implementation allows 100 MB; 16 MiB holds the
    /// <see cref="InputLimits.MaxTensors"/> entries with room to spare, and parses in well under a second).</summary>
    public const long MaxHeaderBytes = 16 << 20;

    /// <summary>Opens <paramref name="path"/> for reading; the tensors are converted to float32 when read.</summary>
    /// <exception cref="InvalidInputException">The file is malformed (the message names the file, the tensor and the problem).</exception>
    public static unsafe Checkpoint Open(string path)
    {
        long length = new FileInfo(path).Length;
        if (length < 8) throw Bad(path, $"truncated: {length} bytes, but a safetensors file starts with an 8-byte header length");
        byte[] header;
        using (var f = File.OpenRead(path))
        {
            Span<byte> prefix = stackalloc byte[8];
            f.ReadExactly(prefix);
            ulong n = BitConverter.ToUInt64(prefix);
            if (n > MaxHeaderBytes) throw Bad(path, $"header length {n} exceeds the {MaxHeaderBytes}-byte bound (not a safetensors file?)");
            if ((long)n > length - 8) throw Bad(path, $"header length {n} is longer than the rest of the file ({length - 8} bytes): truncated or not a safetensors file");
            header = new byte[n];
            f.ReadExactly(header);
        }
        long bufferStart = 8 + header.Length, bufferBytes = length - bufferStart;
        var (infos, metadata) = ParseHeader(path, header, bufferBytes);

        var mapping = length > bufferStart || infos.Count > 0 ? new MappedFile(path) : null;
        try
        {
            var entries = infos.Select(t => new CheckpointEntry(t.Name, t.Shape, t.DType,
                dst => DiskDTypes.ToFloat(t.DType, mapping!.Pointer($"tensor '{t.Name}'") + bufferStart + t.Begin, dst)));
            return new Checkpoint(path, "safetensors", entries.ToList(), metadata, mapping);
        }
        catch
        {
            mapping?.Dispose(); // a refused file (a name twice) must not keep its mapping and descriptor open
            throw;
        }
    }

    record struct Info(string Name, string DType, int[] Shape, long Begin, long End);

    static (List<Info>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long bufferBytes)
    {
        try
        {
            return ParseJson(path, header, bufferBytes);
        }
        catch (InvalidOperationException e) // a string or name that is not valid UTF-8, read from a valid JSON document
        {
            throw Bad(path, $"header holds text that is not valid UTF-8 ({e.Message})");
        }
    }

    static (List<Info>, Dictionary<string, string>) ParseJson(string path, byte[] header, long bufferBytes)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e) { throw Bad(path, $"header is not valid JSON: {e.Message}"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad(path, "header is not a JSON object");
        var infos = new List<Info>();
        var metadata = new Dictionary<string, string>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__")
            {
                if (p.Value.ValueKind != JsonValueKind.Object) throw Bad(path, "__metadata__ is not an object");
                foreach (var m in p.Value.EnumerateObject())
                    metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : throw Bad(path, $"__metadata__ value '{m.Name}' is not a string");
                continue;
            }
            if (infos.Count == InputLimits.MaxTensors) throw Bad(path, $"more than {InputLimits.MaxTensors} tensors");
            infos.Add(ParseTensor(path, p.Name, p.Value, bufferBytes));
        }
        // Offsets must not overlap: sort by begin and compare neighbours.
        var sorted = infos.OrderBy(i => i.Begin).ThenBy(i => i.End).ToList();
        for (int i = 1; i < sorted.Count; i++)
            if (sorted[i].Begin < sorted[i - 1].End)
                throw Bad(path, $"tensor '{sorted[i].Name}' data [{sorted[i].Begin}, {sorted[i].End}) overlaps tensor '{sorted[i - 1].Name}' [{sorted[i - 1].Begin}, {sorted[i - 1].End})");
        return (infos, metadata);
    }

    static Info ParseTensor(string path, string name, JsonElement e, long bufferBytes)
    {
        string where = $"tensor '{name}'";
        if (e.ValueKind != JsonValueKind.Object) throw Bad(path, $"{where}: entry is not an object");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw Bad(path, $"{where}: missing dtype");
        string dtype = dt.GetString()!;
        int size = DiskDTypes.SizeOf(dtype);
        if (size == 0) throw Bad(path, $"{where}: unknown or unsupported dtype '{dtype}' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw Bad(path, $"{where}: missing shape");
        if (sh.GetArrayLength() > InputLimits.MaxRank) throw Bad(path, $"{where}: shape has {sh.GetArrayLength()} dimensions, more than {InputLimits.MaxRank}");
        var shape = new int[sh.GetArrayLength()];
        int d = 0;
        foreach (var v in sh.EnumerateArray())
            shape[d++] = v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int dim) && dim >= 0 ? dim
                : throw Bad(path, $"{where}: shape entry {v.GetRawText()} is not a non-negative 32-bit integer");
        long count = InputLimits.Elements(shape, path, where);
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2
            || off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
            || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end))
            throw Bad(path, $"{where}: data_offsets must be [begin, end], two integers");
        if (begin < 0 || end < begin || end > bufferBytes)
            throw Bad(path, $"{where}: data_offsets [{begin}, {end}) fall outside the {bufferBytes}-byte data buffer (truncated file?)");
        if (end - begin != count * size)
            throw Bad(path, $"{where}: data_offsets [{begin}, {end}) hold {end - begin} bytes, but {dtype} {sh} needs {count * size}");
        return new Info(name, dtype, shape, begin, end);
    }

    /// <summary>Writes named tensors (F32 or I32; <see cref="Tensor.Name"/> is the key) atomically, in the given order.</summary>
    public static void Write(string path, IEnumerable<Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in list)
        {
            if (t.Name == null) throw new ArgumentException($"{path}: tensor {t.Describe()} has no name");
            if (!names.Add(t.Name)) throw new ArgumentException($"{path}: tensor name '{t.Name}' appears twice");
            if (t.DType is not (DType.F32 or DType.I32)) throw new ArgumentException($"{path}: tensor {t.Describe()}: only F32 and I32 can be written");
        }
        using var json = new MemoryStream();
        using (var w = new Utf8JsonWriter(json))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in list)
            {
                w.WriteStartObject(t.Name!);
                w.WriteString("dtype", t.DType == DType.F32 ? "F32" : "I32");
                w.WriteStartArray("shape");
                foreach (int d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset += t.Bytes);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        // Pad the header with spaces so the data buffer starts 8-byte aligned.
        int padded = (int)((json.Length + 7) / 8 * 8);
        AtomicFile.Write(path, stream =>
        {
            stream.Write(BitConverter.GetBytes((ulong)padded));
            stream.Write(json.GetBuffer().AsSpan(0, (int)json.Length));
            for (long i = json.Length; i < padded; i++) stream.WriteByte((byte)' ');
            foreach (var t in list)
                if (t.DType == DType.F32) stream.Write(MemoryMarshal.AsBytes(t.ToArray().AsSpan()));
                else stream.Write(MemoryMarshal.AsBytes(t.ToIntArray().AsSpan()));
        });
    }

    static InvalidInputException Bad(string path, string problem) => new(path, problem);
}
