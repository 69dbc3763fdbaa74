using Engine.Data;
using Engine.Models.Peft;
using Engine.Models.Training;

namespace Engine.Models.Synthetic;

/// <summary>The synthetic suite's choices (the main job, <c>peft synthetic</c>): its recipe per method and its verdict on
/// whether adapting the backbone beats linear probing on the structured tasks.</summary>
public static class SyntheticSuite
{
    /// <summary>The shipped pretrained model (config.json, weights.safetensors), relative to the repository root.</summary>
    public const string ShippedModel = "models/synthetic-vit";

    /// <summary>Fine-tuning epochs per run by default (sized so the whole suite takes minutes on 2 cores).</summary>
    public const int DefaultEpochs = 15;

    /// <summary>The methods the suite runs on a model family by default, in the table's order (linear probing first, the yardstick).</summary>
    public static IReadOnlyList<PeftMethodInfo> Methods(string family) =>
        [PeftMethods.Linear, .. PeftMethods.Default.Where(m => m != PeftMethods.Linear && m.AppliesTo(family))];

    /// <summary>The suite's recipe for a method: the method's optimizer and weight-decay rule from the papers' recipes, with
    /// a schedule, learning rate, weight decay and K (<see cref="PeftMethodInfo.Synthetic"/>) scaled to a short run of a
    /// small model.</summary>
    public static PeftRecipe Recipe(PeftMethodInfo method, int epochs, string family = "vit") => PeftRecipe.For(method.Name, family: family) with
    {
        Epochs = epochs, WarmupEpochs = 1, CooldownEpochs = 0, WarmupLearningRate = 1e-5f, MinLearningRate = 1e-5f, ScheduleLagsOneEpoch = false,
        BatchSize = 32, EvalEveryEpochs = 1, DropPath = 0f, LabelSmoothing = 0f, Normalization = "inception", Augment = false,
        LearningRate = method.Synthetic.LearningRate, WeightDecay = method.Synthetic.WeightDecay, K = method.Synthetic.K,
    };

    /// <summary>One honest line per method: its mean best accuracy over the structured tasks that linear probing ran,
    /// against linear probing's.</summary>
    public static string TransferVerdict(VtabReport report)
    {
        string linearName = PeftMethods.Linear.Name;
        var structured = SyntheticTasks.All.Where(t => t.Group == VtabGroup.Structured).Select(t => t.Name).ToHashSet();
        var tasks = report.Results.Where(r => r.Method == linearName && structured.Contains(r.Task)).Select(r => r.Task).ToHashSet();
        if (tasks.Count == 0) return "Structured tasks: no linear-probing run to compare with.";
        double? Mean(string method)
        {
            var values = report.Results.Where(r => r.Method == method && tasks.Contains(r.Task)).Select(r => r.BestAccuracy).ToList();
            return values.Count == tasks.Count ? values.Average() : null;
        }
        double linear = Mean(linearName)!.Value;
        var lines = new List<string> { $"Structured tasks ({string.Join(", ", tasks.Order())}), mean best top-1: linear probing {linear:F1}%." };
        foreach (var method in PeftMethods.Names.Where(m => m != linearName))
            if (Mean(method) is double m)
                lines.Add($"  {method}: {m:F1}% ({m - linear:+0.0;-0.0} points): {(m > linear ? "beats" : "does NOT beat")} linear probing");
        return string.Join("\n", lines);
    }
}
