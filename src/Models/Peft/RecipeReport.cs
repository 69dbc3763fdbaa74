using System.Globalization;

namespace Engine.Models.Peft;

/// <summary>
/// Every resolved value of a method's recipe on a task, one <c>key: value</c> line each with where it comes from, so a
/// run can be audited against the papers before it is started (<c>peft vtab recipe</c>). Where this project still
/// differs from the official code the line says so.
/// </summary>
public static class RecipeReport
{
    /// <summary>The lines for <paramref name="method"/> on <paramref name="task"/> (null: the method's default) and a
    /// model <paramref name="family"/>.</summary>
    public static IReadOnlyList<string> Lines(PeftMethodInfo method, string? task, string family)
    {
        var r = PeftRecipe.For(method.Name, task, family);
        static string F(float v) => v.ToString("G4", CultureInfo.InvariantCulture);
        var lines = new List<(string Key, string Value)>
        {
            ("method", $"{method.Name} ({method.Title})"),
            ("task", task ?? "none (the method's default values)"),
            ("pretrained checkpoint", $"{method.OfficialCheckpoint}; vtab takes it as --weights {method.CheckpointFamily}=FILE"),
            ("recipe script", $"{method.Script.Repository}@{method.Script.Commit} {method.Script.FileOf(task)}"),
            ("optimizer", r.Optimizer.ToString()),
            ("learning rate", $"{F(r.LearningRate)} (no batch-size scaling)"),
            ("weight decay", $"{F(r.WeightDecay)} on {(r.WeightDecayOn == WeightDecayRule.All ? "every trainable parameter" : "matrices only (not biases, norms or vectors)")}"),
            ("batch size", $"{r.BatchSize} (drop_last)"),
            ("epochs", $"{r.Epochs} + {r.CooldownEpochs} cooldown"),
            ("warmup", $"{r.WarmupEpochs} epochs from {F(r.WarmupLearningRate)}"),
            ("schedule", $"cosine per epoch to {F(r.MinLearningRate)}{(r.ScheduleLagsOneEpoch ? ", stepped one epoch late (epochs 0 and 1 share t = 0)" : "")}"),
            ("drop path", F(r.DropPath)),
            ("label smoothing", F(r.LabelSmoothing)),
            ("normalisation", r.Normalization),
            ("augmentation", Augmentation(r)),
            ("selection pass", method.Selection == null ? "none"
                : $"{(method.Selection.TrainMode ? "train mode" : "eval mode")}, {method.Selection.Views} view(s) per image, batches of {SelectionPass.BatchSizeOf(method, r)}"),
            ("K", method.Selection == null ? "n/a" : r.K.ToString(CultureInfo.InvariantCulture)),
            ("method settings", MethodSettings(r)),
            ("head width", r.HeadClasses is int h ? $"{h} (an official-config quirk: more than the task's classes)" : "the task's classes"),
            ("head init", method == PeftMethods.Sct ? "nn.Linear's default: weight and bias uniform ±1/√fan_in" : "timm's: weight truncated normal 0.02, bias 0"),
            ("evaluation", $"top-1 on test every {r.EvalEveryEpochs} epoch(s) and after the last; best and final reported"),
            ("seed", r.Seed.ToString(CultureInfo.InvariantCulture)),
        };
        return [.. lines.Select(l => $"{l.Key}: {l.Value}    [{Source(method, r, l.Key, task, family)}]")];
    }

    // Where a line's value comes from: the script's flag or line, or this project where it is ours.
    static string Source(PeftMethodInfo method, PeftRecipe r, string key, string? task, string family) => key switch
    {
        "method" => "PeftMethods.cs",
        "task" => "VtabTasks.cs",
        "pretrained checkpoint" or "recipe script" => "fact of the official repository",
        "learning rate" when method.OwnLearningRate => "this project's choice: the seed repositories have no VTAB script for this baseline",
        "selection pass" or "K" when method.Selection == null => "n/a",
        "method settings" when r.Lora == null && r.Adapter == null && r.Vpt == null => "n/a",
        "method settings" when !method.Script.Sources.ContainsKey(key) => "this project's choice: the method's defaults (docs/methods.md)",
        "normalisation" when family != "vit" => "the SSF and GPS repositories' Swin and ConvNeXt loaders (IMAGENET_DEFAULT_MEAN/STD)",
        _ => method.Script.SourceOf(key, task),
    };

    // LoRA's, an adapter's or VPT's own settings, or none.
    static string MethodSettings(PeftRecipe r)
    {
        static string F(float v) => v.ToString("G4", CultureInfo.InvariantCulture);
        if (r.Lora is { } l) return $"LoRA rank {l.Rank}, alpha {F(l.Alpha)} (scale {F(l.Scale)}), dropout {F(l.Dropout)} on {string.Join(", ", l.Targets)}";
        if (r.Adapter is { } a) return $"bottleneck {a.Bottleneck}, scale {F(a.Scale)}, dropout {F(a.Dropout)}";
        if (r.Vpt is { } v) return $"{v.Length} prompts per block, dropout {F(v.Dropout)}";
        return "none";
    }

    static string Augmentation(PeftRecipe r)
    {
        var steps = new List<string> { "bicubic resize" };
        if (r.Augment) steps.Add("horizontal flip p 0.5");
        if (r.RandAugment != null)
        {
            var ra = Engine.Imaging.RandAugment.Parse(r.RandAugment, Engine.Imaging.Normalization.FromName(r.Normalization));
            steps.Add($"timm RandAugment {ra.Policy} ({ra.Layers} of {ra.Ops.Count} ops, each with p {ra.Probability:G3}, magnitude " +
                $"N({ra.Magnitude:G3}, {ra.MagnitudeStd:G3}²) clipped to [0, {ra.MagnitudeMax:G3}], bicubic, fill ({string.Join(", ", ra.Fill.ToArray())}))");
        }
        return string.Join(" → ", steps) + (steps.Count == 1 ? " only" : "") + $" → {r.Normalization} normalisation";
    }
}
