using System.IO.Compression;
using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>
/// NumPy's .npz: a zip of .npy members, one per array, named "&lt;key&gt;.npy" (stored by np.savez, deflated by
/// savez_compressed). Every member's header is validated when the file is opened; data is read on demand.
/// </summary>
public static class Npz
{
    /// <summary>Opens <paramref name="path"/>; keys are the member names without ".npy".</summary>
    /// <exception cref="InvalidInputException">Not a zip, or a member is not a valid .npy (the message names it).</exception>
    public static Checkpoint Open(string path) => Read(Zip.Open(path), path);

    /// <summary>The checkpoint of an opened .npz archive; takes ownership of <paramref name="zip"/>.</summary>
    internal static Checkpoint Read(ZipArchive zip, string path)
    {
        try
        {
            var entries = new List<CheckpointEntry>();
            foreach (var member in zip.Entries)
            {
                if (member.FullName.EndsWith('/')) continue;
                string where = $"{path}: member '{member.FullName}'";
                if (!member.FullName.EndsWith(".npy", StringComparison.Ordinal)) throw new InvalidInputException(where, $"not a .npy member");
                string key = member.FullName[..^4];
                Npy.Header h;
                try
                {
                    using var s = member.Open();
                    h = Npy.ReadHeader(s, member.Length, where);
                }
                catch (Exception e) when (e is not InvalidInputException && e is IOException or InvalidDataException)
                {
                    throw new InvalidInputException(where, $"unreadable: {e.Message}");
                }
                entries.Add(new CheckpointEntry(key, h.Shape, h.DType, dst => ReadMember(member, h, dst, where)));
            }
            return new Checkpoint(path, "npz", entries, null, zip);
        }
        catch
        {
            zip.Dispose();
            throw;
        }
    }

    static void ReadMember(ZipArchiveEntry member, Npy.Header h, Span<float> destination, string where)
    {
        try
        {
            using var s = member.Open();
            s.ReadExactly(new byte[h.DataStart]); // deflated members cannot seek; skip the header by reading it
            Npy.ReadData(s, h.DType, destination, where);
        }
        catch (Exception e) when (e is not InvalidInputException && e is IOException or InvalidDataException)
        {
            throw new InvalidInputException(where, $"unreadable (truncated?): {e.Message}");
        }
    }
}
