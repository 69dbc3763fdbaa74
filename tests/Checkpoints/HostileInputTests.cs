using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using Engine.Checkpoints;
using Engine.Data;
using Engine.Imaging;
using Engine.IO;
using Engine.Models;

namespace Engine.Tests;

/// <summary>The cases an outside fuzzing campaign found, each rebuilt from a minimal input: every one is refused as
/// <see cref="InvalidInputException"/> naming the file (or accepted where it is valid), quickly and without sizing
/// anything by a hostile number.</summary>
[TestFixture]
public class HostileInputTests
{
    string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Files.TempDir();

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    static InvalidInputException Refused(Action open, string path, params string[] fragments)
    {
        var e = Assert.Throws<InvalidInputException>(() => open())!;
        Assert.That(e.Message, Does.StartWith(path), e.Message);
        foreach (var f in fragments) Assert.That(e.Message, Does.Contain(f), e.Message);
        return e;
    }

    // ---------------------------------------------------------------- .pth

    /// <summary>A torch.save-layout zip: data.pkl (protocol 2) of a dict name → _rebuild_tensor_v2(storage, offset,
    /// shape, stride), and the storages' bytes.</summary>
    static string Pth(string dir, (string Name, string Key, long Numel, long Offset, long[] Shape, long[] Stride)[] tensors,
        Dictionary<string, byte[]> storages, CompressionLevel level = CompressionLevel.NoCompression)
    {
        var p = new MemoryStream();
        void Op(params byte[] b) => p.Write(b);
        void Str(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            Op((byte)'X');
            p.Write(BitConverter.GetBytes(bytes.Length));
            p.Write(bytes);
        }
        void Long(long v)
        {
            Op(0x8a, 8);
            p.Write(BitConverter.GetBytes(v));
        }
        void Tuple(long[] values)
        {
            Op((byte)'(');
            foreach (var v in values) Long(v);
            Op((byte)'t');
        }
        Op(0x80, 2, (byte)'}');
        foreach (var t in tensors)
        {
            Str(t.Name);
            Op((byte)'c');
            p.Write("torch._utils\n_rebuild_tensor_v2\n"u8);
            Op((byte)'(');
            Op((byte)'(');
            Str("storage");
            Op((byte)'c');
            p.Write("torch\nFloatStorage\n"u8);
            Str(t.Key);
            Str("cpu");
            Long(t.Numel);
            Op((byte)'t', (byte)'Q');
            Long(t.Offset);
            Tuple(t.Shape);
            Tuple(t.Stride);
            Op(0x89); // requires_grad False
            Op((byte)'c');
            p.Write("collections\nOrderedDict\n"u8);
            Op((byte)')', (byte)'R', (byte)'t', (byte)'R', (byte)'s');
        }
        Op((byte)'.');
        string path = Path.Combine(dir, $"t{Guid.NewGuid():N}.pth");
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using (var s = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open()) s.Write(p.ToArray());
        foreach (var (key, bytes) in storages)
            using (var s = zip.CreateEntry($"archive/data/{key}", level).Open()) s.Write(bytes);
        return path;
    }

    [Test]
    public void APthViewOfAbsurdSizeOrStrideIsRefused()
    {
        var one = new Dictionary<string, byte[]> { ["0"] = new byte[4] };
        string huge = Pth(_dir, [("w", "0", 1, 0, [int.MaxValue, int.MaxValue, int.MaxValue], [0, 0, 0])], one);
        Refused(() => Checkpoint.Open(huge).Dispose(), huge, "tensor 'w'", "more than 268435456 elements");
        string square = Pth(_dir, [("w", "0", 1, 0, [65536, 65536], [0, 0])], one);
        Refused(() => Checkpoint.Open(square).Dispose(), square, "more than 268435456 elements");
        var four = new Dictionary<string, byte[]> { ["0"] = new byte[16] };
        string wrap = Pth(_dir, [("w", "0", 4, 0, [2, 2], [1L << 62, 1L << 62])], four);
        Refused(() => Checkpoint.Open(wrap).Dispose(), wrap, "runs past its storage");
    }

