using Engine.Imaging;

namespace Engine.Tests;

/// <summary>Writes miniature VTAB-1k task folders (JPEG images, list files) for the loader and training tests. Two
/// learnable tasks: "tint" (3 classes: which colour channel is raised) and "quadrant" (4 classes: which quadrant holds
/// a bright square), each on noise, at a few different image sizes so the resize always runs.</summary>
static class MiniVtab
{
    public static readonly Dictionary<string, int> Classes = new() { ["tint"] = 3, ["quadrant"] = 4 };

    /// <summary>Writes <paramref name="task"/> under <paramref name="root"/> with the given images per split.</summary>
    public static string Write(string root, string task, int train = 48, int test = 30, ulong seed = 1)
    {
        string folder = Path.Combine(root, task);
        var splits = new Dictionary<string, int> { ["train800"] = train * 4 / 5, ["val200"] = train - train * 4 / 5, ["test"] = test };
        var lists = new Dictionary<string, List<string>>();
        ulong splitIndex = 0;
        foreach (var (split, count) in splits)
        {
            splitIndex++;
            Directory.CreateDirectory(Path.Combine(folder, "images", split));
            lists[split] = [];
            for (int i = 0; i < count; i++)
            {
                ulong s = Kernels.CounterRng.Hash(seed, splitIndex * 100_000 + (ulong)i);
                int label = (int)(s % (ulong)Classes[task]);
                string name = $"images/{split}/{i:D6}.jpg";
                File.WriteAllBytes(Path.Combine(folder, name), Jpeg.Encode(Image(task, label, s), quality: 90));
                lists[split].Add($"{name} {label}");
            }
        }
        lists["train800val200"] = [.. lists["train800"], .. lists["val200"]];
        // The train800val200 images live in the train800 and val200 folders, as NOAH's extractor lays them out.
        foreach (var (split, lines) in lists) File.WriteAllLines(Path.Combine(folder, split + ".txt"), lines);
        File.WriteAllText(Path.Combine(folder, "task.json"), $$"""{ "classes": {{Classes[task]}}, "group": "{{(task == "tint" ? "natural" : "structured")}}" }""");
        return folder;
    }

    static RgbImage Image(string task, int label, ulong seed)
    {
        int w = 20 + (int)(seed % 3) * 4, h = 18 + (int)(seed / 3 % 3) * 4;
        var rgb = new byte[w * h * 3];
        for (int i = 0; i < rgb.Length; i++) rgb[i] = (byte)(60 + Kernels.CounterRng.Hash(seed, (ulong)i) % 60);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int at = (y * w + x) * 3;
                if (task == "tint") rgb[at + label] = (byte)Math.Min(255, rgb[at + label] + 110);
                else if ((y < h / 2 ? 0 : 2) + (x < w / 2 ? 0 : 1) == label && Math.Abs(y % (h / 2) - h / 4) < h / 6 && Math.Abs(x % (w / 2) - w / 4) < w / 6)
                    rgb[at] = rgb[at + 1] = rgb[at + 2] = 250;
            }
        return new RgbImage(w, h, rgb);
    }
}
