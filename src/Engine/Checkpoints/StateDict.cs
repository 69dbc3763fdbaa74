using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>How strictly checkpoint keys must match a model's parameters.</summary>
public enum LoadMode
{
    /// <summary>Every parameter must be present with its shape and nothing else may be in the file.</summary>
    Strict,
    /// <summary>Missing and unexpected keys are reported, not errors; shape mismatches are still errors.</summary>
    NonStrict,
    /// <summary>Strict for the backbone; the classifier head is not loaded and keeps its fresh initialisation
    /// (fine-tuning on a new class count).</summary>
    NewHead,
}

/// <summary>What a load did.</summary>
/// <param name="Loaded">Parameters filled from the checkpoint.</param>
/// <param name="Missing">Parameters the checkpoint lacks (left as initialised).</param>
/// <param name="Unexpected">Checkpoint keys the model has no parameter for (ignored).</param>
/// <param name="Skipped">Parameters deliberately not loaded (the head in <see cref="LoadMode.NewHead"/>).</param>
public sealed record LoadReport(IReadOnlyList<string> Loaded, IReadOnlyList<string> Missing, IReadOnlyList<string> Unexpected, IReadOnlyList<string> Skipped)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"loaded {Loaded.Count}, missing {Missing.Count}{StateDict.Few(Missing)}, unexpected {Unexpected.Count}{StateDict.Few(Unexpected)}, skipped {Skipped.Count}{StateDict.Few(Skipped)}";
}

/// <summary>Loads checkpoint entries into named parameters (timm's <c>load_state_dict</c>).</summary>
public static class StateDict
{
    /// <summary>
    /// Copies every entry whose name matches a parameter into it. In strict mode all problems (missing keys,
    /// unexpected keys, shape mismatches) are collected and reported by name in one error before anything is
    /// written; shape mismatches are errors in every mode. <paramref name="skip"/> names parameters left alone.
    /// </summary>
    /// <exception cref="InvalidInputException">The checkpoint does not fit the model.</exception>
    public static LoadReport Load(IReadOnlyList<Tensor> parameters, IReadOnlyList<CheckpointEntry> entries, string source,
        bool strict, IReadOnlySet<string>? skip = null)
    {
        var byName = new Dictionary<string, CheckpointEntry>(StringComparer.Ordinal);
        foreach (var e in entries) byName[e.Name] = e;
        var known = new HashSet<string>(StringComparer.Ordinal);
        List<string> missing = new(), mismatched = new(), skipped = new(), loaded = new();
        var plan = new List<(Tensor, CheckpointEntry)>();
        foreach (var p in parameters)
        {
            string name = p.Name ?? throw new ArgumentException($"parameter {p.Describe()} has no name");
            known.Add(name);
            if (skip != null && skip.Contains(name)) { skipped.Add(name); continue; }
            if (!byName.TryGetValue(name, out var e)) { missing.Add(name); continue; }
            if (!e.Shape.SequenceEqual(p.Shape)) { mismatched.Add($"'{name}': checkpoint {e.ShapeText}, model {p.ShapeText}"); continue; }
            plan.Add((p, e));
        }
        var unexpected = entries.Where(e => !known.Contains(e.Name)).Select(e => e.Name).ToList();
        var problems = new List<string>();
        if (mismatched.Count > 0) problems.Add($"{mismatched.Count} shape mismatch(es): {string.Join("; ", mismatched.Take(ListedProblems))}{More(mismatched)}");
        if (strict && missing.Count > 0) problems.Add($"{missing.Count} missing key(s): {string.Join(", ", missing.Take(ListedProblems))}{More(missing)}");
        if (strict && unexpected.Count > 0) problems.Add($"{unexpected.Count} unexpected key(s): {string.Join(", ", unexpected.Take(ListedProblems))}{More(unexpected)}");
        if (problems.Count > 0)
        {
            // Many problems usually mean another architecture: say how the two differ before listing a few.
            string summary = mismatched.Count + missing.Count + unexpected.Count > ListedProblems
                ? $"checkpoint: {Architecture(entries.Select(e => (e.Name, e.Shape)))}; model: {Architecture(parameters.Select(p => (p.Name!, p.Shape)))}. "
                : "";
            throw new InvalidInputException(source, $"checkpoint does not fit the model: {summary}{string.Join(". ", problems)}");
        }
        foreach (var (p, e) in plan)
        {
            p.CopyFrom(e.Read());
            loaded.Add(p.Name!);
        }
        return new LoadReport(loaded, missing, unexpected, skipped);
    }

    const int ListedProblems = 5;

    static string More(List<string> items) => items.Count > ListedProblems ? $" and {items.Count - ListedProblems} more" : "";

    /// <summary>" (a, b, c and N more)" for a non-empty list, else "".</summary>
    internal static string Few(IReadOnlyList<string> items) =>
        items.Count == 0 ? "" : $" ({string.Join(", ", items.Take(3))}{(items.Count > 3 ? $" and {items.Count - 3} more" : "")})";

    /// <summary>The architecture a set of timm-named tensors describes: family, width, blocks, patch, tokens, classes.</summary>
    internal static string Architecture(IEnumerable<(string Name, int[] Shape)> tensors)
    {
        var all = tensors.ToList();
        int[]? Shape(params string[] names) => all.FirstOrDefault(t => names.Contains(t.Name)).Shape;
        string family = all.Any(t => t.Name.StartsWith("layers.", StringComparison.Ordinal)) ? "Swin"
            : all.Any(t => t.Name.StartsWith("stages.", StringComparison.Ordinal)) ? "ConvNeXt"
            : all.Any(t => t.Name is "cls_token" or "pos_embed") ? "ViT" : "unknown family";
        var parts = new List<string> { family };
        if (Shape("patch_embed.proj.weight", "stem.0.weight") is { Length: 4 } patch) parts.Add($"width {patch[0]}, patch {patch[2]}×{patch[3]}");
        int blocks = all.Select(t => System.Text.RegularExpressions.Regex.Match(t.Name, @"^(.*?blocks\.\d+)\.")).Where(m => m.Success)
            .Select(m => m.Groups[1].Value).Distinct().Count();
        parts.Add($"{blocks} blocks");
        if (Shape("pos_embed") is { Length: 3 } pos) parts.Add($"{pos[1]} tokens");
        if (Shape("head.weight", "head.fc.weight") is { Length: 2 } head) parts.Add($"{head[0]} classes");
        return string.Join(", ", parts);
    }
}
