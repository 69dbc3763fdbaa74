using System.Globalization;
using System.Text;
using System.Text.Json;
using Engine.Data;
using Engine.IO;

namespace Engine.Models.Training;

/// <summary>
/// The results table of a suite of runs (<c>&lt;runs&gt;/&lt;task&gt;/&lt;method&gt;/result.json</c>) in the papers'
/// layout: a row per method, the tasks in the papers' column order with the Natural, Specialized and Structured means,
/// both averaging conventions of the literature — the mean over tasks (SSF's and GPS's "Mean") and the mean of the group
/// means (VPT's and Adapter+'s) — the trainable parameter count, and for VTAB-1k tasks the published rows of our methods
/// and of the papers' baselines beside ours. Written as markdown, CSV and an SVG bar chart.
/// </summary>
public sealed class VtabReport
{
    /// <summary>Published top-1 (%), ViT-B/16 (ImageNet-21k) on VTAB-1k, in <see cref="VtabTasks.All"/> order: SSF (SSF
    /// paper Table 4), GPS (GPS paper Table 3), and the baselines as the GPS paper's Table 3 reports them (Full, Linear
    /// and VPT-Deep from VPT, Bias from BitFit, Adapter, LoRA). AdaptFormer has no VTAB-1k row in the seed papers.</summary>
    public static IReadOnlyDictionary<string, double[]> Published { get; } = new Dictionary<string, double[]>
    {
        ["SSF (paper)"] = [69.0, 92.6, 75.1, 99.4, 91.8, 90.2, 52.9, 87.4, 95.9, 87.4, 75.5, 75.9, 62.3, 53.3, 80.6, 77.3, 54.9, 29.5, 37.9],
        ["GPS (paper)"] = [81.1, 94.2, 75.8, 99.4, 91.7, 91.6, 52.4, 87.9, 96.2, 86.5, 76.5, 79.9, 62.6, 55.0, 82.4, 84.0, 55.4, 29.7, 46.1],
        ["Full (paper)"] = [68.9, 87.7, 64.3, 97.2, 86.9, 87.4, 38.8, 79.7, 95.7, 84.2, 73.9, 56.3, 58.6, 41.7, 65.5, 57.5, 46.7, 25.7, 29.1],
        ["Linear (paper)"] = [63.4, 85.0, 64.3, 97.0, 86.3, 36.6, 51.0, 78.5, 87.5, 68.6, 74.0, 34.3, 30.6, 33.2, 55.4, 12.5, 20.0, 9.6, 19.2],
        ["Bias (paper)"] = [72.8, 87.0, 59.2, 97.5, 85.3, 59.9, 51.4, 78.7, 91.6, 72.9, 69.8, 61.5, 55.6, 32.4, 55.9, 66.6, 40.0, 15.7, 25.1],
        ["VPT-Deep (paper)"] = [78.8, 90.8, 65.8, 98.0, 88.3, 78.1, 49.6, 81.8, 96.1, 83.4, 68.4, 68.5, 60.0, 46.5, 72.8, 73.6, 47.9, 32.9, 37.8],
        ["Adapter (paper)"] = [74.1, 86.1, 63.2, 97.7, 87.0, 34.6, 50.8, 76.3, 88.0, 73.1, 70.5, 45.7, 37.4, 31.2, 53.2, 30.3, 25.4, 13.8, 22.1],
        ["LoRA (paper)"] = [68.1, 91.4, 69.8, 99.0, 90.5, 86.4, 53.1, 85.1, 95.8, 84.7, 74.2, 83.0, 66.9, 50.4, 81.4, 80.2, 46.6, 32.2, 41.1],
    };

    /// <summary>Our method name for a published row ("SSF (paper)" → ssf): the figure marks only the rows of methods
    /// that ran.</summary>
    static string PublishedMethod(string row)
    {
        string title = row[..row.IndexOf(" (", StringComparison.Ordinal)];
        return Peft.PeftMethods.All.FirstOrDefault(m => m.Title == title)?.Name ?? title.ToLowerInvariant(); // "VPT-Deep" → vpt
    }

