using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;

namespace Engine.Tests;

/// <summary>Byte-level writers for checkpoint test files, independent of the engine's writers, so malformed
/// variants can be produced on purpose.</summary>
public static class Files
{
    /// <summary>A fresh temporary folder for one test.</summary>
    public static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "engine-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>A safetensors file with the given header text (length prefix = its byte count unless overridden) and data.</summary>
    public static string SafeTensors(string dir, string headerJson, byte[] data, ulong? declaredLength = null, string name = "t.safetensors")
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        string path = Path.Combine(dir, name);
        using var f = File.Create(path);
        f.Write(BitConverter.GetBytes(declaredLength ?? (ulong)header.Length));
        f.Write(header);
        f.Write(data);
        return path;
    }

    /// <summary>The bytes of a .npy v1.0 array.</summary>
    public static byte[] Npy(int[] shape, ReadOnlySpan<byte> data, string descr = "<f4", bool fortran = false)
    {
        string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '{descr}', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': ({dims}), }}";
        dict = dict.PadRight((10 + dict.Length + 1 + 15) / 16 * 16 - 10 - 1) + "\n";
        var bytes = new List<byte> { 0x93 };
        bytes.AddRange("NUMPY"u8.ToArray());
        bytes.AddRange([1, 0]);
        bytes.AddRange(BitConverter.GetBytes((ushort)dict.Length));
        bytes.AddRange(Encoding.ASCII.GetBytes(dict));
        bytes.AddRange(data.ToArray());
        return bytes.ToArray();
    }

    /// <summary>The bytes of a float32 .npy array.</summary>
    public static byte[] Npy(int[] shape, float[] values) => Npy(shape, MemoryMarshal.AsBytes(values.AsSpan()));

    /// <summary>An .npz (zip) with the given members (name → bytes).</summary>
    public static string Npz(string dir, IEnumerable<(string Name, byte[] Bytes)> members, string name = "t.npz",
        CompressionLevel level = CompressionLevel.NoCompression)
    {
        string path = Path.Combine(dir, name);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var (member, bytes) in members)
        {
            using var s = zip.CreateEntry(member, level).Open();
            s.Write(bytes);
        }
        return path;
    }
}
