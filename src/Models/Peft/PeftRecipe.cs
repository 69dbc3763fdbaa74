using System.Text.Json.Serialization;
using Engine.Imaging;
using Engine.Optim;

namespace Engine.Models.Peft;

/// <summary>The optimizer a recipe uses.</summary>
public enum OptimizerKind
{
    /// <summary>torch.optim.AdamW (decoupled weight decay).</summary>
    AdamW,
    /// <summary>torch.optim.Adam (L2 weight decay added to the gradient).</summary>
    Adam,
}

/// <summary>Which trainable parameters get weight decay.</summary>
public enum WeightDecayRule
{
    /// <summary>Every trainable parameter (SCT: biases and head included).</summary>
    All,
    /// <summary>Only parameters with more than one dimension that are not biases (timm's optim factory; for SSF this is
    /// the head weight alone).</summary>
    MatricesOnly,
    /// <summary><see cref="MatricesOnly"/> without the embeddings timm's models exclude (<c>no_weight_decay</c>:
    /// <c>pos_embed</c>, <c>cls_token</c>, Swin's <c>relative_position_bias_table</c>); used for pretraining.</summary>
    MatricesExceptEmbeddings,
}

/// <summary>The one place that decides which parameters a <see cref="WeightDecayRule"/> decays.</summary>
public static class WeightDecayRules
{
    /// <summary>True when <paramref name="p"/> gets weight decay under <paramref name="rule"/>.</summary>
    public static bool Decays(Tensor p, WeightDecayRule rule) => rule switch
    {
        WeightDecayRule.All => true,
        WeightDecayRule.MatricesOnly => IsMatrix(p),
        _ => IsMatrix(p) && p.Name is not ("pos_embed" or "cls_token") &&
             p.Name?.EndsWith("relative_position_bias_table", StringComparison.Ordinal) != true,
    };

    /// <summary>Sets each of <paramref name="optimizer"/>'s parameters' weight decay: <paramref name="weightDecay"/>
    /// where <paramref name="rule"/> decays it, else 0.</summary>
    public static void Apply(Adam optimizer, WeightDecayRule rule, float weightDecay)
    {
        foreach (var p in optimizer.Parameters) optimizer.SetWeightDecay(p, Decays(p, rule) ? weightDecay : 0f);
    }

    static bool IsMatrix(Tensor p) => p.Rank > 1 && p.Name?.EndsWith(".bias", StringComparison.Ordinal) != true;
}