    [Test]
    public void ASmallPthTensorInAHugeStorageReadsOnlyItsOwnBytes()
    {
        var storage = new byte[64 << 20]; // 64 MiB of zeros, deflated to almost nothing
        BitConverter.GetBytes(1.5f).CopyTo(storage, 8);
        BitConverter.GetBytes(-2f).CopyTo(storage, 12);
        string path = Pth(_dir, [("w", "0", storage.Length / 4, 2, [2], [1])], new() { ["0"] = storage }, CompressionLevel.Optimal);
        using var checkpoint = Checkpoint.Open(path);
        Assert.That(checkpoint.Find("w")!.Read(), Is.EqualTo(new[] { 1.5f, -2f }));
    }

    // ---------------------------------------------------------------- zip, npz

    [Test]
    public void AZipMemberDeclaringFarMoreThanItsBytesCanHoldIsRefused()
    {
        string path = Files.Npz(_dir, [("a.npy", Files.Npy([2], [1f, 2f]))]);
        var bytes = File.ReadAllBytes(path);
        // Patch the declared uncompressed size (local header offset 22, central directory offset 24) to 3 GB.
        for (int i = 0; i + 4 <= bytes.Length; i++)
        {
            uint sig = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(i));
            if (sig == 0x04034b50) BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(i + 22), 3_000_000_000);
            if (sig == 0x02014b50) BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(i + 24), 3_000_000_000);
        }
        File.WriteAllBytes(path, bytes);
        Refused(() => Checkpoint.Open(path).Dispose(), path, "member 'a.npy'", "decompression bomb");
    }

    [Test]
    public void AnNpyHeaderDeclaringAHugeArrayIsRefusedBeforeAnythingIsSized()
    {
        string path = Files.Npz(_dir, [("a.npy", Files.Npy([1 << 29], new byte[16]))]);
        Refused(() => Checkpoint.Open(path).Dispose(), path, "more than 268435456 elements");
    }

    [Test]
    public void ADamagedZipDirectoryIsNamed()
    {
        string path = Files.Npz(_dir, [("a.npy", Files.Npy([2], [1f, 2f])), ("b.npy", Files.Npy([1], [3f]))]);
        var bytes = File.ReadAllBytes(path);
        int central = bytes.AsSpan().IndexOf("PK\u0001\u0002"u8);
        bytes[central + 28] = 0xff; // file name length of the first central entry: now runs past the directory
        bytes[central + 29] = 0xff;
        File.WriteAllBytes(path, bytes);
        Refused(() => Checkpoint.Open(path).Dispose(), path);
    }

    // ---------------------------------------------------------------- safetensors

    [TestCase("""{"a":{"dtype":"F32","shape":["x"],"data_offsets":[0,4]}}""", "shape entry \"x\" is not a non-negative 32-bit integer")]
    [TestCase("""{"a":{"dtype":"F32","shape":[1],"data_offsets":["0",4]}}""", "data_offsets must be [begin, end], two integers")]
    [TestCase("""{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}""", "more than 8")]
    [TestCase("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}""", "two integers")]
    public void MalformedSafetensorsFieldsAreRefusedNamingTheTensor(string header, string message)
    {
        string path = Files.SafeTensors(_dir, header, new byte[4]);
        Refused(() => Checkpoint.Open(path).Dispose(), path, "tensor 'a'", message);
    }

    [Test]
    public void InvalidUtf8InASafetensorsHeaderIsRefused()
    {
        foreach (var (i, text) in new[] { (0, "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"),
                                           (1, "{\"__metadata__\":{\"k\":\"v\xff\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"),
                                           (2, "{\"a\":{\"dtype\":\"F3\xff\",\"shape\":[1],\"data_offsets\":[0,4]}}") })
        {
            var header = Encoding.Latin1.GetBytes(text); // \xff as a lone byte: invalid UTF-8
            string path = Path.Combine(_dir, $"utf{i}.safetensors");
            File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)header.Length), .. header, .. new byte[4]]);
            Refused(() => Checkpoint.Open(path).Dispose(), path);
        }
    }

    /// <summary>Found by AFL++: a header naming a tensor twice was refused after the file was mapped, and the mapping
    /// (and its descriptor) stayed open, so a few thousand such files exhausted the process's descriptors.</summary>
    [Test]
    public void ARefusedSafetensorsFileReleasesItsMapping()
    {
        string path = Files.SafeTensors(_dir, """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", new byte[8]);
        int before = Directory.GetFiles("/proc/self/fd").Length;
        for (int i = 0; i < 300; i++) Refused(() => Checkpoint.Open(path).Dispose(), path, "appears twice");
        Assert.That(Directory.GetFiles("/proc/self/fd").Length - before, Is.LessThan(20), "no descriptor left open per refused file");
    }

    [Test]
    public void ASafetensorsHeaderWithTooManyTensorsIsRefused()
    {
        var json = new StringBuilder("{");
        for (int i = 0; i <= InputLimits.MaxTensors; i++) json.Append(i == 0 ? "" : ",").Append($"\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}");
        string path = Files.SafeTensors(_dir, json.Append('}').ToString(), []);
        Refused(() => Checkpoint.Open(path).Dispose(), path, $"more than {InputLimits.MaxTensors} tensors");
    }

    // ---------------------------------------------------------------- images

    static byte[] PngHeader(int width, int height, int depth, int colorType)
    {
        var png = new MemoryStream();
        png.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        (ihdr[8], ihdr[9]) = ((byte)depth, (byte)colorType);
        var chunk = new byte[8 + 13 + 4];
        BinaryPrimitives.WriteUInt32BigEndian(chunk, 13);
        "IHDR"u8.CopyTo(chunk.AsSpan(4));
        ihdr.CopyTo(chunk, 8);
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(21), Png.Crc32(chunk.AsSpan(4, 17)));
        png.Write(chunk);
        png.Write([0, 0, 0, 0, (byte)'I', (byte)'E', (byte)'N', (byte)'D', 0xAE, 0x42, 0x60, 0x82]);
        return png.ToArray();
    }

    [TestCase(1 << 28, 1, 8, 0)]
    [TestCase(1 << 25, 8, 16, 6)]
    [TestCase(16384, 16384, 16, 6)]
    public void APngDeclaringAHugeImageIsRefusedBeforeDecoding(int width, int height, int depth, int colorType)
    {
        string path = Path.Combine(_dir, "huge.png");
        File.WriteAllBytes(path, PngHeader(width, height, depth, colorType));
        Refused(() => ImageFile.Read(path), path, "larger than");
    }

    [Test]
    public void ImageFilesThatAreNotRegularFilesAreRefusedWithoutBlocking()
    {
        string fifo = Path.Combine(_dir, "fifo.png");
        using (var mk = System.Diagnostics.Process.Start("mkfifo", fifo)) mk.WaitForExit();
        if (File.Exists(fifo)) Refused(() => ImageFile.Read(fifo), fifo, "not a regular file");
        Refused(() => ImageFile.Read("/dev/zero"), "/dev/zero", "not a regular file");
        string empty = Path.Combine(_dir, "empty.png");
        File.WriteAllBytes(empty, []);
        Refused(() => ImageFile.Read(empty), empty, "empty");
    }

    // ---------------------------------------------------------------- data folders, caches

    /// <summary>A task folder with two PNG images and a list file naming them.</summary>
    string TaskFolder(string name = "task")
    {
        string folder = Path.Combine(_dir, name);
        Directory.CreateDirectory(Path.Combine(folder, "images"));
        var png = PngTests.EncodeRgb(2, 2, new byte[12]);
        File.WriteAllBytes(Path.Combine(folder, "images", "0.png"), png);
        File.WriteAllBytes(Path.Combine(folder, "images", "1.png"), png);
        File.WriteAllLines(Path.Combine(folder, "train.txt"), ["images/0.png 0", "images/1.png 1"]);
        return folder;
    }

    [Test]
    public void ASplitNameThatIsAPathIsRefused()
    {
        string folder = TaskFolder();
        File.WriteAllText(Path.Combine(_dir, "outside.txt"), "task/images/0.png 0\n");
        Refused(() => ImageList.Read(folder, "../outside", 2), folder, "not a plain name");
    }

    [Test]
    public void ANulInAListPathIsRefusedNamingTheLine()
    {
        string folder = TaskFolder();
        File.WriteAllText(Path.Combine(folder, "train.txt"), "images/0.png 0\nimages/\u00001.png 1\n");
        Refused(() => ImageList.Read(folder, "train", 2), Path.Combine(folder, "train.txt") + ":2", "NUL");
    }

    [Test]
    public void LinksInsideATaskFolderAreFollowedOnlyWhileTheyStayInside()
    {
        string folder = TaskFolder();
        string outside = Path.Combine(_dir, "outside.png");
        File.Copy(Path.Combine(folder, "images", "0.png"), outside);
        // A link to an image inside the folder is fine; one to an image outside, or a folder link to /, is not.
        File.CreateSymbolicLink(Path.Combine(folder, "images", "inside.png"), Path.Combine(folder, "images", "1.png"));
        File.CreateSymbolicLink(Path.Combine(folder, "images", "outside.png"), outside);
        Directory.CreateSymbolicLink(Path.Combine(folder, "root"), "/");
        File.WriteAllLines(Path.Combine(folder, "ok.txt"), ["images/inside.png 0"]);
        Assert.That(ImageList.Read(folder, "ok", 2).Count, Is.EqualTo(1));
        string list = Path.Combine(folder, "out.txt");
        File.WriteAllLines(list, ["images/0.png 0", "images/outside.png 1"]);
        Refused(() => ImageList.Read(folder, "out", 2), list + ":2", "symbolic link that leaves the task folder");
        File.WriteAllLines(list, ["root/etc/hostname 0"]);
        if (File.Exists("/etc/hostname")) Refused(() => ImageList.Read(folder, "out", 2), list + ":1", "symbolic link that leaves the task folder");
        // The task folder itself may be a link (a data root often is).
        string linked = Path.Combine(_dir, "linked-task");
        Directory.CreateSymbolicLink(linked, folder);
        Assert.That(ImageList.Read(linked, "train", 2).Count, Is.EqualTo(2));
    }

    [Test]
    public void AnEditedOrEmptyImageCacheIsRefused()
    {
        string folder = TaskFolder();
        var list = ImageList.Read(folder, "train", 2);
        string cacheDir = Path.Combine(_dir, "cache");
        string path;
        using (var cache = ImageCache.Open(list, 4, cacheDir)) path = cache.CachePath;
        var bytes = File.ReadAllBytes(path);
        BitConverter.GetBytes(-7).CopyTo(bytes, 8 + 16); // the first label
        File.WriteAllBytes(path, bytes);
        Refused(() => ImageCache.Open(list, 4, cacheDir).Dispose(), path, "labels");
        File.WriteAllBytes(path, []);
        Refused(() => ImageCache.Open(list, 4, cacheDir).Dispose(), path, "empty");
    }

    // ---------------------------------------------------------------- configs

    [TestCase("""{ "img_size": 32, "patch_size": 4, "window_size": 2, "embed_dim": 8, "depths": null, "num_heads": [1] }""", "depths and num_heads must be lists")]
    [TestCase("""{ "img_size": 32, "patch_size": 4, "window_size": 2, "embed_dim": 8, "depths": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], "num_heads": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1] }""", "stages")]
    [TestCase("""{ "img_size": 32, "depths": [1], "dims": null }""", "depths and dims must be lists")]
    [TestCase("""{ "img_size": 64, "depths": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], "dims": [8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8] }""", "stages")]
    [TestCase("""{ "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 100000, "num_heads": 2 }""", "depth 100000")]
    [TestCase("""{ "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 1e30 }""", "mlp_ratio")]
    [TestCase("""{ "img_size": 16, "patch_size": 4, "embed_dim": 16384, "depth": 1000, "num_heads": 2 }""", "parameters")]
    public void AnAbsurdModelConfigIsRefusedNamingTheField(string json, string message)
    {
        string path = Path.Combine(_dir, "config.json");
        File.WriteAllText(path, json);
        Refused(() => ImageModels.Create(Device.Cpu, path, 2).Dispose(), path, message);
    }
}
