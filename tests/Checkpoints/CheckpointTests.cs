using Engine.IO;
using System.IO.Compression;
using System.Runtime.InteropServices;
using Engine.Checkpoints;

namespace Engine.Tests;

/// <summary>safetensors, .npy and .npz reading and writing, and every malformed-file case the readers must refuse
/// with an error naming the file, the tensor and the problem.</summary>
[TestFixture]
public class CheckpointTests
{
    string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Files.TempDir();

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    static byte[] Floats(params float[] v) => MemoryMarshal.AsBytes(v.AsSpan()).ToArray();

    /// <summary>Asserts opening throws InvalidInputException whose message contains every fragment.</summary>
    static void AssertRefused(Func<object> open, params string[] fragments)
    {
        var e = Assert.Throws<InvalidInputException>(() => (open() as IDisposable)?.Dispose())!;
        TestContext.Out.WriteLine(e.Message);
        foreach (var f in fragments) Assert.That(e.Message, Does.Contain(f));
    }

    [Test]
    public void SafeTensorsRoundTripKeepsNamesShapesValuesAndMetadata()
    {
        using var a = Tensor.FromArray(Device.Cpu, [1f, -2.5f, 3e-8f, 4f, 5f, 6f], 2, 3);
        a.Name = "blocks.0.attn.qkv.weight";
        using var b = Tensor.FromArray(Device.Cpu, new[] { 7, -8, 9 }, 3);
        b.Name = "labels";
        string path = Path.Combine(_dir, "m.safetensors");
        SafeTensors.Write(path, [a, b], new Dictionary<string, string> { ["format"] = "pt" });
        using var c = Checkpoint.Open(path);
        Assert.That(c.Format, Is.EqualTo("safetensors"));
        Assert.That(c.Entries.Select(e => e.Name), Is.EqualTo(new[] { "blocks.0.attn.qkv.weight", "labels" }));
        Assert.That(c.Entries[0].Shape, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(c.Entries[0].Read(), Is.EqualTo(a.ToArray()));
        Assert.That(c.Entries[1].DType, Is.EqualTo("I32"));
        Assert.That(c.Entries[1].Read(), Is.EqualTo(new[] { 7f, -8f, 9f }));
        Assert.That(c.Metadata["format"], Is.EqualTo("pt"));
        ulong headerLength = BitConverter.ToUInt64(File.ReadAllBytes(path), 0);
        Assert.That(headerLength % 8, Is.Zero, "data buffer starts 8-byte aligned");
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temporary file left behind");
    }

    [Test]
    public void HalfAndBFloat16AreConvertedToFloat32()
    {
        float[] values = [1.5f, -2f, 3.140625f, 65504f, 0f];
        var f16 = values.Select(v => BitConverter.HalfToUInt16Bits((Half)v)).SelectMany(BitConverter.GetBytes).ToArray();
        var bf16 = values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).SelectMany(BitConverter.GetBytes).ToArray();
        string path = Files.SafeTensors(_dir,
            """{"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},"b":{"dtype":"BF16","shape":[5],"data_offsets":[10,20]}}""",
            f16.Concat(bf16).ToArray());
        using var c = Checkpoint.Open(path);
        Assert.That(c.Find("h")!.Read(), Is.EqualTo(values));
        Assert.That(c.Find("b")!.Read(), Is.EqualTo(new[] { 1.5f, -2f, 3.140625f, 65280f, 0f }), "bf16 keeps 8 mantissa bits (65504 → 65280)");
    }

    [Test]
    public void TruncatedSafeTensorsFilesAreRefused()
    {
        string tiny = Path.Combine(_dir, "tiny.safetensors");
        File.WriteAllBytes(tiny, [1, 2, 3]);
        AssertRefused(() => Checkpoint.Open(tiny), "tiny.safetensors", "truncated");
        // Data cut off: the header promises 12 bytes, the file has 8.
        string cut = Files.SafeTensors(_dir, """{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}""", Floats(1, 2), name: "cut.safetensors");
        AssertRefused(() => Checkpoint.Open(cut), "cut.safetensors", "'w'", "outside");
    }

    [Test]
    public void HeaderLongerThanTheFileOrTheBoundIsRefusedBeforeAllocating()
    {
        string longer = Files.SafeTensors(_dir, "{}", [], declaredLength: 4096, name: "longer.safetensors");
        AssertRefused(() => Checkpoint.Open(longer), "longer.safetensors", "header length 4096", "longer than");
        string huge = Files.SafeTensors(_dir, "{}", [], declaredLength: ulong.MaxValue - 7, name: "huge.safetensors");
        AssertRefused(() => Checkpoint.Open(huge), "huge.safetensors", "exceeds");
    }