/// <summary>
/// A fine-tuning recipe: every hyperparameter of the official scripts, with the paper's default
/// (<see cref="For"/>: per method, and per VTAB-1k task where the scripts differ by task). Learning rates are per
/// epoch: linear warmup then cosine, as timm's CosineLRScheduler with per-epoch stepping (<see cref="LearningRateAt"/>).
/// </summary>
public sealed record PeftRecipe
{
    /// <summary>The method (full, linear, bias, ssf, sct, gps).</summary>
    public required string Method { get; init; }
    /// <summary>Adam or AdamW.</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;
    /// <summary>Base learning rate (no scaling by batch size).</summary>
    public float LearningRate { get; init; }
    /// <summary>Weight decay.</summary>
    public float WeightDecay { get; init; }
    /// <summary>Which parameters get the weight decay.</summary>
    public WeightDecayRule WeightDecayOn { get; init; } = WeightDecayRule.MatricesOnly;
    /// <summary>Adam β₁ (torch's default in every recipe).</summary>
    public float Beta1 { get; init; } = 0.9f;
    /// <summary>Adam β₂.</summary>
    public float Beta2 { get; init; } = 0.999f;
    /// <summary>Adam ε.</summary>
    public float Epsilon { get; init; } = 1e-8f;
    /// <summary>Epochs of the cosine schedule.</summary>
    public int Epochs { get; init; } = 100;
    /// <summary>Epochs run at <see cref="MinLearningRate"/> after the schedule (timm's cooldown; SSF and GPS run 110).</summary>
    public int CooldownEpochs { get; init; } = 10;
    /// <summary>Linear warmup epochs, from <see cref="WarmupLearningRate"/>.</summary>
    public int WarmupEpochs { get; init; } = 10;
    /// <summary>Learning rate at the start of warmup.</summary>
    public float WarmupLearningRate { get; init; } = 1e-7f;
    /// <summary>The cosine's floor.</summary>
    public float MinLearningRate { get; init; } = 1e-8f;
    /// <summary>SCT's loop steps the scheduler after each epoch with the epoch just run, so epochs 0 and 1 both use
    /// t = 0 and epoch e uses t = e − 1; SSF and GPS step with epoch + 1, so epoch e uses t = e.</summary>
    public bool ScheduleLagsOneEpoch { get; init; }
    /// <summary>Images per optimizer step (drop_last: a partial batch is dropped).</summary>
    public int BatchSize { get; init; } = 64;
    /// <summary>Stochastic depth rate of the last block (rising linearly from 0).</summary>
    public float DropPath { get; init; }
    /// <summary>Label smoothing of the cross-entropy.</summary>
    public float LabelSmoothing { get; init; }
    /// <summary>Input normalisation preset: <c>inception</c> (mean = std = 0.5) or <c>imagenet</c>.</summary>
    public string Normalization { get; init; } = "inception";
    /// <summary>Flip training images horizontally with probability 0.5 (SCT, where its config sets <c>train_aug</c>).</summary>
    public bool Augment { get; init; }
    /// <summary>timm RandAugment policy applied after the flip (SCT's <c>train_aug</c>: <c>rand-m9-mstd0.5-inc1</c>), or null.</summary>
    public string? RandAugment { get; init; }

    /// <summary>The training augmentation of this recipe for images normalised by <paramref name="normalization"/>
    /// (RandAugment's fill colour is its mean).</summary>
    public TrainAugmentation TrainAugmentation(Normalization normalization) =>
        new(Augment, RandAugment == null ? null : Engine.Imaging.RandAugment.Parse(RandAugment, normalization));
    /// <summary>LoRA's rank, alpha, dropout and target layers (null for the other methods).</summary>
    public LoraSettings? Lora { get; init; }
    /// <summary>A bottleneck adapter's width, scale and dropout (Adapter, AdaptFormer; null for the other methods).</summary>
    public AdapterSettings? Adapter { get; init; }
    /// <summary>VPT-deep's prompt length and dropout (null for the other methods).</summary>
    public VptSettings? Vpt { get; init; }
    /// <summary>Selection size: SCT channels per block (96), GPS inputs per output row (1).</summary>
    public int K { get; init; }
    /// <summary>SCT's K for the sites of a stage, overriding <see cref="K"/> there (Swin: <c>{"layers.3": 192}</c>); null: K everywhere.</summary>
    public Dictionary<string, int>? StageK { get; init; }
    /// <summary>The head's width when the official config sets one other than the task's class count (SCT's
    /// smallnorb_ele config says <c>class_num: 18</c> for a 9-class task, a quirk kept for fidelity: the extra logits
    /// never match a label); null: the task's classes.</summary>
    public int? HeadClasses { get; init; }
    /// <summary>Evaluate on the test split every this many epochs (SSF and GPS: every epoch; SCT: every 10th).</summary>
    public int EvalEveryEpochs { get; init; } = 1;
    /// <summary>Seed of the run (42 in every official script).</summary>
    public ulong Seed { get; init; } = 42;

    /// <summary>Total epochs run: the schedule plus the cooldown.</summary>
    [JsonIgnore]
    public int TotalEpochs => Epochs + CooldownEpochs;

    /// <summary>The learning rate of epoch <paramref name="epoch"/> (0-based): warmup_lr + t·(base − warmup_lr)/warmup
    /// for t &lt; warmup, then min + ½(base − min)(1 + cos(π·t/epochs)), and min from t = epochs on (the cooldown).</summary>
    public float LearningRateAt(int epoch)
    {
        int t = ScheduleLagsOneEpoch ? Math.Max(0, epoch - 1) : epoch;
        if (t < WarmupEpochs) return WarmupLearningRate + t * (LearningRate - WarmupLearningRate) / WarmupEpochs;
        if (t >= Epochs) return MinLearningRate;
        return (float)(MinLearningRate + 0.5 * (LearningRate - MinLearningRate) * (1 + Math.Cos(Math.PI * t / Epochs)));
    }

