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
        string source = method.RecipeSource.Replace("{task}", task ?? "<task>"), ours = "this project's choice";
        static string F(float v) => v.ToString("G4", CultureInfo.InvariantCulture);
        var lines = new List<(string Key, string Value, string Source)>
        {
            ("method", $"{method.Name} ({method.Title})", "PeftMethods.cs"),
            ("task", task ?? "none (the method's default values)", "VtabTasks.cs"),
            ("pretrained checkpoint", $"{method.OfficialCheckpoint}; vtab takes it as --weights {method.CheckpointFamily}=FILE", "fact of the official repository"),
            ("optimizer", r.Optimizer.ToString(), source),
            ("learning rate", $"{F(r.LearningRate)} (no batch-size scaling)", source),
            ("weight decay", $"{F(r.WeightDecay)} on {(r.WeightDecayOn == WeightDecayRule.All ? "every trainable parameter" : "matrices only (not biases, norms or vectors)")}", source),
            ("batch size", $"{r.BatchSize} (drop_last)", source),
            ("epochs", $"{r.Epochs} + {r.CooldownEpochs} cooldown", source),
            ("warmup", $"{r.WarmupEpochs} epochs from {F(r.WarmupLearningRate)}", source),
            ("schedule", $"cosine per epoch to {F(r.MinLearningRate)}{(r.ScheduleLagsOneEpoch ? ", stepped one epoch late (epochs 0 and 1 share t = 0)" : "")}", source),
            ("drop path", F(r.DropPath), source),
            ("label smoothing", F(r.LabelSmoothing), source),
            ("normalisation", r.Normalization, family == "vit" ? source : "the SSF and GPS repositories' Swin and ConvNeXt loaders"),
            ("augmentation", r.Augment ? "horizontal flip p 0.5 (official: flip, then timm RandAugment rand-m9-mstd0.5-inc1; RandAugment is not implemented yet)" : "none (resize only)", source),
            ("selection pass", method.Selection == null ? "none"
                : $"{(method.Selection.TrainMode ? "train mode" : "eval mode")}, {method.Selection.Views} view(s) per image, batches of {SelectionPass.BatchSizeOf(method, r)}", source),
            ("K", method.Selection == null ? "n/a" : r.K.ToString(CultureInfo.InvariantCulture), source),
            ("head width", r.HeadClasses is int h ? $"{h} (an official-config quirk: more than the task's classes)" : "the task's classes", source),
            ("head init", method == PeftMethods.Sct ? "nn.Linear's default: weight and bias uniform ±1/√fan_in" : "timm's: weight truncated normal 0.02, bias 0",
                method == PeftMethods.Sct ? "showlab/SCT reset_classifier" : "timm"),
            ("evaluation", $"top-1 on test every {r.EvalEveryEpochs} epoch(s) and after the last; best and final reported", source),
            ("seed", r.Seed.ToString(CultureInfo.InvariantCulture), source),
        };
        if (method.Selection == null && method != PeftMethods.Ssf) lines.Add(("note", "the recipe values are " + ours, source));
        return [.. lines.Select(l => $"{l.Key}: {l.Value}    [{l.Source}]")];
    }
}
