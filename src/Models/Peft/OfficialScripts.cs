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

/// <summary>The three seed repositories' VTAB-1k scripts (SSF, SCT, GPS), and NOAH's for the LoRA, Adapter and VPT
/// baselines.</summary>
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

    /// <summary>ZhangYuanhan-AI/NOAH's LoRA baseline: <c>configs/LoRA/VTAB/slurm_train_lora_vtab.sh</c> with
    /// <c>experiments/LoRA/ViT-B_prompt_lora_8.yaml</c>, running <c>supernet_train_prompt.py</c>.</summary>
    public static OfficialScript NoahLora { get; } = Noah("LoRA", "lora", "experiments/LoRA/ViT-B_prompt_lora_8.yaml: LORA_DIM 8 in all 12 blocks; " +
        "model/supernet_vision_transformer_timm.py Attention: LoRA_a [8, C] kaiming_uniform, LoRA_b [3C, 8] zeros on the whole qkv, unscaled; --drop_rate_LoRA default 0.1 on its input",
        "lib/datasets.py: IMAGENET_DEFAULT_MEAN/STD (the script passes no --inception)");

    /// <summary>NOAH's Adapter baseline: <c>configs/Adapter/VTAB/slurm_train_adapter_vtab.sh</c> with
    /// <c>experiments/Adapter/ViT-B_prompt_adapter_8.yaml</c>.</summary>
    public static OfficialScript NoahAdapter { get; } = Noah("Adapter", "adapter", "experiments/Adapter/ViT-B_prompt_adapter_8.yaml: ADAPTER_DIM 8 in all 12 blocks; " +
        "model/module/adapter_super.py: down, QuickGELU, dropout (--drop_rate_adapter default 0.1), up, after the MLP",
        "lib/datasets.py: IMAGENET_DEFAULT_MEAN/STD (the script passes no --inception)");

    /// <summary>NOAH's VPT baseline: <c>configs/VPT/VTAB/slurm_train_vpt_vtab.sh</c> with one of
    /// <c>experiments/VPT/ViT-B_prompt_vpt_{1,5,25,50,100,200,...}.yaml</c>.</summary>
    public static OfficialScript NoahVpt { get; } = Noah("VPT", "vpt", "experiments/VPT/ViT-B_prompt_vpt_50.yaml: VISUAL_PROMPT_DIM 50 in all 12 blocks (the length the GPS paper reimplements VPT-deep with; " +
        "VPT's per-task lengths are not in these sources); {file}: --drop_rate_prompt 0.1",
        "{file}: --inception (IMAGENET_INCEPTION_MEAN/STD)", learningRate: "{file}: LR in 0.005 0.001 (a sweep; the first is taken)");

    // NOAH's shared training script for its baselines: timm's create_optimizer/create_scheduler with the script's flags
    // and supernet_train_prompt.py's argument defaults.
    static OfficialScript Noah(string folder, string name, string settings, string normalisation, string learningRate = "{file}: LR=0.005") =>
        new("ZhangYuanhan-AI/NOAH", "e9c55f3", $"configs/{folder}/VTAB/slurm_train_{name}_vtab.sh", new Dictionary<string, string>(), new Dictionary<string, string>
        {
            ["optimizer"] = "supernet_train_prompt.py: --opt default adamw; timm create_optimizer",
            ["learning rate"] = learningRate,
            ["weight decay"] = "{file}: WEIGHT_DECAY=0.0001; timm create_optimizer (no decay on 1-d parameters and biases)",
            ["batch size"] = "{file}: --batch-size=64",
            ["epochs"] = "{file}: --epochs=100; supernet_train_prompt.py: for epoch in range(args.epochs) (no cooldown epochs run)",
            ["warmup"] = "supernet_train_prompt.py: --warmup-epochs default 10, --warmup-lr default 1e-6",
            ["schedule"] = "supernet_train_prompt.py: --sched default cosine, --min-lr default 1e-5, lr_scheduler.step(epoch) after epoch epoch",
            ["drop path"] = "supernet_train_prompt.py: --drop-path default 0.1 (the script does not set it)",
            ["label smoothing"] = "{file}: --smoothing=0 --mixup=0 --cutmix=0",
            ["normalisation"] = normalisation,
            ["augmentation"] = "{file}: --no_aug --direct_resize",
            ["head width"] = "the task's classes",
            ["head init"] = "timm VisionTransformer init: head weight trunc_normal_(std=.02), bias zeros",
            ["evaluation"] = "supernet_train_prompt.py: --val_interval default 10 and the last epoch; the maximum accuracy is kept",
            ["seed"] = "supernet_train_prompt.py: --seed default 0",
            ["method settings"] = settings,
        });
}