    /// <summary>Adam options for this recipe (the weight decay then goes per parameter, <see cref="ConfigureWeightDecay"/>).</summary>
    [JsonIgnore]
    public AdamOptions AdamOptions => new()
    {
        LearningRate = LearningRate, Beta1 = Beta1, Beta2 = Beta2, Epsilon = Epsilon, WeightDecay = WeightDecay,
        Decoupled = Optimizer == OptimizerKind.AdamW,
    };

    /// <summary>Sets each parameter's weight decay in <paramref name="optimizer"/> by <see cref="WeightDecayOn"/>.</summary>
    public void ConfigureWeightDecay(Adam optimizer) => WeightDecayRules.Apply(optimizer, WeightDecayOn, WeightDecay);

    /// <summary>What is wrong with this recipe's values, one line each naming the field (empty when it is valid):
    /// rates and decays finite and non-negative (the learning rate positive), β in [0, 1), ε positive, at least one
    /// epoch and one image per batch, probabilities in [0, 1), evaluation every N ≥ 1 epochs, a known method and
    /// normalisation.</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        void Require(bool ok, string field, object value, string rule)
        {
            if (!ok) problems.Add($"{field} {value} {rule}");
        }
        static bool Finite(float v) => float.IsFinite(v);
        Require(PeftMethods.Find(Method ?? "") != null, nameof(Method), $"'{Method}'", $"is not a method ({string.Join(", ", PeftMethods.Names)})");
        Require(Finite(LearningRate) && LearningRate > 0, nameof(LearningRate), LearningRate, "must be a positive number");
        Require(Finite(WeightDecay) && WeightDecay >= 0, nameof(WeightDecay), WeightDecay, "must be a number ≥ 0");
        Require(Finite(WarmupLearningRate) && WarmupLearningRate >= 0, nameof(WarmupLearningRate), WarmupLearningRate, "must be a number ≥ 0");
        Require(Finite(MinLearningRate) && MinLearningRate >= 0, nameof(MinLearningRate), MinLearningRate, "must be a number ≥ 0");
        Require(Beta1 is >= 0 and < 1, nameof(Beta1), Beta1, "must lie in [0, 1)");
        Require(Beta2 is >= 0 and < 1, nameof(Beta2), Beta2, "must lie in [0, 1)");
        Require(Finite(Epsilon) && Epsilon > 0, nameof(Epsilon), Epsilon, "must be a positive number");
        Require(Epochs is >= 1 and <= MaxEpochs, nameof(Epochs), Epochs, $"must lie in [1, {MaxEpochs}]");
        Require(CooldownEpochs is >= 0 and <= MaxEpochs, nameof(CooldownEpochs), CooldownEpochs, $"must lie in [0, {MaxEpochs}]");
        Require(WarmupEpochs is >= 0 and <= MaxEpochs, nameof(WarmupEpochs), WarmupEpochs, $"must lie in [0, {MaxEpochs}]");
        Require(BatchSize is >= 1 and <= MaxBatchSize, nameof(BatchSize), BatchSize, $"must lie in [1, {MaxBatchSize}]");
        Require(DropPath is >= 0 and < 1, nameof(DropPath), DropPath, "must lie in [0, 1)");
        Require(LabelSmoothing is >= 0 and < 1, nameof(LabelSmoothing), LabelSmoothing, "must lie in [0, 1)");
        Require(Normalization is "inception" or "imagenet", nameof(Normalization), $"'{Normalization}'", "must be inception or imagenet");
        if (RandAugment != null)
            try { Engine.Imaging.RandAugment.Parse(RandAugment, Imaging.Normalization.Inception); }
            catch (ArgumentException e) { problems.Add($"{nameof(RandAugment)}: {e.Message}"); }
        Require(K >= 0, nameof(K), K, "must be ≥ 0");
        foreach (var (stage, k) in StageK ?? []) Require(k >= 1, $"{nameof(StageK)}[{stage}]", k, "must be ≥ 1");
        if (Lora != null) problems.AddRange(Lora.Problems());
        if (Adapter != null) problems.AddRange(Adapter.Problems());
        if (Vpt != null) problems.AddRange(Vpt.Problems());
        Require(EvalEveryEpochs >= 1, nameof(EvalEveryEpochs), EvalEveryEpochs, "must be ≥ 1");
        Require(HeadClasses is null or (>= 1 and <= 1_000_000), nameof(HeadClasses), HeadClasses!, "must lie in [1, 1000000]");
        return problems;
    }

    /// <summary>The most epochs a recipe may ask for (schedule, warmup or cooldown).</summary>
    public const int MaxEpochs = 100_000;

    /// <summary>The largest batch a recipe may ask for.</summary>
    public const int MaxBatchSize = 1 << 16;

    /// <summary>The VTAB-1k task folder names, in the papers' column order (Natural, Specialized, Structured).</summary>
    public static IReadOnlyList<string> VtabTasks { get; } = [.. Engine.Data.VtabTasks.All.Select(t => t.Name)];

    // SCT per task (showlab/SCT run_model_sct.sh and configs/model_sct/vtab/*.yaml): lr, wd, train_aug, label smoothing.
    static readonly Dictionary<string, (float Lr, float Wd, bool Aug, float Smoothing)> SctTasks = new()
    {
        ["cifar"] = (0.013f, 1.0f, false, 0.1f), ["caltech101"] = (0.006f, 0.35f, false, 0.1f), ["dtd"] = (0.0032f, 0.04f, true, 0.1f),
        ["oxford_flowers102"] = (0.05f, 0.11f, false, 0.1f), ["oxford_iiit_pet"] = (0.0007f, 0.8f, true, 0.1f), ["svhn"] = (0.075f, 0.03f, true, 0.1f),
        ["sun397"] = (0.0017f, 0.01f, false, 0.1f), ["patch_camelyon"] = (0.0072f, 0.002f, true, 0.1f), ["eurosat"] = (0.06f, 0.001f, true, 0.1f),
        ["resisc45"] = (0.01f, 0.01f, true, 0.1f), ["diabetic_retinopathy"] = (0.004f, 0.0003f, true, 0.1f), ["clevr_count"] = (0.0033f, 0.01f, true, 0f),
        ["clevr_dist"] = (0.0018f, 0.005f, true, 0f), ["dmlab"] = (0.009f, 0.1f, true, 0f), ["kitti"] = (0.0072f, 0.0001f, true, 0.1f),
        ["dsprites_loc"] = (0.003f, 0.001f, false, 0f), ["dsprites_ori"] = (0.01f, 0.05f, false, 0f), ["smallnorb_azi"] = (0.0062f, 0.005f, false, 0f),
        ["smallnorb_ele"] = (0.0011f, 0.0005f, false, 0f),
    };

    // SSF per task (dongzelian/SSF train_scripts/vit/vtab/*/train_ssf.sh): lr, wd, drop path.
    static readonly Dictionary<string, (float Lr, float Wd, float DropPath)> SsfTasks = new()
    {
        ["cifar"] = (5e-3f, 5e-5f, 0f), ["caltech101"] = (1e-3f, 5e-2f, 0.1f), ["dtd"] = (5e-3f, 5e-5f, 0f), ["oxford_flowers102"] = (5e-3f, 5e-5f, 0f),
        ["oxford_iiit_pet"] = (5e-3f, 5e-5f, 0f), ["svhn"] = (1e-2f, 5e-5f, 0f), ["sun397"] = (5e-3f, 5e-5f, 0f), ["patch_camelyon"] = (5e-3f, 5e-5f, 0f),
        ["eurosat"] = (3e-3f, 5e-2f, 0.2f), ["resisc45"] = (2e-3f, 5e-5f, 0.1f), ["diabetic_retinopathy"] = (5e-3f, 5e-5f, 0.2f),
        ["clevr_count"] = (2e-3f, 5e-2f, 0.1f), ["clevr_dist"] = (5e-2f, 5e-2f, 0.1f), ["dmlab"] = (5e-3f, 5e-5f, 0.1f), ["kitti"] = (1e-2f, 5e-5f, 0f),
        ["dsprites_loc"] = (1e-2f, 5e-5f, 0f), ["dsprites_ori"] = (5e-3f, 5e-5f, 0.2f), ["smallnorb_azi"] = (2e-2f, 5e-5f, 0.1f),
        ["smallnorb_ele"] = (5e-3f, 5e-2f, 0.2f),
    };

    // GPS per task (FightingFighting/GPS train_scripts/vit/vtab/*/train_gps.sh): batch, lr, drop path, K.
    static readonly Dictionary<string, (int Batch, float Lr, float DropPath, int K)> GpsTasks = new()
    {
        ["cifar"] = (32, 0.01f, 0f, 1), ["caltech101"] = (16, 0.002f, 0f, 1), ["dtd"] = (16, 0.002f, 0f, 1), ["oxford_flowers102"] = (16, 0.002f, 0f, 1),
        ["oxford_iiit_pet"] = (32, 0.003f, 0f, 1), ["svhn"] = (32, 0.005f, 0f, 1), ["sun397"] = (16, 0.0025f, 0f, 1), ["patch_camelyon"] = (32, 0.004f, 0f, 2),
        ["eurosat"] = (16, 0.002f, 0f, 1), ["resisc45"] = (16, 0.0015f, 0.1f, 1), ["diabetic_retinopathy"] = (32, 0.002f, 0.2f, 1),
        ["clevr_count"] = (16, 0.0003f, 0.1f, 1), ["clevr_dist"] = (16, 0.002f, 0.1f, 1), ["dmlab"] = (16, 0.0015f, 0.1f, 1), ["kitti"] = (16, 0.001f, 0f, 1),
        ["dsprites_loc"] = (32, 0.007f, 0f, 1), ["dsprites_ori"] = (16, 0.0005f, 0.2f, 1), ["smallnorb_azi"] = (32, 0.003f, 0.1f, 1),
        ["smallnorb_ele"] = (32, 0.0003f, 0.2f, 1),
    };

    /// <summary>
    /// The recipe of <paramref name="method"/>, with <paramref name="task"/>'s values from the official scripts when a
    /// VTAB-1k task is named. Without a task: the value most tasks use (SSF: lr 5e-3, wd 5e-5; GPS: batch 16, lr 2e-3,
    /// K 1), or for SCT, whose tasks share none, the median over tasks (lr 6.2e-3, wd 0.01). The baselines (full,
    /// linear, bias) have no official VTAB script in these repositories; they use SSF's recipe and the learning rates
    /// noted here (our choice: full 1e-3, linear and bias 5e-3).
    /// </summary>
    /// <param name="method">full, linear, bias, ssf, sct or gps.</param>
    /// <param name="task">A VTAB-1k task name, or null.</param>
    /// <param name="family">The model family (<c>vit</c>, <c>swin</c>, <c>convnext</c>): the SSF and GPS repositories
    /// normalise Swin's and ConvNeXt's inputs with ImageNet statistics, ViT's with the inception ones.</param>
    /// <exception cref="ArgumentException">An unknown method, task or family; the message lists the known ones.</exception>
    public static PeftRecipe For(string method, string? task = null, string family = "vit")
    {
        if (family is not ("vit" or "swin" or "convnext"))
            throw new ArgumentException($"unknown model family '{family}' (known: vit, swin, convnext)", nameof(family));
        var recipe = ForVit(method, task);
        if (recipe.Lora != null && family == "convnext") recipe = recipe with { Lora = recipe.Lora with { Targets = LoraSettings.For(family).Targets } };
        return family == "vit" ? recipe : recipe with { Normalization = "imagenet" };
    }

    static PeftRecipe ForVit(string method, string? task)
    {
        if (task != null && !VtabTasks.Contains(task))
            throw new ArgumentException($"unknown VTAB-1k task '{task}' (known: {string.Join(", ", VtabTasks)})", nameof(task));
        var info = PeftMethods.Find(method) ??
            throw new ArgumentException($"unknown PEFT method '{method}' (known: {string.Join(", ", PeftMethods.Names)})", nameof(method));
        return info.VitRecipe(task);
    }

    /// <summary>The RandAugment policy of SCT's <c>train_aug</c> (showlab/SCT vtab.py: timm <c>create_transform</c> with
    /// <c>auto_augment='rand-m9-mstd0.5-inc1'</c>, <c>interpolation='bicubic'</c>, no random erasing; its colour jitter
    /// is off because timm applies it only without auto-augment).</summary>
    public const string SctRandAugment = "rand-m9-mstd0.5-inc1";

    /// <summary>SCT's script for <paramref name="task"/> (null: the median over tasks).</summary>
    internal static PeftRecipe SctScript(string method, string? task)
    {
        var sct = task == null ? (Lr: 0.0062f, Wd: 0.01f, Aug: false, Smoothing: 0.1f) : SctTasks[task];
        return new PeftRecipe
        {
            Method = method, LearningRate = sct.Lr, WeightDecay = sct.Wd, WeightDecayOn = WeightDecayRule.All, CooldownEpochs = 0,
            WarmupLearningRate = 1e-6f, MinLearningRate = 1e-5f, ScheduleLagsOneEpoch = true, DropPath = 0.1f,
            LabelSmoothing = sct.Smoothing, Normalization = "imagenet", Augment = sct.Aug, RandAugment = sct.Aug ? SctRandAugment : null, K = SctSelection.DefaultK, EvalEveryEpochs = 10,
            HeadClasses = task == "smallnorb_ele" ? 18 : null, // configs/model_sct/vtab/smallnorb_ele.yaml: class_num 18
        };
    }

    /// <summary>GPS's script for <paramref name="task"/> (null: the values most tasks use).</summary>
    internal static PeftRecipe GpsScript(string method, string? task)
    {
        var gps = task == null ? (Batch: 16, Lr: 0.002f, DropPath: 0f, K: GpsSelection.DefaultK) : GpsTasks[task];
        return new PeftRecipe
        {
            Method = method, Optimizer = OptimizerKind.Adam, LearningRate = gps.Lr, WeightDecay = 0f, BatchSize = gps.Batch,
            DropPath = gps.DropPath, K = gps.K,
        };
    }

    /// <summary>NOAH's baseline script (the same values for every VTAB-1k task): AdamW, batch 64, 100 epochs with no
    /// cooldown, 10 warmup epochs from 1e-6, cosine to 1e-5 stepped one epoch late, weight decay 1e-4, drop path 0.1, no
    /// smoothing or augmentation, evaluation every 10 epochs, seed 0.</summary>
    internal static PeftRecipe NoahScript(string method, float learningRate, string normalization) => new()
    {
        Method = method, LearningRate = learningRate, WeightDecay = 1e-4f, BatchSize = 64, Epochs = 100, CooldownEpochs = 0,
        WarmupEpochs = 10, WarmupLearningRate = 1e-6f, MinLearningRate = 1e-5f, ScheduleLagsOneEpoch = true, DropPath = 0.1f,
        Normalization = normalization, EvalEveryEpochs = 10, Seed = 0,
    };

    /// <summary>SSF's script for <paramref name="task"/> (null: the values most tasks use), with its learning rate or
    /// <paramref name="learningRate"/> (the baselines, which share SSF's recipe).</summary>
    internal static PeftRecipe SsfScript(string method, string? task, float? learningRate)
    {
        var ssf = task == null ? (Lr: 5e-3f, Wd: 5e-5f, DropPath: 0f) : SsfTasks[task];
        return new PeftRecipe { Method = method, LearningRate = learningRate ?? ssf.Lr, WeightDecay = ssf.Wd, DropPath = ssf.DropPath };
    }
}
