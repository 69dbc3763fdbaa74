namespace Engine.Models.Peft;

/// <summary>What a method's factory gets: the run's seed (initialisation of added parameters); for a method with a
/// selection pass, the selection file the pass wrote (or a trained file, which holds its selection too; LoRA reads its
/// settings from a trained file given here); and LoRA's, an adapter's or VPT's settings (null: the method's defaults).</summary>
public sealed record MethodSetup(ulong Seed = 42, string? SelectionFile = null, LoraSettings? Lora = null, AdapterSettings? Adapter = null,
    VptSettings? Vpt = null);

/// <summary>The settings of one selection pass.</summary>
/// <param name="K">Selection size (SCT: channels per site; GPS: inputs per output row).</param>
/// <param name="StageK">SCT's K per stage (a site's stage is its name before <c>.blocks.</c>); null: K everywhere.</param>
/// <param name="Seed">Seed of the shuffle, the augmentations and the train-mode masks.</param>
public sealed record SelectionSettings(int K, IReadOnlyDictionary<string, int>? StageK, ulong Seed);

/// <summary>A method's selection pass: how its batches are made, and the computation that turns them into a selection file.</summary>
public sealed record SelectionPassInfo
{
    /// <summary>Views of each image in a batch (GPS: 2, the positives of its contrastive loss; SCT: 1).</summary>
    public required int Views { get; init; }
    /// <summary>Images per batch before the views, as the reference selection scripts use; null: the recipe's training
    /// batch (GPS's <c>train_gps.py</c> passes <c>args.batch_size</c> to its selection loader).</summary>
    public required int? BatchSize { get; init; }
    /// <summary>True when the pass runs the model in train mode (stochastic depth applies; GPS), false for eval mode (SCT).</summary>
    public required bool TrainMode { get; init; }
    /// <summary>True when K may differ per stage (SCT on Swin).</summary>
    public required bool TakesStageK { get; init; }
    /// <summary>Runs the pass over the batches and writes the selection (atomically) to the path, with the metadata;
    /// returns a one-line summary of what was selected.</summary>
    public required Func<IPeftModel, IEnumerable<(Tensor Images, int[] Labels)>, SelectionSettings, string, IReadOnlyDictionary<string, string>, string> ComputeAndSave { get; init; }
    /// <summary>Writes a fixed selection of K evenly spread entries to the path (benchmarks: a step's cost does not depend
    /// on which entries are selected).</summary>
    public required Action<IPeftModel, int, string> SaveUniform { get; init; }
}

/// <summary>The synthetic suite's setting of a method (a short run of a small model; see <c>SyntheticSuite</c>).</summary>
/// <param name="LearningRate">Base learning rate.</param>
/// <param name="WeightDecay">Weight decay.</param>
/// <param name="K">Selection size (SCT: 8 of 64 channels, the papers' one-eighth; GPS: 1).</param>
public sealed record SyntheticSetting(float LearningRate, float WeightDecay, int K = 0);

/// <summary>
/// One PEFT method as every part of the project sees it: its name, what it does, the families it applies to, its recipe,
/// its factory, and its selection pass if it has one. What trains, what is saved and how it merges are the
/// <see cref="PeftMethod"/>'s own (<see cref="PeftMethod.Apply"/>, <see cref="PeftMethod.SaveTrained"/>,
/// <see cref="PeftMethod.Merge"/>).
/// </summary>
public sealed record PeftMethodInfo
{
    /// <summary>The name on the command line, in run folders and in trained files' metadata.</summary>
    public required string Name { get; init; }
    /// <summary>How messages and reports write it (<c>SSF</c>, <c>BitFit</c>, ...).</summary>
    public required string Title { get; init; }
    /// <summary>One line for help texts.</summary>
    public required string Summary { get; init; }
    /// <summary>The model families it is defined for (<c>vit</c>, <c>swin</c>, <c>convnext</c>).</summary>
    public IReadOnlyList<string> Families { get; init; } = ["vit", "swin", "convnext"];
    /// <summary>The ViT recipe for a VTAB-1k task (null: the method's default); <see cref="PeftRecipe.For"/> adds the family.</summary>
    public required Func<string?, PeftRecipe> VitRecipe { get; init; }
    /// <summary>Builds the method (apply it to a model next).</summary>
    public required Func<MethodSetup, PeftMethod> Create { get; init; }
    /// <summary>The selection pass that must run before <see cref="Create"/> (SCT, GPS), or null.</summary>
    public SelectionPassInfo? Selection { get; init; }
    /// <summary>The synthetic suite's learning rate, weight decay and K.</summary>
    public required SyntheticSetting Synthetic { get; init; }
    /// <summary>The official script the recipe's values come from (the baselines: SSF's).</summary>
    public required OfficialScript Script { get; init; }
    /// <summary>True when the learning rate is this project's choice (the baselines: the seed repositories have no VTAB
    /// script for them).</summary>
    public bool OwnLearningRate { get; init; }
    /// <summary>The pretrained checkpoint the method's official VTAB-1k runs start from.</summary>
    public required string OfficialCheckpoint { get; init; }
    /// <summary>The family of that checkpoint, as <c>--weights FAMILY=FILE</c> names it: <c>augreg</c> (SSF, GPS and the
    /// baselines on SSF's recipe) or <c>original</c> (SCT).</summary>
    public required string CheckpointFamily { get; init; }