    readonly List<RunResult> _results;
    readonly List<(string Name, VtabGroup Group)> _tasks;
    readonly List<string> _methods;

    VtabReport(List<RunResult> results, List<(string, VtabGroup)> tasks, List<string> methods)
    {
        (_results, _tasks, _methods) = (results, tasks, methods);
    }

    /// <summary>Every finished run under <paramref name="runsDir"/> (unfinished ones are counted in <see cref="Unfinished"/>).
    /// A task's group comes from the VTAB-1k catalog, or from the <c>task.json</c> of a synthetic task folder.</summary>
    public static VtabReport Collect(string runsDir)
    {
        if (!Directory.Exists(runsDir)) throw new DirectoryNotFoundException($"{runsDir}: no such runs folder");
        var results = new List<RunResult>();
        int unfinished = 0;
        var groups = new Dictionary<string, VtabGroup>();
        foreach (var taskDir in Directory.GetDirectories(runsDir))
            foreach (var runDir in Directory.GetDirectories(taskDir))
            {
                if (!File.Exists(Path.Combine(runDir, "config.json"))) continue;
                if (RunResult.Read(runDir) is { } result)
                {
                    results.Add(result);
                    groups[result.Task] = VtabTasks.Find(result.Task)?.Group ?? SyntheticGroup(RunConfig.Load(Path.Combine(runDir, "config.json")).TaskFolder);
                }
                else unfinished++;
            }
        if (results.Count == 0)
            throw new InvalidOperationException($"{runsDir}: no finished run to report{(unfinished > 0 ? $" ({unfinished} unfinished; resume them first)" : "")}");
        var order = VtabTasks.All.Select(t => t.Name).ToList();
        var tasks = groups.OrderBy(g => g.Value).ThenBy(g => order.IndexOf(g.Key) is int i and >= 0 ? i : int.MaxValue).ThenBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => (g.Key, g.Value)).ToList();
        var methodOrder = Peft.PeftMethods.Names.ToList();
        var methods = results.Select(r => r.Method).Distinct().OrderBy(m => methodOrder.IndexOf(m) is int i and >= 0 ? i : int.MaxValue).ThenBy(m => m).ToList();
        return new VtabReport(results, tasks, methods) { Unfinished = unfinished };
    }

    static VtabGroup SyntheticGroup(string taskFolder)
    {
        string path = Path.Combine(taskFolder, "task.json");
        if (!File.Exists(path)) return VtabGroup.Other;
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        if (!doc.RootElement.TryGetProperty("group", out var g)) return VtabGroup.Other;
        return g.ValueKind == JsonValueKind.String && Enum.TryParse<VtabGroup>(g.GetString(), true, out var group) && Enum.IsDefined(group)
            ? group
            : throw new InvalidInputException(path, $"group {g} is not natural, specialized, structured or other");
    }

    /// <summary>Runs found without a result (still running, interrupted or diverged).</summary>
    public int Unfinished { get; private init; }

    /// <summary>The finished runs.</summary>
    public IReadOnlyList<RunResult> Results => _results;

    double? Accuracy(string method, string task, bool best) =>
        _results.FirstOrDefault(r => r.Method == method && r.Task == task) is { } r ? best ? r.BestAccuracy : r.FinalAccuracy : null;

    static string Cell(double? v) => v is double d ? d.ToString("F1", CultureInfo.InvariantCulture) : "–";

    static double? Mean(IEnumerable<double?> values)
    {
        var present = values.ToList();
        return present.Count > 0 && present.All(v => v.HasValue) ? present.Average(v => v!.Value) : null;
    }

    // Whether the table holds every task of a group (every VTAB-1k task of a VTAB group; the tasks found for the rest),
    // and every VTAB-1k task for the overall mean: a mean over part of a group would not compare with the papers'.
    bool Complete(VtabGroup? group)
    {
        var vtab = VtabTasks.All.Where(t => group == null || t.Group == group).Select(t => t.Name).ToList();
        bool anyVtab = _tasks.Any(t => VtabTasks.Find(t.Name) != null && (group == null || t.Group == group));
        return !anyVtab || vtab.All(name => _tasks.Any(t => t.Name == name));
    }

    /// <summary>The markdown tables: best-on-test (what the papers report) and final-epoch accuracy.</summary>
    public string Markdown()
    {
        var sb = new StringBuilder();
        var groups = _tasks.Select(t => t.Group).Distinct().ToList();
        bool vtab = _tasks.Any(t => VtabTasks.Find(t.Name) != null);
        foreach (bool best in new[] { true, false })
        {
            sb.AppendLine(best ? "Top-1 accuracy (%), best evaluation on the test split (as the official repositories report):" : "Top-1 accuracy (%) after the last epoch:");
            sb.AppendLine();
            sb.Append("| method | params (M) | ").AppendJoin(" | ", _tasks.Select(t => t.Name)).Append(" | ")
              .AppendJoin(" | ", groups.Select(g => g.ToString())).AppendLine(" | mean (tasks) | mean (groups) |");
            sb.Append("|---|---:|").Append(string.Concat(Enumerable.Repeat("---:|", _tasks.Count + groups.Count + 2))).AppendLine();
            foreach (var method in _methods)
                Row(sb, method, (_results.Where(r => r.Method == method).Average(r => r.TrainableParameters) / 1e6).ToString("G3", CultureInfo.InvariantCulture),
                    [.. _tasks.Select(t => Accuracy(method, t.Name, best))], groups);
            if (best && vtab)
                foreach (var (name, numbers) in Published)
                    Row(sb, name, "–", [.. _tasks.Select(t => VtabTasks.All.ToList().FindIndex(v => v.Name == t.Name) is int i and >= 0 ? numbers[i] : (double?)null)], groups);
            sb.AppendLine();
        }
        sb.AppendLine("mean (tasks): the mean over every task (SSF's and GPS's \"Mean\"); mean (groups): the mean of the group means " +
                      "(VPT's and Adapter+'s convention; for VTAB-1k, Natural, Specialized and Structured). " +
                      "A mean is shown only where every task of it has a result (for VTAB-1k, every task of the group, or all 19 for the means). " +
                      "Params: trainable parameters of our runs (head included), averaged over tasks.");
        if (Unfinished > 0) sb.AppendLine($"{Unfinished} run(s) have no result yet and are not in the table.");
        var backbones = _results.Where(r => r.Weights != null).GroupBy(r => (r.Weights, r.WeightsSha256))
            .Select(g => $"{string.Join(", ", g.Select(r => r.Method).Distinct().OrderBy(m => _methods.IndexOf(m)))} from {g.Key.Weights} (SHA-256 {g.Key.WeightsSha256?[..12]}…)").ToList();
        if (backbones.Count > 0) sb.AppendLine($"Backbones: {string.Join("; ", backbones)}.");
        return sb.ToString();
    }

    /// <summary>A table row: the per-task values, then the mean of each group, over every task, and of the group means.</summary>
    void Row(StringBuilder sb, string name, string parameters, List<double?> values, List<VtabGroup> groups)
    {
        var groupMeans = groups.Select(g => Complete(g) ? Mean(values.Where((_, i) => _tasks[i].Group == g)) : null).ToList();
        bool complete = Complete(null);
        sb.Append($"| {name} | {parameters} | ").AppendJoin(" | ", values.Select(Cell)).Append(" | ")
          .AppendJoin(" | ", groupMeans.Select(Cell))
          .AppendLine($" | {Cell(complete ? Mean(values) : null)} | {Cell(complete ? Mean(groupMeans) : null)} |");
    }

    /// <summary>One CSV row per run.</summary>
    public string Csv()
    {
        var sb = new StringBuilder("task,group,method,final_accuracy,best_accuracy,best_epoch,epochs,trainable_parameters,seconds\n");
        foreach (var (task, group) in _tasks)
            foreach (var r in _results.Where(r => r.Task == task).OrderBy(r => _methods.IndexOf(r.Method)))
                sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                    $"{task},{group},{r.Method},{r.FinalAccuracy:F2},{r.BestAccuracy:F2},{r.BestEpoch},{r.Epochs},{r.TrainableParameters},{r.Seconds:F1}"));
        return sb.ToString();
    }

    /// <summary>
    /// A grouped bar chart of best-on-test accuracy on a white background: a group of bars (one per method) per task,
    /// the task groups separated by lines and named, each method's group mean (where the group is complete) as a dashed
    /// line across its group, the published rows of the methods that ran as marks over the VTAB-1k tasks, a labelled y-axis and a legend.
    /// Text is SVG text, so any viewer renders it with its own fonts.
    /// </summary>
    public string Svg()
    {
        string[] colors = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"];
        // A diamond, a cross, a triangle, a square, a plus, a chevron: one per published row that is marked.
        string[] markShapes = ["M -4 0 L 0 -4 L 4 0 L 0 4 Z", "M -4 -4 L 4 4 M -4 4 L 4 -4", "M 0 -4 L 4 3 L -4 3 Z", "M -3 -3 L 3 -3 L 3 3 L -3 3 Z",
                               "M -4 0 L 4 0 M 0 -4 L 0 4", "M -4 -2 L 0 2 L 4 -2"];
        int bar = 10, gap = 16, top = 48, height = 240, left = 58;
        int groupWidth = _methods.Count * bar + gap, plotWidth = _tasks.Count * groupWidth, width = left + plotWidth + 170;
        var inv = CultureInfo.InvariantCulture;
        int Y(double percent) => top + height - (int)Math.Round(percent * height / 100);
        var sb = new StringBuilder(string.Create(inv,
            $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{top + height + 100}\" font-family=\"sans-serif\" font-size=\"11\">\n"));
        sb.AppendLine($"<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        sb.AppendLine($"<text x=\"{left}\" y=\"18\" font-size=\"13\">Top-1 accuracy (%), best evaluation on the test split, per task and method</text>");
        sb.AppendLine($"<text transform=\"translate(16 {top + height / 2}) rotate(-90)\" text-anchor=\"middle\">top-1 accuracy (%)</text>");
        for (int y = 0; y <= 100; y += 10)
            sb.AppendLine($"<line x1=\"{left}\" y1=\"{Y(y)}\" x2=\"{left + plotWidth}\" y2=\"{Y(y)}\" stroke=\"{(y % 50 == 0 ? "#bbb" : "#eee")}\"/>" +
                          $"<text x=\"{left - 6}\" y=\"{Y(y) + 4}\" text-anchor=\"end\">{y}</text>");
        int X0(int task) => left + task * groupWidth + gap / 2;
        for (int t = 0; t < _tasks.Count; t++)
        {
            int x0 = X0(t);
            for (int m = 0; m < _methods.Count; m++)
                if (Accuracy(_methods[m], _tasks[t].Name, best: true) is double a)
                    sb.AppendLine(string.Create(inv,
                        $"<rect x=\"{x0 + m * bar}\" y=\"{Y(a)}\" width=\"{bar - 1}\" height=\"{top + height - Y(a)}\" fill=\"{colors[m % colors.Length]}\"><title>{_tasks[t].Name} {_methods[m]}: {a:F1}%</title></rect>"));
            int cx = x0 + _methods.Count * bar / 2;
            int vtabIndex = VtabTasks.All.ToList().FindIndex(v => v.Name == _tasks[t].Name);
            int p = 0;
            foreach (var (name, numbers) in MarkedRows())
            {
                if (vtabIndex >= 0)
                    sb.AppendLine(string.Create(inv, $"<path transform=\"translate({cx} {Y(numbers[vtabIndex])})\" d=\"{markShapes[p % markShapes.Length]}\" " +
                                                     $"fill=\"black\" stroke=\"black\" stroke-width=\"1.5\"><title>{_tasks[t].Name} {name}: {numbers[vtabIndex]:F1}%</title></path>"));
                p++;
            }
            sb.AppendLine($"<text x=\"{cx}\" y=\"{top + height + 12}\" text-anchor=\"end\" transform=\"rotate(-40 {cx} {top + height + 12})\">{_tasks[t].Name}</text>");
        }
        // Over the bars: group separators and names, and each method's mean over a complete group.
        foreach (var group in _tasks.Select(t => t.Group).Distinct())
        {
            int first = _tasks.FindIndex(t => t.Group == group), last = _tasks.FindLastIndex(t => t.Group == group);
            int x1 = left + first * groupWidth, x2 = left + (last + 1) * groupWidth;
            if (first > 0) sb.AppendLine($"<line x1=\"{x1}\" y1=\"{top - 14}\" x2=\"{x1}\" y2=\"{top + height}\" stroke=\"#888\"/>");
            sb.AppendLine($"<text x=\"{(x1 + x2) / 2}\" y=\"{top - 4}\" text-anchor=\"middle\" font-weight=\"bold\">{group}</text>");
            if (!Complete(group)) continue;
            for (int m = 0; m < _methods.Count; m++)
                if (Mean(_tasks.Where(t => t.Group == group).Select(t => Accuracy(_methods[m], t.Name, best: true))) is double mean)
                    sb.AppendLine(string.Create(inv, $"<line x1=\"{x1 + 2}\" y1=\"{Y(mean)}\" x2=\"{x2 - 2}\" y2=\"{Y(mean)}\" stroke=\"{colors[m % colors.Length]}\" " +
                                                     $"stroke-dasharray=\"5 3\"><title>{group} mean, {_methods[m]}: {mean:F1}%</title></line>"));
        }
        int lx = left + plotWidth + 20, ly = top + 10;
        for (int m = 0; m < _methods.Count; m++, ly += 16)
            sb.AppendLine($"<rect x=\"{lx}\" y=\"{ly - 9}\" width=\"10\" height=\"10\" fill=\"{colors[m % colors.Length]}\"/><text x=\"{lx + 14}\" y=\"{ly}\">{_methods[m]}</text>");
        if (_tasks.Any(t => VtabTasks.Find(t.Name) != null))
        {
            int p = 0;
            foreach (var (name, _) in MarkedRows())
            {
                sb.AppendLine($"<path transform=\"translate({lx + 5} {ly - 4})\" d=\"{markShapes[p++ % markShapes.Length]}\" fill=\"black\" stroke=\"black\" stroke-width=\"1.5\"/><text x=\"{lx + 14}\" y=\"{ly}\">{name}</text>");
                ly += 16;
            }
        }
        sb.AppendLine($"<line x1=\"{lx}\" y1=\"{ly - 4}\" x2=\"{lx + 10}\" y2=\"{ly - 4}\" stroke=\"#555\" stroke-dasharray=\"5 3\"/><text x=\"{lx + 14}\" y=\"{ly}\">group mean</text>");
        sb.AppendLine("</svg>");
        return sb.ToString();
    }

    // The published rows the figure marks: those of the methods in the table.
    IEnumerable<KeyValuePair<string, double[]>> MarkedRows() => Published.Where(row => _methods.Contains(PublishedMethod(row.Key)));

    /// <summary>Writes report.md, results.csv and accuracy.svg into <paramref name="folder"/> (atomically); returns their paths.</summary>
    public string[] Write(string folder)
    {
        var files = new[] { ("report.md", Markdown()), ("results.csv", Csv()), ("accuracy.svg", Svg()) };
        foreach (var (name, text) in files) AtomicFile.Write(Path.Combine(folder, name), s => s.Write(Encoding.UTF8.GetBytes(text)));
        return [.. files.Select(f => Path.Combine(folder, f.Item1))];
    }
}
