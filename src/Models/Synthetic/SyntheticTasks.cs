using System.Text.Json;
using Engine.Data;
using Engine.Imaging;
using Engine.IO;
using Engine.Kernels;

namespace Engine.Models.Synthetic;

/// <summary>A generated classification task: its name, classes, VTAB group, what it asks, and how to draw an image of a
/// given label.</summary>
public sealed record SyntheticTask(string Name, int Classes, VtabGroup Group, string Description, Action<SceneRenderer, int> Draw);

/// <summary>
/// The synthetic suite: seven procedurally generated tasks in VTAB-1k's spirit and its on-disk layout (so the real
/// loader, cache and training run are exercised), and the separate source task the shipped small ViT was pretrained on.
/// Natural-like: shape class on cluttered backgrounds, procedural texture class. Specialized-like: a small ring present
/// or absent in tissue-like texture. Structured: object count, object location in a 3×3 grid, bar orientation, size of
/// the nearest (largest) object.
/// </summary>
public static class SyntheticTasks
{
    /// <summary>Side of the generated images (resized to the model's input by the loader, as VTAB's are).</summary>
    public const int ImageSize = 40;

    /// <summary>The downstream tasks, Natural, Specialized, then Structured.</summary>
    public static IReadOnlyList<SyntheticTask> All { get; } =
    [
        new("shapes", 6, VtabGroup.Natural, "which of six shapes, on a cluttered background", (r, label) =>
        {
            r.RandomBackground();
            r.Clutter(lines: 4, dots: 10);
            r.Draw(new SceneObject((Shape)label, r.Uniform(11, 29), r.Uniform(11, 29), r.Uniform(7, 10), r.Uniform(0, 2 * Math.PI), r.RandomColor()));
        }),
        new("textures", 6, VtabGroup.Natural, "which of six procedural textures", (r, label) =>
        {
            double cycles = r.Uniform(2.5, 5.5), phase = r.Uniform(0, 2 * Math.PI), tilt = r.Uniform(-0.15, 0.15);
            var (a, b) = (r.RandomColor(), r.RandomColor());
            r.Paint((x, y) =>
            {
                (x, y) = (x * Math.Cos(tilt) - y * Math.Sin(tilt), x * Math.Sin(tilt) + y * Math.Cos(tilt));
                double w = 2 * Math.PI * cycles, t = label switch
                {
                    0 => Math.Sin(w * y + phase),
                    1 => Math.Sin(w * x + phase),
                    2 => Math.Sin(w * (x + y) / Math.Sqrt(2) + phase),
                    3 => Math.Sin(w * x + phase) * Math.Sin(w * y + phase),
                    4 => Math.Cos(w * x + phase) + Math.Cos(w * y + phase) - 1,
                    _ => Math.Sin(w * Math.Sqrt((x - 0.5) * (x - 0.5) + (y - 0.5) * (y - 0.5)) * 1.5 + phase),
                };
                double m = t > 0 ? 1 : 0;
                return (m * a.Item1 + (1 - m) * b.Item1, m * a.Item2 + (1 - m) * b.Item2, m * a.Item3 + (1 - m) * b.Item3);
            });
            r.AddNoise(10);
        }),
        new("lesion", 2, VtabGroup.Specialized, "is a small dark ring present in tissue-like texture", (r, label) =>
        {
            var waves = Enumerable.Range(0, 4).Select(_ => (Fx: r.Uniform(2, 9), Fy: r.Uniform(2, 9), Phase: r.Uniform(0, 6.3))).ToArray();
            r.Paint((x, y) =>
            {
                double t = waves.Sum(w => Math.Sin(2 * Math.PI * (w.Fx * x + w.Fy * y) + w.Phase)) / 4;
                return (200 + 30 * t, 130 + 40 * t, 170 + 25 * t);
            });
            for (int i = 0; i < 3; i++) // decoy blobs in both classes
                r.Draw(new SceneObject(Shape.Circle, r.Uniform(4, 36), r.Uniform(4, 36), r.Uniform(2, 4), 0, (150, 80, 130)));
            if (label == 1) r.Draw(new SceneObject(Shape.Ring, r.Uniform(6, 34), r.Uniform(6, 34), r.Uniform(3.5, 5), 0, (90, 30, 80)));
            r.AddNoise(14);
        }),
        new("count", 6, VtabGroup.Structured, "how many objects (1 to 6)", (r, label) =>
        {
            r.RandomBackground();
            var placed = new List<(double X, double Y, double R)>();
            while (placed.Count < label + 1)
            {
                double radius = r.Uniform(3.5, 5.5), x = r.Uniform(radius + 1, ImageSize - radius - 1), y = r.Uniform(radius + 1, ImageSize - radius - 1);
                if (placed.Any(p => Math.Sqrt((p.X - x) * (p.X - x) + (p.Y - y) * (p.Y - y)) < p.R + radius + 2)) continue;
                placed.Add((x, y, radius));
                r.Draw(new SceneObject((Shape)r.Below(6), x, y, radius, r.Uniform(0, 2 * Math.PI), r.RandomColor()));
            }
        }),
        new("location", 9, VtabGroup.Structured, "which cell of a 3×3 grid holds the object", (r, label) =>
        {
            r.RandomBackground();
            r.Clutter(lines: 2, dots: 4);
            double cell = ImageSize / 3.0, radius = r.Uniform(4, 6);
            double x = (label % 3) * cell + r.Uniform(radius * 0.6, cell - radius * 0.6), y = (label / 3) * cell + r.Uniform(radius * 0.6, cell - radius * 0.6);
            r.Draw(new SceneObject((Shape)r.Below(6), x, y, radius, r.Uniform(0, 2 * Math.PI), r.RandomColor()));
        }),
        new("orientation", 8, VtabGroup.Structured, "the angle of a bar, in steps of 22.5°", (r, label) =>
        {
            r.RandomBackground();
            r.Draw(new SceneObject(Shape.Bar, r.Uniform(16, 24), r.Uniform(16, 24), r.Uniform(12, 16),
                label * Math.PI / 8 + r.Uniform(-Math.PI / 40, Math.PI / 40), r.RandomColor()));
        }),
        new("nearest_size", 4, VtabGroup.Structured, "the size bin of the nearest (largest) object among several", (r, label) =>
        {
            r.RandomBackground();
            double[] bins = [4, 6, 8.5, 11];
            double largest = r.Uniform(bins[label], bins[label] + 1.5);
            int others = 1 + r.Below(3);
            for (int i = 0; i < others; i++)
                r.Draw(new SceneObject((Shape)r.Below(6), r.Uniform(5, 35), r.Uniform(5, 35), r.Uniform(2.5, Math.Max(3, largest - 1.5)), r.Uniform(0, 6.3), r.RandomColor()));
            r.Draw(new SceneObject((Shape)r.Below(6), r.Uniform(largest, ImageSize - largest), r.Uniform(largest, ImageSize - largest), largest, r.Uniform(0, 6.3), r.RandomColor()));
        }),
    ];