    /// <summary>True when the method is defined for the family.</summary>
    public bool AppliesTo(string family) => Families.Contains(family);

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>
/// The registry of PEFT methods: the only place their names are written. The CLI, fine-tuning runs, the synthetic suite,
/// the benchmarks and merge look methods up here; adding a method is its file plus one entry in <see cref="All"/>.
/// </summary>
public static class PeftMethods
{
    /// <summary>Full fine-tuning: every parameter trains.</summary>
    public static PeftMethodInfo Full { get; } = Baseline("full", "full fine-tuning", "every parameter trains", 1e-3f, SubsetMethod.Full, 1e-3f);

    /// <summary>Linear probing: the head only.</summary>
    public static PeftMethodInfo Linear { get; } = Baseline("linear", "linear probing", "the head only", 5e-3f, SubsetMethod.Linear, 3e-2f);

    /// <summary>BitFit: every bias and the head.</summary>
    public static PeftMethodInfo Bias { get; } = Baseline("bias", "BitFit", "every bias and the head", 5e-3f, SubsetMethod.Bias, 3e-2f);

    /// <summary>SSF: learned scales and shifts of the features after every layer, foldable into the layers.</summary>
    public static PeftMethodInfo Ssf { get; } = new()
    {
        Name = "ssf", Title = "SSF", Summary = "SSF: scales and shifts of the features after every layer (folds into the weights)",
        VitRecipe = task => PeftRecipe.SsfScript("ssf", task, learningRate: null),
        Create = setup => new Ssf(setup.Seed),
        Script = OfficialScripts.Ssf,
        CheckpointFamily = "augreg", OfficialCheckpoint = AugRegCheckpoint,
        Synthetic = new(LearningRate: 3e-2f, WeightDecay: 1e-4f),
    };

    /// <summary>SCT: a K×K map of the salient channels on the residual stream after each block's attention.</summary>
    public static PeftMethodInfo Sct { get; } = new()
    {
        Name = "sct", Title = "SCT", Summary = "SCT: a K×K map of each block's K salient channels on the residual stream",
        Families = ["vit", "swin"], // its sites are the residual sums after attention
        VitRecipe = task => PeftRecipe.SctScript("sct", task),
        Create = setup => new Sct(SctSelection.Read(RequireSelection(setup, "sct")), setup.Seed),
        Script = OfficialScripts.Sct,
        OfficialCheckpoint = OriginalCheckpoint + " (showlab/SCT run_model_sct.sh)", CheckpointFamily = "original",
        Selection = new()
        {
            Views = 1, BatchSize = 50, TrainMode = false, TakesStageK = true,
            ComputeAndSave = (model, batches, s, path, metadata) =>
            {
                var selection = SctSelection.Compute(model, batches, s.K, s.StageK);
                SctSelection.Save(path, selection, metadata);
                var sizes = selection.Values.GroupBy(c => c.Length).OrderBy(g => g.Key).Select(g => $"{g.Count()} of {g.Key}");
                return $"{selection.Count} channel sets ({string.Join(", ", sizes)})";
            },
            SaveUniform = (model, k, path) => SctSelection.Save(path, SctSelection.Sites(model).ToDictionary(s => s.Name,
                s => Enumerable.Range(0, k).Select(i => i * (s.Channels / k)).ToArray())),
        },
        Synthetic = new(LearningRate: 3e-2f, WeightDecay: 1e-4f, K: 8),
    };

