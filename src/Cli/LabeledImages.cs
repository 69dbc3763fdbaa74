using Engine.Data;
using Engine.Imaging;
using Engine.IO;

namespace Engine.Cli;

/// <summary>
/// Labelled images on disk: a folder of class subfolders (labels are the subfolder names in ordinal order), or a
/// VTAB-1k task folder (its <c>train800val200.txt</c>: lines <c>images/&lt;split&gt;/NNNNNN.jpg &lt;label&gt;</c>, paths
/// relative to the folder and never outside it). PNG and JPEG images are decoded.
/// </summary>
public sealed class LabeledImages
{
    LabeledImages(string source, List<(string File, int Label)> items)
    {
        Source = source;
        Items = items;
    }

    /// <summary>Where the images came from (for messages).</summary>
    public string Source { get; }

    /// <summary>Every image file with its label.</summary>
    public IReadOnlyList<(string File, int Label)> Items { get; }

    /// <summary>Number of classes (largest label + 1).</summary>
    public int Classes => Items.Max(i => i.Label) + 1;

    /// <summary>Reads the folder's list. Errors name the file and line.</summary>
    public static LabeledImages Open(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"--data {folder}: no such folder");
        string root = Path.GetFullPath(folder);
        var items = new List<(string, int)>();
        if (File.Exists(Path.Combine(root, "train800val200.txt")))
        {
            var list = ImageList.Read(root, "train800val200");
            return new LabeledImages(list.ListFile, [.. list.Files.Zip(list.Labels)]);
        }
        var classes = Directory.GetDirectories(root).Order(StringComparer.Ordinal).ToArray();
        if (classes.Length == 0) throw new InvalidInputException($"--data {folder}", $"neither a VTAB task folder (no train800val200.txt) nor a folder of class subfolders");
        for (int c = 0; c < classes.Length; c++)
            foreach (var file in Directory.GetFiles(classes[c]).Where(IsImage).Order(StringComparer.Ordinal))
                items.Add((file, c));
        if (items.Count == 0) throw new InvalidInputException($"--data {folder}", $"the class subfolders hold no .png/.jpg images");
        return new LabeledImages(root, items);
    }

    /// <summary>True for a .png, .jpg or .jpeg file name.</summary>
    public static bool IsImage(string f) => f.EndsWith(".png", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".jpg", StringComparison.OrdinalIgnoreCase)
                                    || f.EndsWith(".jpeg", StringComparison.OrdinalIgnoreCase);

    /// <summary>Decodes a PNG or JPEG image file.</summary>
    /// <exception cref="InvalidInputException">The file is not a decodable image (the message names it).</exception>
    public static RgbImage Read(string file) => ImageFile.Read(file);
}