    /// <summary>The source task for pretraining, different from every downstream task: the shape and colour of the main
    /// object (6 × 6 = 36 classes), among up to two smaller distractors, on varied and cluttered backgrounds.</summary>
    public static SyntheticTask Source { get; } = new("source_shape_colour", 36, VtabGroup.Natural, "shape × colour of the main object", (r, label) =>
    {
        r.RandomBackground();
        if (r.Below(2) == 0) r.Clutter(lines: 3, dots: 6);
        int distractors = r.Below(3);
        for (int i = 0; i < distractors; i++)
            r.Draw(new SceneObject((Shape)r.Below(6), r.Uniform(4, 36), r.Uniform(4, 36), r.Uniform(2.5, 4), r.Uniform(0, 6.3), r.RandomColor()));
        r.Draw(new SceneObject((Shape)(label / 6), r.Uniform(10, 30), r.Uniform(10, 30), r.Uniform(6, 11), r.Uniform(0, 2 * Math.PI), r.RandomColor(label % 6)));
    });

    /// <summary>Image <paramref name="index"/> of <paramref name="task"/> in stream <paramref name="stream"/> (a split or a
    /// pretraining batch): its label is drawn from (seed, stream, index), then the image is drawn for it.</summary>
    public static (RgbImage Image, int Label) Generate(SyntheticTask task, ulong seed, ulong stream, long index)
    {
        ulong key = CounterRng.Hash(CounterRng.Hash(seed, stream), (ulong)index);
        int label = (int)(CounterRng.Hash(key, 0xC1A55) % (ulong)task.Classes);
        var renderer = new SceneRenderer(ImageSize, key);
        task.Draw(renderer, label);
        return (renderer.ToImage(), label);
    }

    /// <summary>
    /// Writes every task under <paramref name="root"/> in the VTAB-1k layout: <c>images/&lt;split&gt;/NNNNNN.jpg</c>
    /// (JPEG quality 90) for train800 (800), val200 (200) and test (<paramref name="testImages"/>), the four list files,
    /// and <c>task.json</c> (classes, group, description). A task folder already complete is kept as it is.
    /// <paramref name="tasks"/> picks tasks by name (default: all); <paramref name="trainImages"/> and
    /// <paramref name="valImages"/> shrink the splits for quick checks.
    /// </summary>
    /// <returns>The task folders.</returns>
    public static string[] Write(string root, int testImages = 500, ulong seed = 2026, Action<string>? log = null, IEnumerable<string>? tasks = null,
        int trainImages = 800, int valImages = 200)
    {
        var wanted = tasks?.ToHashSet();
        var folders = new List<string>();
        foreach (var task in All.Where(t => wanted == null || wanted.Contains(t.Name)))
        {
            string folder = Path.Combine(root, task.Name);
            folders.Add(folder);
            if (File.Exists(Path.Combine(folder, "task.json"))) continue;
            var splits = new (string Name, int Count)[] { ("train800", trainImages), ("val200", valImages), ("test", testImages) };
            var lists = new Dictionary<string, string[]>();
            for (int s = 0; s < splits.Length; s++)
            {
                var (split, count) = splits[s];
                Directory.CreateDirectory(Path.Combine(folder, "images", split));
                var lines = new string[count];
                Parallel.For(0, count, i =>
                {
                    var (image, label) = Generate(task, seed, (ulong)s, i);
                    string name = $"images/{split}/{i:D6}.jpg";
                    File.WriteAllBytes(Path.Combine(folder, name), Jpeg.Encode(image, quality: 90));
                    lines[i] = $"{name} {label}";
                });
                lists[split] = lines;
            }
            lists["train800val200"] = [.. lists["train800"], .. lists["val200"]];
            foreach (var (split, lines) in lists) AtomicFile.Write(Path.Combine(folder, split + ".txt"), st => st.Write(System.Text.Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n")));
            // task.json last: its presence marks a complete folder.
            var info = new { classes = task.Classes, group = task.Group.ToString().ToLowerInvariant(), description = task.Description };
            AtomicFile.Write(Path.Combine(folder, "task.json"), st => JsonSerializer.Serialize(st, info, new JsonSerializerOptions { WriteIndented = true }));
            log?.Invoke($"generated {task.Name}: {task.Classes} classes ({task.Description}), {trainImages} + {valImages} + {testImages} images");
        }
        return [.. folders];
    }
}