    /// <summary>GPS: the K inputs per output row of every weight with the largest contrastive gradient.</summary>
    public static PeftMethodInfo Gps { get; } = new()
    {
        Name = "gps", Title = "GPS", Summary = "GPS: the K inputs per output row of every weight with the largest contrastive gradient",
        VitRecipe = task => PeftRecipe.GpsScript("gps", task),
        Create = setup => new Gps(GpsSelection.Read(RequireSelection(setup, "gps"))),
        Script = OfficialScripts.Gps,
        CheckpointFamily = "augreg", OfficialCheckpoint = AugRegCheckpoint,
        Selection = new()
        {
            Views = 2, BatchSize = null, TrainMode = true, TakesStageK = false,
            ComputeAndSave = (model, batches, s, path, metadata) =>
            {
                var selection = GpsSelection.Compute(model, batches, s.K, s.Seed);
                GpsSelection.Save(path, selection, metadata);
                return $"{selection.Count} selections ({selection.Values.Sum(r => (long)r.Columns.Length):N0} entries)";
            },
            SaveUniform = (model, k, path) => GpsSelection.Save(path, GpsSelection.SelectedWeights(model).ToDictionary(p => p.Name!, p =>
            {
                int rows = p.Shape[0], inputs = (int)(p.Count / rows), kk = Math.Min(k, inputs);
                return new GpsRows(rows, kk, [.. Enumerable.Range(0, rows).SelectMany(o =>
                    Enumerable.Range(0, kk).Select(j => (o * 7 + j * (inputs / kk)) % inputs).Order())]);
            })),
        },
        Synthetic = new(LearningRate: 3e-2f, WeightDecay: 0f, K: 1),
    };

    /// <summary>LoRA: a trained low-rank path beside q and v of every attention (any Linear layer by name).</summary>
    public static PeftMethodInfo Lora { get; } = new()
    {
        Name = "lora", Title = "LoRA", Summary = "LoRA: a low-rank path (α/r)·B·A beside q and v of every attention, or any Linear layer",
        VitRecipe = _ => PeftRecipe.NoahScript("lora", 5e-3f, "imagenet") with { Lora = new LoraSettings { Targets = ["attn.qkv"], Dropout = 0.1f } },
        Create = setup => new Peft.Lora(setup.Lora ?? (setup.SelectionFile == null ? null : LoraSettings.FromTrainedFile(setup.SelectionFile)), setup.Seed),
        Synthetic = new(LearningRate: 1e-2f, WeightDecay: 1e-4f),
        Script = OfficialScripts.NoahLora,
        CheckpointFamily = "original", OfficialCheckpoint = OriginalCheckpoint + " (NOAH's README)",
    };

    /// <summary>The sequential bottleneck adapter after every block's MLP (bottleneck 8).</summary>
    public static PeftMethodInfo Adapter { get; } = new()
    {
        Name = "adapter", Title = "Adapter", Summary = "Adapter: a bottleneck (8) after every block's MLP, z + up(GELU(down(z)))",
        VitRecipe = _ => PeftRecipe.NoahScript("adapter", 5e-3f, "imagenet") with { Adapter = Peft.Adapter.Defaults with { Dropout = 0.1f } },
        Create = setup => new Peft.Adapter(setup.Adapter ?? AdapterFile(setup), setup.Seed),
        Synthetic = new(LearningRate: 3e-2f, WeightDecay: 1e-4f),
        Script = OfficialScripts.NoahAdapter,
        CheckpointFamily = "original", OfficialCheckpoint = OriginalCheckpoint + " (NOAH's README)",
    };

    /// <summary>AdaptFormer: a bottleneck beside every block's MLP (64, scale 0.1).</summary>
    public static PeftMethodInfo AdaptFormer { get; } = new()
    {
        Name = "adaptformer", Title = "AdaptFormer", Summary = "AdaptFormer: a bottleneck (64) beside every block's MLP, adding 0.1·up(ReLU(down(x)))",
        VitRecipe = task => PeftRecipe.SsfScript("adaptformer", task, 1e-3f) with { Adapter = Peft.AdaptFormer.Defaults },
        Create = setup => new Peft.AdaptFormer(setup.Adapter ?? AdapterFile(setup), setup.Seed),
        Synthetic = new(LearningRate: 3e-2f, WeightDecay: 1e-4f),
        Script = OfficialScripts.Ssf, OwnLearningRate = true,
        CheckpointFamily = "augreg", OfficialCheckpoint = "none official; SSF's: " + AugRegCheckpoint,
    };

