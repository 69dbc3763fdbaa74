namespace Engine.Models.Peft;

/// <summary>
/// An official VTAB-1k training script that recipes follow, and where in it each recipe value is written: repository,
/// commit, the per-task file, and per <c>peft vtab recipe</c> key the flag, config key or code line that sets it.
/// In <see cref="Sources"/> <c>{file}</c> stands for the task's file and <c>{folder}</c> for the repository's name of
/// the task.
/// </summary>
/// <param name="Repository">GitHub owner/name.</param>
/// <param name="Commit">The commit the values were read at.</param>
/// <param name="File">The per-task script or config, with <c>{folder}</c>.</param>
/// <param name="Folders">The repository's name of a task where it differs from ours.</param>
/// <param name="Sources">Report key → where the value is set.</param>
public sealed record OfficialScript(string Repository, string Commit, string File, IReadOnlyDictionary<string, string> Folders,
    IReadOnlyDictionary<string, string> Sources)
{
    /// <summary>The repository's name of <paramref name="task"/> (null: a placeholder).</summary>
    public string Folder(string? task) => task == null ? "<task>" : Folders.GetValueOrDefault(task, task);

    /// <summary>The task's file in the repository.</summary>
    public string FileOf(string? task) => File.Replace("{folder}", Folder(task));

    /// <summary>Where <paramref name="key"/>'s value comes from for <paramref name="task"/>: repository@commit, then the
    /// file and flag or line; the task's file alone for a key without an entry.</summary>
    public string SourceOf(string key, string? task) =>
        $"{Repository}@{Commit} " + Sources.GetValueOrDefault(key, "{file}").Replace("{file}", FileOf(task)).Replace("{folder}", Folder(task));
}

/// <summary>The three seed repositories' VTAB-1k scripts (SSF, SCT, GPS).</summary>
public static class OfficialScripts
{
    // SSF and GPS name three task folders differently from NOAH's extractor (and from us).
    static readonly Dictionary<string, string> SsfFolders = new()
    {
        ["cifar"] = "cifar_100", ["oxford_flowers102"] = "flowers102", ["oxford_iiit_pet"] = "pets",
    };

    /// <summary>dongzelian/SSF: <c>train_scripts/vit/vtab/{folder}/train_ssf.sh</c> running timm's <c>train.py</c>.</summary>
    public static OfficialScript Ssf { get; } = new("dongzelian/SSF", "e94e0e7", "train_scripts/vit/vtab/{folder}/train_ssf.sh", SsfFolders,
        TimmTrainScript("train.py", "train.py",
            ("optimizer", "{file}: --opt adamw"),
            ("learning rate", "{file}: --lr"),
            ("weight decay", "{file}: --weight-decay; train.py: create_optimizer_v2 (no decay on 1-d parameters and biases)"),
            ("batch size", "{file}: --batch-size 32 on --nproc_per_node=2"),
            ("label smoothing", "{file}: --smoothing")));

    /// <summary>FightingFighting/GPS: <c>train_scripts/vit/vtab/{folder}/train_gps.sh</c> running <c>train_gps.py</c>.</summary>
    public static OfficialScript Gps { get; } = new("FightingFighting/GPS", "72e0c31", "train_scripts/vit/vtab/{folder}/train_gps.sh", SsfFolders,
        TimmTrainScript("train_gps.py", "args.py",
            ("optimizer", "{file}: --opt adam"),
            ("learning rate", "{file}: lr="),
            ("weight decay", "{file}: --weight-decay 0"),
            ("batch size", "{file}: bz="),
            ("label smoothing", "{file}: --smoothing 0"),
            ("selection pass", "{file}: --pruning --pruning_method gradient_perCell --contrast-aug --contrastive; train_gps.py: selection loader batch_size=args.batch_size"),
            ("K", "{file}: --times_para")));

    // The lines SSF's and GPS's scripts share (both are timm's train.py with a per-task shell script; argsPy holds the
    // argument defaults), plus their own.
    static Dictionary<string, string> TimmTrainScript(string trainPy, string argsPy, params (string Key, string Source)[] own)
    {
        var sources = new Dictionary<string, string>
        {
            ["epochs"] = $"{{file}}: --epochs; {argsPy}: --cooldown-epochs default 10",
            ["warmup"] = "{file}: --warmup-epochs, --warmup-lr",
            ["schedule"] = $"{{file}}: --min-lr; {argsPy}: --sched default cosine; {trainPy}: lr_scheduler.step(epoch + 1, ...)",
            ["drop path"] = "{file}: --drop-path",
            ["normalisation"] = "timm vit_base_patch16_224_in21k default_cfg (IMAGENET_INCEPTION_MEAN/STD)",
            ["augmentation"] = "{file}: --no-aug --direct-resize",
            ["head width"] = "{file}: --num-classes",
            ["head init"] = "timm VisionTransformer init: head weight trunc_normal_(std=.02), bias zeros",
            ["evaluation"] = $"{trainPy}: validate(model, loader_eval, ...) after every epoch; the best top-1 is reported",
            ["seed"] = $"{argsPy}: --seed default 42",
        };
        foreach (var (key, source) in own) sources[key] = source;
        return sources;
    }

    /// <summary>showlab/SCT: <c>configs/model_sct/vtab/{folder}.yaml</c> and the task's line of <c>run_model_sct.sh</c>,
    /// running <c>train_model_sct.py</c>.</summary>
    public static OfficialScript Sct { get; } = new("showlab/SCT", "384cecb", "configs/model_sct/vtab/{folder}.yaml",
        new Dictionary<string, string> { ["cifar"] = "cifar100" },
        new Dictionary<string, string>
        {
            ["optimizer"] = "train_model_sct.py: AdamW(trainable, lr=args.lr, weight_decay=args.wd)",
            ["learning rate"] = "run_model_sct.sh, the --dataset {folder} line: --lr",
            ["weight decay"] = "run_model_sct.sh, the --dataset {folder} line: --wd; train_model_sct.py: one AdamW group over every trainable parameter",
            ["batch size"] = "{file}: batch_size",
            ["epochs"] = "{file}: epochs (train() runs exactly these: no cooldown)",
            ["warmup"] = "{file}: warmup_epochs; train_model_sct.py: CosineLRScheduler(warmup_lr_init=1e-6)",
            ["schedule"] = "train_model_sct.py: CosineLRScheduler(t_initial=epochs, lr_min=1e-5), scheduler.step(ep) after epoch ep",
            ["drop path"] = "run_model_sct.sh: --dpr 0.1",
            ["label smoothing"] = "{file}: labelsmoothing (LabelSmoothingCrossEntropy when > 0)",
            ["normalisation"] = "vtab.py: transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])",
            ["augmentation"] = "{file}: train_aug; vtab.py: create_transform(auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic', re_prob=0.0), RandomResizedCrop replaced by Resize((224, 224), interpolation=3)",
            ["selection pass"] = "train_model_sct.py: getSalientChannels over get_data(train_aug=False, batch_size=50)",
            ["K"] = "run_model_sct.sh: topN=96",
            ["head width"] = "{file}: class_num",
            ["head init"] = "train_model_sct.py: model.reset_classifier(config['class_num']) (a new nn.Linear)",
            ["evaluation"] = "train_model_sct.py: test() when ep % 10 == 9; the best accuracy is kept",
            ["seed"] = "train_model_sct.py: --seed default 42",
        });
}
