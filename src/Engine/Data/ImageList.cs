using Engine.IO;

namespace Engine.Data;

/// <summary>
/// One split of a VTAB-style task folder: the list file <c>&lt;split&gt;.txt</c>, lines
/// <c>images/&lt;split&gt;/NNNNNN.jpg &lt;label&gt;</c> with paths relative to the task folder. Every problem is an
/// error naming the list file and line: a malformed line, a path that leaves the folder, a missing image, a label
/// outside [0, classes), an empty split. The data policy (docs/limits.md): a split is a plain name; every image is a
/// regular file inside the task folder; a symbolic link inside the task folder is followed only when its final target
/// stays inside the task folder (the task folder itself may be a link, as a data root often is).
/// </summary>
public sealed class ImageList
{
    ImageList(string listFile, string[] files, int[] labels, int[] lines)
    {
        ListFile = listFile;
        Files = files;
        Labels = labels;
        Lines = lines;
    }

    /// <summary>The list file's full path.</summary>
    public string ListFile { get; }

    /// <summary>Each image's full path, in list order.</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>Each image's label.</summary>
    public IReadOnlyList<int> Labels { get; }

    /// <summary>Each image's line number in the list file (for messages).</summary>
    public IReadOnlyList<int> Lines { get; }

    /// <summary>Number of images.</summary>
    public int Count => Files.Count;

    /// <summary>"list:line" of image <paramref name="index"/>, the prefix of every message about it.</summary>
    public string Where(int index) => $"{ListFile}:{Lines[index]}";

    /// <summary>Reads <c>&lt;taskFolder&gt;/&lt;split&gt;.txt</c>. With <paramref name="classes"/> null any label ≥ 0 is accepted.</summary>
    /// <exception cref="FileNotFoundException">The list file does not exist.</exception>
    /// <exception cref="InvalidInputException">A line is malformed, names a missing image, leaves the folder or has a label
    /// out of range; or the split is empty.</exception>
    public static ImageList Read(string taskFolder, string split, int? classes = null)
    {
        string root = Path.GetFullPath(taskFolder);
        if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"{taskFolder}: no such task folder");
        if (split.Length == 0 || split is "." or ".." || split.IndexOfAny(['/', '\\', '\0']) >= 0)
            throw new InvalidInputException(root, $"split '{split}' is not a plain name (a split names the list file <split>.txt inside the task folder)");
        string realRoot = RealPath(root);
        string list = Path.Combine(root, split + ".txt");
        if (!File.Exists(list)) throw new FileNotFoundException($"{list}: the '{split}' split's list file does not exist", list);
        var files = new List<string>();
        var labels = new List<int>();
        var lines = new List<int>();
        int lineNumber = 0;
        foreach (var raw in File.ReadLines(list))
        {
            lineNumber++;
            string line = raw.Trim();
            if (line.Length == 0) continue;
            int space = line.LastIndexOf(' ');
            if (space <= 0 || !int.TryParse(line.AsSpan(space + 1), out int label))
                throw new InvalidInputException($"{list}:{lineNumber}", $"expected '<image path> <integer label>', got '{raw}'");
            string relative = line[..space].Trim();
            if (relative.Contains('\0')) throw new InvalidInputException($"{list}:{lineNumber}", "the image path holds a NUL character");
            if (label < 0) throw new InvalidInputException($"{list}:{lineNumber}", $"label {label} is negative");
            if (label >= classes) throw new InvalidInputException($"{list}:{lineNumber}", $"label {label} is outside [0, {classes}) for this task");
            string file = Path.GetFullPath(Path.Combine(root, relative));
            if (Path.IsPathRooted(relative) || !file.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw new InvalidInputException($"{list}:{lineNumber}", $"'{relative}' points outside the task folder {root}");
            if (!File.Exists(file)) throw new InvalidInputException($"{list}:{lineNumber}", $"image '{relative}' does not exist");
            if (!RealPath(file).StartsWith(realRoot + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw new InvalidInputException($"{list}:{lineNumber}", $"'{relative}' is reached through a symbolic link that leaves the task folder {root}");
            files.Add(file);
            labels.Add(label);
            lines.Add(lineNumber);
        }
        if (files.Count == 0) throw new InvalidInputException(list, $"the '{split}' split lists no images");
        return new ImageList(list, [.. files], [.. labels], [.. lines]);
    }

    /// <summary>The path with every symbolic link along it resolved, the targets' own paths included (at most 40 links,
    /// as the kernel's own limit).</summary>
    static string RealPath(string path, int depth = 0)
    {
        if (depth > 40) throw new InvalidInputException(path, "too many levels of symbolic links");
        string full = Path.GetFullPath(path), current = Path.GetPathRoot(full)!;
        foreach (var part in full[current.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            current = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(current) ? new DirectoryInfo(current) : new FileInfo(current);
            if (info.LinkTarget != null && info.ResolveLinkTarget(returnFinalTarget: true) is { } target) current = RealPath(target.FullName, depth + 1);
        }
        return current;
    }
}