    /// <summary>VPT-deep: learned prompt tokens at every block's input (ViT).</summary>
    public static PeftMethodInfo VptDeep { get; } = new()
    {
        Name = "vpt", Title = "VPT-Deep", Summary = "VPT-deep: 50 learned prompt tokens at every block of a ViT, replaced per block",
        Families = ["vit"], // Swin's variant puts prompts inside every attention window
        VitRecipe = _ => PeftRecipe.NoahScript("vpt", 5e-3f, "inception") with { Vpt = new VptSettings() },
        Create = setup => new Peft.VptDeep(setup.Vpt ?? (setup.SelectionFile == null ? null : VptSettings.FromTrainedFile(setup.SelectionFile)), setup.Seed),
        Synthetic = new(LearningRate: 1e-2f, WeightDecay: 1e-4f),
        Script = OfficialScripts.NoahVpt,
        CheckpointFamily = "original", OfficialCheckpoint = OriginalCheckpoint + " (NOAH's README)",
    };

    /// <summary>The original ViT-B/16 ImageNet-21k release (SCT's and NOAH's starting point).</summary>
    const string OriginalCheckpoint = "ViT-B/16 ImageNet-21k, the original release: ViT-B_16.npz";

    /// <summary>The checkpoint SSF's and GPS's VTAB-1k scripts start from.</summary>
    const string AugRegCheckpoint = "ViT-B/16 ImageNet-21k AugReg: B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz (the SSF and GPS repositories' models/vision_transformer.py)";

    /// <summary>Every method: the default main job's six in the papers' table order, then the other baselines.</summary>
    public static IReadOnlyList<PeftMethodInfo> All { get; } = [Full, Linear, Bias, Ssf, Sct, Gps, Lora, Adapter, AdaptFormer, VptDeep];

    /// <summary>The methods run when none are named (the main job, the VTAB suite, the step benchmark): the papers' own
    /// methods and their subset baselines. The other baselines (LoRA, ...) run when named.</summary>
    public static IReadOnlyList<PeftMethodInfo> Default { get; } = [Full, Linear, Bias, Ssf, Sct, Gps];

    /// <summary>Every method's name, in <see cref="All"/>'s order.</summary>
    public static IReadOnlyList<string> Names { get; } = [.. All.Select(m => m.Name)];

    /// <summary>The method named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">No such method; the message lists the known ones.</exception>
    public static PeftMethodInfo Get(string name) => Find(name) ??
        throw new ArgumentException($"unknown PEFT method '{name}' (known: {string.Join(", ", Names)})");

    /// <summary>The method named <paramref name="name"/>, or null.</summary>
    public static PeftMethodInfo? Find(string name) => All.FirstOrDefault(m => m.Name == name);

    /// <summary>A baseline that trains a subset of the model's own parameters, on SSF's recipe with its own learning
    /// rate (the baselines have no official VTAB script in the seed repositories).</summary>
    static PeftMethodInfo Baseline(string name, string title, string trains, float learningRate, Func<SubsetMethod> create,
        float syntheticLearningRate) => new()
    {
        Name = name, Title = title, Summary = $"{title}: {trains}",
        VitRecipe = task => PeftRecipe.SsfScript(name, task, learningRate),
        Create = _ => create(),
        Synthetic = new(LearningRate: syntheticLearningRate, WeightDecay: 1e-4f),
        Script = OfficialScripts.Ssf, OwnLearningRate = true,
        CheckpointFamily = "augreg", OfficialCheckpoint = "none official; SSF's: " + AugRegCheckpoint,
    };

    /// <summary>An adapter's settings from the trained file given as the setup's file, or null (the defaults).</summary>
    static AdapterSettings? AdapterFile(MethodSetup setup) => setup.SelectionFile == null ? null : AdapterSettings.FromTrainedFile(setup.SelectionFile);

    static string RequireSelection(MethodSetup setup, string method) => setup.SelectionFile ??
        throw new ArgumentException($"{method} needs its selection file (run its selection pass first)");
}
