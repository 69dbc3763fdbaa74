using System.IO.Compression;
using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>
/// PyTorch's .pth (torch.save since 1.6): a zip whose single top-level folder holds <c>data.pkl</c> (a pickle of the
/// object) and <c>data/&lt;key&gt;</c> (each storage's raw little-endian bytes). The pickle is read by
/// <see cref="Pickle"/>, which never runs code and refuses any global outside a state dict's allow-list. The state dict
/// is the object itself, or its <c>model</c> / <c>state_dict</c> entry (original Swin and ConvNeXt checkpoints);
/// other entries (epoch, optimizer, args) are parsed and ignored. Tensors may share a storage: each view's offset and
/// strides are honoured and checked against the storage's size. Keys are the file's own (no renaming here).
/// </summary>
public static class Pth
{
    /// <summary>Largest data.pkl accepted (a state dict's pickle is kilobytes to a few megabytes).</summary>
    public const int MaxPickleBytes = 256 << 20;

    /// <summary>True when <paramref name="zip"/> is laid out as a .pth (a <c>&lt;root&gt;/data.pkl</c> member).</summary>
    internal static bool IsPth(ZipArchive zip) => PickleMembers(zip).Any();

    /// <summary>The <c>&lt;root&gt;/data.pkl</c> members (torch.save writes exactly one).</summary>
    static IEnumerable<ZipArchiveEntry> PickleMembers(ZipArchive zip) =>
        zip.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) && e.FullName.Count(c => c == '/') == 1);

    /// <summary>Opens <paramref name="path"/>.</summary>
    /// <exception cref="InvalidInputException">Not a torch zip file, a malformed or refused pickle, or a tensor whose data is
    /// missing or out of range; the message names the file and the tensor.</exception>
    public static Checkpoint Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: checkpoint file not found", path);
        var head = new byte[4];
        using (var f = File.OpenRead(path)) f.ReadAtLeast(head, 4, throwOnEndOfStream: false);
        if (head[0] != (byte)'P' || head[1] != (byte)'K')
            throw new InvalidInputException(path, $"not a zip archive; a .pth from torch.save before PyTorch 1.6 (the legacy format) is not supported; " +
                                           "re-save it with a current PyTorch (torch.save(torch.load(f), f))");
        return Read(Zip.Open(path), path);
    }

    /// <summary>The checkpoint of an opened torch.save archive; takes ownership of <paramref name="zip"/>.</summary>
    internal static Checkpoint Read(ZipArchive zip, string path)
    {
        try
        {
            var pickleEntry = PickleMembers(zip).ToList();
            if (pickleEntry.Count != 1) throw new InvalidInputException(path, $"expected one '<root>/data.pkl' member, found {pickleEntry.Count}");
            string root = pickleEntry[0].FullName[..^"data.pkl".Length];
            if (pickleEntry[0].Length > MaxPickleBytes) throw new InvalidInputException(path, $"data.pkl is {pickleEntry[0].Length} bytes, over the {MaxPickleBytes}-byte limit");
            var bytes = new byte[pickleEntry[0].Length];
            try
            {
                using var s = pickleEntry[0].Open();
                s.ReadExactly(bytes);
            }
            catch (Exception e) when (e is not InvalidInputException && e is IOException or InvalidDataException)
            {
                throw new InvalidInputException(path, $"data.pkl is unreadable (truncated?): {e.Message}");
            }
            var obj = Pickle.Load(bytes, $"{path}: data.pkl");
            var state = StateDict(obj, path);
            var entries = new List<CheckpointEntry>();
            foreach (var (keyObject, value) in state.Items)
            {
                if (keyObject is not string name) throw new InvalidInputException(path, $"a state-dict key is not a string ({keyObject})");
                if (value is not Pickle.Tensor tensor) continue; // non-tensor entries (e.g. a version number) carry no weights
                entries.Add(Entry(zip, root, name, tensor, path));
            }
            return new Checkpoint(path, "pth", entries, null, zip);
        }
        catch
        {
            zip.Dispose();
            throw;
        }
    }

    /// <summary>The dict of tensors: the object itself, or its 'model' or 'state_dict' entry.</summary>
    static Pickle.Dict StateDict(object obj, string path)
    {
        if (obj is not Pickle.Dict dict) throw new InvalidInputException(path, $"the pickled object is a {obj.GetType().Name}, not a dict");
        foreach (var key in new[] { "model", "state_dict" })
            if (dict.Get(key) is Pickle.Dict inner && inner.Items.Any(kv => kv.Value is Pickle.Tensor)) return inner;
        if (dict.Items.Any(kv => kv.Value is Pickle.Tensor)) return dict;
        throw new InvalidInputException(path, $"no tensors found (neither a state dict nor a dict with a 'model' or 'state_dict' entry)");
    }

    static CheckpointEntry Entry(ZipArchive zip, string root, string name, Pickle.Tensor t, string path)
    {
        string where = $"tensor '{name}'";
        int size = DiskDTypes.SizeOf(t.Storage.DType);
        var member = zip.GetEntry($"{root}data/{t.Storage.Key}")
            ?? throw new InvalidInputException(path, $"{where}: its storage '{root}data/{t.Storage.Key}' is missing from the archive");
        if (t.Storage.Count > long.MaxValue / size || member.Length != t.Storage.Count * size)
            throw new InvalidInputException(path, $"{where}: storage '{t.Storage.Key}' holds {member.Length} bytes, expected {t.Storage.Count} × {size}");
        long count = InputLimits.Elements(t.Shape, path, where);
        // The view's extent [offset, last] in the storage, in 128-bit arithmetic so no stride can wrap it.
        Int128 last = t.Offset;
        for (int d = 0; d < t.Shape.Length; d++) if (t.Shape[d] > 0) last += (Int128)(t.Shape[d] - 1) * t.Stride[d];
        if (count == 0 ? t.Offset > t.Storage.Count : last >= t.Storage.Count)
            throw new InvalidInputException(path, $"{where}: the view (offset {t.Offset}, shape [{string.Join(", ", t.Shape)}], stride [{string.Join(", ", t.Stride)}]) runs past its storage of {t.Storage.Count} elements");
        long extent = count == 0 ? 0 : (long)(last - t.Offset) + 1;
        if (extent > InputLimits.MaxTensorElements)
            throw new InvalidInputException(path, $"{where}: the view spans {extent} storage elements, more than {InputLimits.MaxTensorElements}");
        return new CheckpointEntry(name, t.Shape, t.Storage.DType, dst => Read(member, t, size, extent, dst, $"{path}: {where}"));
    }

    /// <summary>True when the view's strides are those of a contiguous row-major tensor (size-1 dimensions aside).</summary>
    static bool IsRowMajor(Pickle.Tensor t)
    {
        long expected = 1;
        for (int d = t.Shape.Length - 1; d >= 0; d--)
        {
            if (t.Shape[d] != 1 && t.Stride[d] != expected) return false;
            expected *= t.Shape[d];
        }
        return true;
    }

    /// <summary>Converts the view's elements (row-major) to float32 into <paramref name="destination"/>, decompressing
    /// only the storage bytes of its extent: directly for a contiguous view, otherwise by gathering through the strides.</summary>
    static unsafe void Read(ZipArchiveEntry member, Pickle.Tensor t, int size, long extent, Span<float> destination, string where)
    {
        if (destination.Length == 0) return;
        var raw = new byte[extent * size];
        Zip.ReadRange(member, t.Offset * size, raw, $"{where}: storage");
        if (IsRowMajor(t))
        {
            // The usual case (a tensor owning its storage, or a contiguous slice of one).
            fixed (byte* p = raw) DiskDTypes.ToFloat(t.Storage.DType, p, destination);
            return;
        }
        var all = new float[extent];
        fixed (byte* p = raw) DiskDTypes.ToFloat(t.Storage.DType, p, all);
        int rank = t.Shape.Length;
        var index = new int[rank];
        for (long i = 0; i < destination.Length; i++)
        {
            long at = 0;
            for (int d = 0; d < rank; d++) at += index[d] * t.Stride[d];
            destination[(int)i] = all[at];
            for (int d = rank - 1; d >= 0 && ++index[d] == t.Shape[d]; d--) index[d] = 0;
        }
    }
}