    [Test]
    public void OverlappingAndOutOfRangeOffsetsAreRefused()
    {
        string overlap = Files.SafeTensors(_dir,
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""",
            Floats(1, 2, 3), name: "overlap.safetensors");
        AssertRefused(() => Checkpoint.Open(overlap), "overlap.safetensors", "'b'", "overlaps", "'a'");
        string outside = Files.SafeTensors(_dir, """{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", Floats(1, 2), name: "outside.safetensors");
        AssertRefused(() => Checkpoint.Open(outside), "outside.safetensors", "'a'", "outside");
        string negative = Files.SafeTensors(_dir, """{"a":{"dtype":"F32","shape":[0],"data_offsets":[-4,0]}}""", Floats(1), name: "negative.safetensors");
        AssertRefused(() => Checkpoint.Open(negative), "'a'", "outside");
        string size = Files.SafeTensors(_dir, """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", Floats(1, 2), name: "size.safetensors");
        AssertRefused(() => Checkpoint.Open(size), "'a'", "needs 12");
        string huge = Files.SafeTensors(_dir, """{"a":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,8]}}""", Floats(1, 2), name: "hugeshape.safetensors");
        AssertRefused(() => Checkpoint.Open(huge), "'a'", "more than 268435456 elements");
    }

    [Test]
    public void UnknownDTypeAndMalformedHeadersAreRefused()
    {
        string dtype = Files.SafeTensors(_dir, """{"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}""", Floats(1), name: "dtype.safetensors");
        AssertRefused(() => Checkpoint.Open(dtype), "dtype.safetensors", "'w'", "dtype 'F12'");
        string json = Files.SafeTensors(_dir, """{"w":{"dtype":"F32",""", Floats(1), name: "json.safetensors");
        AssertRefused(() => Checkpoint.Open(json), "json.safetensors", "not valid JSON");
        string shape = Files.SafeTensors(_dir, """{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", Floats(1), name: "shape.safetensors");
        AssertRefused(() => Checkpoint.Open(shape), "'w'", "shape entry -1");
        string offsets = Files.SafeTensors(_dir, """{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}""", Floats(1), name: "offsets.safetensors");
        AssertRefused(() => Checkpoint.Open(offsets), "'w'", "data_offsets");
    }

    [Test]
    public void NpyReadsFloatAndIntegerArraysAndRefusesBadOnes()
    {
        string ok = Path.Combine(_dir, "ok.npy");
        File.WriteAllBytes(ok, Files.Npy([2, 2], Floats(1, 2, 3, 4)));
        var a = Npy.Read(ok);
        Assert.That(a.Shape, Is.EqualTo(new[] { 2, 2 }));
        Assert.That(a.Data, Is.EqualTo(new[] { 1f, 2f, 3f, 4f }));
        string ints = Path.Combine(_dir, "ints.npy");
        File.WriteAllBytes(ints, Files.Npy([3], MemoryMarshal.AsBytes(new long[] { -1, 0, 5 }.AsSpan()), "<i8"));
        Assert.That(Npy.Read(ints).Data, Is.EqualTo(new[] { -1f, 0f, 5f }));

        void Refused(string name, byte[] bytes, params string[] fragments)
        {
            string p = Path.Combine(_dir, name);
            File.WriteAllBytes(p, bytes);
            AssertRefused(() => Npy.Read(p), [name, .. fragments]);
        }
        Refused("trunc.npy", Files.Npy([4], Floats(1, 2, 3)), "needs 16");
        Refused("magic.npy", "NOTNUMPY-----------"u8.ToArray(), "magic");
        Refused("bigendian.npy", Files.Npy([1], Floats(1), ">f4"), "'>f4'");
        Refused("fortran.npy", Files.Npy([1], Floats(1), fortran: true), "fortran_order");
        var longHeader = Files.Npy([1], Floats(1));
        BitConverter.GetBytes((ushort)60000).CopyTo(longHeader, 8);
        Refused("header.npy", longHeader, "header length 60000");
        Refused("short.npy", [0x93, (byte)'N'], "truncated");
    }

    [Test]
    public void NpzMembersAreReadStoredOrDeflated()
    {
        foreach (var level in new[] { CompressionLevel.NoCompression, CompressionLevel.Optimal })
        {
            string path = Files.Npz(_dir, [("a/b.npy", Files.Npy([3], Floats(1, 2, 3))), ("c.npy", Files.Npy([1, 2], Floats(4, 5)))], $"{level}.npz", level);
            using var c = Checkpoint.Open(path);
            Assert.That(c.Format, Is.EqualTo("npz"));
            Assert.That(c.Find("a/b")!.Read(), Is.EqualTo(new[] { 1f, 2f, 3f }));
            Assert.That(c.Find("c")!.Shape, Is.EqualTo(new[] { 1, 2 }));
            Assert.That(c.Find("c")!.Read(), Is.EqualTo(new[] { 4f, 5f }));
        }
    }

    [Test]
    public void BadNpzFilesAreRefused()
    {
        string notNpy = Files.Npz(_dir, [("w.npy", "hello world, not an array"u8.ToArray())], "notnpy.npz");
        AssertRefused(() => Checkpoint.Open(notNpy), "notnpy.npz", "'w.npy'", "magic");
        string notNpyName = Files.Npz(_dir, [("w.txt", Files.Npy([1], Floats(1)))], "name.npz");
        AssertRefused(() => Checkpoint.Open(notNpyName), "name.npz", "'w.txt'", "not a .npy member");
        string shortData = Files.Npz(_dir, [("w.npy", Files.Npy([8], Floats(1, 2)))], "short.npz");
        AssertRefused(() => Checkpoint.Open(shortData), "short.npz", "'w.npy'", "needs 32");
        // A zip cut in half has no central directory.
        string whole = Files.Npz(_dir, [("w.npy", Files.Npy([64], new float[64]))], "whole.npz");
        var bytes = File.ReadAllBytes(whole);
        string cut = Path.Combine(_dir, "cut.npz");
        File.WriteAllBytes(cut, bytes[..(bytes.Length / 2)]);
        AssertRefused(() => Checkpoint.Open(cut), "cut.npz", "not a valid zip");
    }

    [Test]
    public void MissingFileIsAClearError()
    {
        var e = Assert.Throws<FileNotFoundException>(() => Checkpoint.Open(Path.Combine(_dir, "nope.safetensors")))!;
        Assert.That(e.Message, Does.Contain("nope.safetensors"));
    }
}
