using System.Runtime.InteropServices;
using System.Text;
using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>An array read from a .npy file, converted to float32.</summary>
/// <param name="Shape">Dimensions, outermost first.</param>
/// <param name="Data">Elements in row-major order.</param>
public sealed record NpyArray(int[] Shape, float[] Data);

/// <summary>
/// NumPy's .npy format: magic "\x93NUMPY", version (1.0 u16 header length; 2.0/3.0 u32), a Python dict literal
/// {'descr': '&lt;f4', 'fortran_order': False, 'shape': (3, 4), } padded with spaces to an aligned data start,
/// then the raw little-endian elements in C order.
/// </summary>
public static class Npy
{
    /// <summary>Headers longer than this are refused (real ones are under 200 bytes).</summary>
    public const int MaxHeaderBytes = 1 << 16;

    /// <summary>A parsed header: dtype (safetensors name), shape, and the bytes before the data.</summary>
    internal readonly record struct Header(string DType, int[] Shape, long Count, int DataStart);

    /// <summary>Reads a whole .npy file as float32.</summary>
    /// <exception cref="InvalidInputException">Malformed or truncated file; the message names it and the problem.</exception>
    public static NpyArray Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: file not found", path);
        using var f = File.OpenRead(path);
        var h = ReadHeader(f, f.Length, path);
        var data = new float[h.Count];
        ReadData(f, h.DType, data, path);
        return new NpyArray(h.Shape, data);
    }

    /// <summary>Writes a float32 array as a version 1.0 .npy file, atomically.</summary>
    public static void Write(string path, int[] shape, ReadOnlySpan<float> data)
    {
        long count = 1;
        foreach (int d in shape) count *= d;
        if (count != data.Length) throw new ArgumentException($"{path}: shape [{string.Join(", ", shape)}] needs {count} elements, got {data.Length}");
        string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}";
        int total = (10 + dict.Length + 1 + 63) / 64 * 64; // magic+version+u16 length, dict, '\n', padded to 64
        var header = new byte[total];
        header[0] = 0x93;
        "NUMPY"u8.CopyTo(header.AsSpan(1));
        header[6] = 1;
        BitConverter.TryWriteBytes(header.AsSpan(8), (ushort)(total - 10));
        Encoding.ASCII.GetBytes(dict).CopyTo(header, 10);
        header.AsSpan(10 + dict.Length, total - 11 - dict.Length).Fill((byte)' ');
        header[^1] = (byte)'\n';
        var bytes = MemoryMarshal.AsBytes(data).ToArray();
        AtomicFile.Write(path, s =>
        {
            s.Write(header);
            s.Write(bytes);
        });
    }

    /// <summary>Parses the header at the stream's position; <paramref name="available"/> is the size of the whole
    /// .npy (file or zip member), checked against the header and the data it announces.</summary>
    internal static Header ReadHeader(Stream s, long available, string where)
    {
        Span<byte> pre = stackalloc byte[12];
        if (available < 10 || s.ReadAtLeast(pre[..10], 10, throwOnEndOfStream: false) < 10)
            throw Bad(where, "truncated: shorter than the 10-byte .npy preamble");
        if (pre[0] != 0x93 || !pre[1..6].SequenceEqual("NUMPY"u8)) throw Bad(where, "not a .npy array (missing the \\x93NUMPY magic)");
        int major = pre[6];
        long length;
        int prefix;
        if (major == 1) { length = BitConverter.ToUInt16(pre[8..10]); prefix = 10; }
        else if (major is 2 or 3)
        {
            if (s.ReadAtLeast(pre[10..12], 2, throwOnEndOfStream: false) < 2) throw Bad(where, "truncated .npy preamble");
            length = BitConverter.ToUInt32(pre[8..12]);
            prefix = 12;
        }
        else throw Bad(where, $"unsupported .npy version {major}.{pre[7]}");
        if (length > MaxHeaderBytes) throw Bad(where, $"header length {length} exceeds the {MaxHeaderBytes}-byte bound");
        if (prefix + length > available) throw Bad(where, $"header length {length} is longer than the {available}-byte array (truncated?)");
        var text = new byte[length];
        s.ReadExactly(text);
        var (descr, fortran, shape) = ParseDict(major == 3 ? Encoding.UTF8.GetString(text) : Encoding.ASCII.GetString(text), where);
        if (fortran) throw Bad(where, "fortran_order arrays are not supported (save with C order)");
        string dtype = DTypeOf(descr) ?? throw Bad(where, $"unsupported dtype descr '{descr}' (little-endian float, int, uint8 and bool are supported)");
        int size = DiskDTypes.SizeOf(dtype);
        int dataStart = (int)(prefix + length);
        long count = InputLimits.Elements(shape, where, "the array");
        if (dataStart + count * size != available)
            throw Bad(where, $"shape ({string.Join(", ", shape)}) of {descr} needs {count * size} data bytes, the array has {available - dataStart} (truncated?)");
        return new Header(dtype, shape, count, dataStart);
    }

    /// <summary>Reads <c>destination.Length</c> elements of <paramref name="dtype"/> from the stream, in 1 MB chunks.</summary>
    internal static unsafe void ReadData(Stream s, string dtype, Span<float> destination, string where)
    {
        int size = DiskDTypes.SizeOf(dtype);
        int perChunk = (1 << 20) / size;
        var chunk = new byte[Math.Min((long)perChunk, destination.Length) * size];
        for (int done = 0; done < destination.Length;)
        {
            int n = Math.Min(perChunk, destination.Length - done);
            try { s.ReadExactly(chunk, 0, n * size); }
            catch (EndOfStreamException) { throw Bad(where, "truncated: the data ends early"); }
            fixed (byte* p = chunk) DiskDTypes.ToFloat(dtype, p, destination.Slice(done, n));
            done += n;
        }
    }

    static string? DTypeOf(string descr)
    {
        if (descr.Length < 3 || descr[0] is not ('<' or '|' or '=')) return null; // '>' is big-endian
        return descr[1..] switch
        {
            "f8" => "F64", "f4" => "F32", "f2" => "F16",
            "i8" => "I64", "i4" => "I32", "i2" => "I16", "i1" => "I8",
            "u1" => "U8", "b1" => "BOOL",
            _ => null,
        };
    }

    /// <summary>Parses the header's dict literal: string values, True/False, and a tuple of integers.</summary>
    static (string Descr, bool Fortran, int[] Shape) ParseDict(string text, string where)
    {
        int i = 0;
        string? descr = null;
        bool? fortran = null;
        int[]? shape = null;
        void Skip() { while (i < text.Length && char.IsWhiteSpace(text[i])) i++; }
        void Expect(char c)
        {
            Skip();
            if (i >= text.Length || text[i] != c) throw Bad(where, $"malformed header dict (expected '{c}' at {i}): {text.Trim()}");
            i++;
        }
        string Str()
        {
            Skip();
            if (i >= text.Length || text[i] is not ('\'' or '"')) throw Bad(where, $"malformed header dict (expected a string at {i}): {text.Trim()}");
            char q = text[i++];
            int end = text.IndexOf(q, i);
            if (end < 0) throw Bad(where, "malformed header dict (unterminated string)");
            var s = text[i..end];
            i = end + 1;
            return s;
        }
        Expect('{');
        while (true)
        {
            Skip();
            if (i < text.Length && text[i] == '}') break;
            string key = Str();
            Expect(':');
            Skip();
            switch (key)
            {
                case "descr": descr = Str(); break;
                case "fortran_order":
                    if (text.AsSpan(i).StartsWith("True")) { fortran = true; i += 4; }
                    else if (text.AsSpan(i).StartsWith("False")) { fortran = false; i += 5; }
                    else throw Bad(where, "malformed header dict (fortran_order is not True or False)");
                    break;
                case "shape":
                    Expect('(');
                    var dims = new List<int>();
                    while (true)
                    {
                        Skip();
                        if (i < text.Length && text[i] == ')') { i++; break; }
                        int start = i;
                        while (i < text.Length && char.IsAsciiDigit(text[i])) i++;
                        if (!int.TryParse(text.AsSpan(start, i - start), out int dim))
                            throw Bad(where, $"malformed header dict (shape entry at {start} is not a non-negative 32-bit integer): {text.Trim()}");
                        dims.Add(dim);
                        Skip();
                        if (i < text.Length && text[i] == ',') i++;
                    }
                    shape = dims.ToArray();
                    break;
                default: throw Bad(where, $"malformed header dict (unknown key '{key}')");
            }
            Skip();
            if (i < text.Length && text[i] == ',') i++;
        }
        if (descr == null || fortran == null || shape == null) throw Bad(where, $"header dict lacks descr, fortran_order or shape: {text.Trim()}");
        return (descr, fortran.Value, shape);
    }

    static InvalidInputException Bad(string where, string problem) => new(where, problem);
}
