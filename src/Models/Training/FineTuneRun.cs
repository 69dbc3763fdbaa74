using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using Engine.Autograd;
using Engine.Checkpoints;
using Engine.Data;
using Engine.Imaging;
using Engine.IO;
using Engine.Kernels;
using Engine.Models.Peft;
using Engine.Optim;

namespace Engine.Models.Training;

/// <summary>One epoch's line in the run's <c>log.jsonl</c>.</summary>
public sealed record EpochLog(int Epoch, float LearningRate, double Loss, double TrainAccuracy, double? TestAccuracy,
    double ImagesPerSecond, double Seconds);

/// <summary>The outcome of a finished run (<c>result.json</c>). Accuracies are top-1 % on the test split.</summary>
public sealed record RunResult(string Task, string Method, int Epochs, double FinalAccuracy, double BestAccuracy, int BestEpoch,
    long TrainableParameters, double Seconds, string? Weights = null, string? WeightsSha256 = null)
{
    /// <summary>Reads a run folder's result.json, or null when the run has not finished.</summary>
    public static RunResult? Read(string runDir)
    {
        string path = Path.Combine(runDir, "result.json");
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<RunResult>(File.ReadAllText(path), RunConfig.Json);
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(path, $"not a valid run result ({e.Message})", e);
        }
    }
}

/// <summary>Where a running fine-tune is, for live progress.</summary>
public readonly record struct RunProgress(int Epoch, int TotalEpochs, long StepsDone, long TotalSteps, double ImagesPerSecond, double EtaSeconds, double Loss);

/// <summary>A run's loss became NaN or infinite; the last good checkpoint is kept.</summary>
public sealed class DivergedException(string message) : ArithmeticException(message);

/// <summary>How to execute a run (none of it changes the result).</summary>
public sealed record RunOptions
{
    /// <summary>Continue the run in the folder from its last checkpoint.</summary>
    public bool Resume { get; init; }
    /// <summary>Replace a run the folder already holds (its files are deleted first).</summary>
    public bool Force { get; init; }
    /// <summary>Where decoded, resized images are cached.</summary>
    public required string CacheDir { get; init; }
    /// <summary>Threads for image decoding.</summary>
    public int DecodeThreads { get; init; } = 2;
    /// <summary>Informational lines (setup, selection, per-epoch summaries).</summary>
    public Action<string>? Log { get; init; }
    /// <summary>Called after every training step.</summary>
    public Action<RunProgress>? Progress { get; init; }
    /// <summary>Stops the run between steps (Ctrl-C); the last checkpoint stays and <c>--resume</c> continues.</summary>
    public CancellationToken Cancel { get; init; }
}

/// <summary>
/// A durable fine-tuning run of one method on one task (the VTAB-1k protocol): train on the train split with the
/// recipe's optimizer, per-epoch schedule, batch size (drop_last), label smoothing and drop path; evaluate top-1 on the
/// test split every <see cref="PeftRecipe.EvalEveryEpochs"/> epochs and after the last; report the final and the best
/// accuracy. The run folder holds <c>config.json</c>, <c>log.jsonl</c> (one line per epoch), the SCT/GPS
/// <c>selection.safetensors</c>, a checkpoint after every epoch (<c>checkpoint/epoch-NNNN</c>: the trained part and the
/// optimizer state; <c>state.json</c> names the latest), and at the end <c>trained.safetensors</c> and
/// <c>result.json</c>. Every file is written atomically. A run interrupted at any point resumes from its last
/// checkpoint and ends with the same result as an uninterrupted one (on the CPU, bit for bit): the shuffles,
/// augmentations (flip, RandAugment) and drop-path masks are drawn from (seed, epoch, step), never from a stream that a
/// restart would reset.
/// </summary>
public static class FineTuneRun
{
    /// <summary>state.json: epochs done, the checkpoint naming them, their log, the time spent, and for fp16 runs the loss
    /// scaler where that epoch left it (so a resumed run continues with the same scale).</summary>
    internal sealed record RunState(int EpochsDone, string? Checkpoint, List<EpochLog> Log, double Seconds, float? LossScale = null,
        int LossScaleGoodSteps = 0);

    /// <summary>Executes (or resumes) the run in <paramref name="runDir"/> on <paramref name="device"/>.</summary>
    /// <exception cref="DivergedException">The loss became NaN or infinite.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the last checkpoint is kept.</exception>
    public static RunResult Execute(RunConfig config, string runDir, Device device, RunOptions options)
    {
        runDir = Path.GetFullPath(runDir);
        if (options.Resume && options.Force) throw new ArgumentException("--resume continues a run and --force replaces it: give one");
        Directory.CreateDirectory(runDir);
        using var runLock = RunLock.Acquire(runDir);
        string configPath = Path.Combine(runDir, "config.json"), statePath = Path.Combine(runDir, "state.json");
        var log = options.Log ?? (_ => { });
        using var choices = device.ReportAttentionChoices(choice => log(choice.ToString())); // GPS's and SCT's selection trains too
        if (options.Resume)
        {
            if (!File.Exists(configPath)) throw new InvalidOperationException($"{runDir}: nothing to resume (no config.json)");
            config = RunConfig.Load(RunFile(configPath));
        }
        else
        {
            if (File.Exists(configPath) && !options.Force)
                throw new InvalidOperationException($"{runDir} already holds a run; resume it (--resume), replace it (--force) or choose another run folder");
            // A run exists once its config.json does: without one, files here are a failed start's, and are replaced.
            DeleteRunFiles(runDir);
            config.Validate();
        }
        if (RunResult.Read(runDir) is { } done) return done;
        var recipe = config.Recipe;
        using var precision = device.Kernels.UseGemmPrecision(config.Precision);
        var state = File.Exists(statePath) ? ReadState(RunFile(statePath), runDir, recipe.TotalEpochs) : new RunState(0, null, [], 0);

        using var model = ImageModels.Create(device, config.Model, Math.Max(config.Classes, recipe.HeadClasses ?? 0), recipe.DropPath, recipe.Seed);
        if (model.InChannels != 3) throw new ArgumentException($"model {config.Model}: the images are RGB but the model has in_chans {model.InChannels}");
        if (config.Weights != null) model.Load(config.Weights, LoadMode.NewHead);
        int size = model.ImageSize;
        var normalization = Normalization.FromName(recipe.Normalization);
        var augmentation = recipe.TrainAugmentation(normalization);
        var trainList = ImageList.Read(config.TaskFolder, config.TrainSplit, config.Classes);
        var testList = ImageList.Read(config.TaskFolder, config.TestSplit, config.Classes);
        log($"{config.Task}: {trainList.Count} {config.TrainSplit} and {testList.Count} {config.TestSplit} images, {config.Classes} classes");
        using var train = OpenCache(trainList, size, options, log);
        using var test = OpenCache(testList, size, options, log);

        using var method = CreateMethod(config, model, trainList, normalization, RunFile(Path.Combine(runDir, "selection.safetensors")), log);
        method.Apply(model);
        using var opt = new Adam(method.Trainable(model), recipe.AdamOptions);
        recipe.ConfigureWeightDecay(opt);
        long trainable = method.TrainableCount(model);
        // Everything the run needs has been checked (model, checkpoint, data, method): only now does the folder hold a run.
        if (!options.Resume) config.Save(configPath);
        if (state.Checkpoint != null)
        {
            string dir = Path.Combine(runDir, state.Checkpoint);
            method.LoadTrained(model, RunFile(Path.Combine(dir, "trained.safetensors")));
            opt.LoadState(RunFile(Path.Combine(dir, "optimizer.safetensors")));
            log($"resumed after epoch {state.EpochsDone} from {dir}");
        }
        log($"{method.Name}: {trainable:N0} trainable parameters; {recipe.TotalEpochs} epochs ({recipe.Epochs} + {recipe.CooldownEpochs} cooldown at lr {recipe.MinLearningRate:G3}) of batch {recipe.BatchSize}, lr {recipe.LearningRate:G3}, " +
            $"wd {recipe.WeightDecay:G3} ({recipe.Optimizer}), on {device}" +
            (config.Precision == Precision.FP32 ? "" : $", GEMM operands in {config.Precision.Name()}{(config.Precision == Precision.FP16 ? " with loss scaling" : "")}") +
            (config.CudaGraph && device is CudaDevice ? ", steps replayed from a CUDA graph" : ""));

        int stepsPerEpoch = Math.Max(1, train.Count / recipe.BatchSize);
        long totalSteps = (long)stepsPerEpoch * recipe.TotalEpochs, stepsDone = (long)stepsPerEpoch * state.EpochsDone;
        var clock = Stopwatch.StartNew();
        double secondsBefore = state.Seconds;
        using var step = new TrainStep(opt)
        {
            Context = $"{config.Task}/{method.Name}", Steps = stepsDone, CudaGraph = config.CudaGraph, Weights = model.Parameters,
            LossScaler = config.Precision == Precision.FP16 ? new LossScaler(state.LossScale ?? 65536f, state.LossScaleGoodSteps) : null,
        };
        bool copiesDroppedSaid = false;
        for (int epoch = state.EpochsDone; epoch < recipe.TotalEpochs; epoch++)
        {
            var epochClock = Stopwatch.StartNew();
            float lr = recipe.LearningRateAt(epoch);
            opt.LearningRate = lr;
            var batches = Batching.Shuffled(train.Count, recipe.BatchSize, CounterRng.Hash(recipe.Seed, (ulong)epoch));
            string hint = $"epoch {epoch + 1}, lr {lr:G3}; " +
                (state.Checkpoint == null ? "no epoch had finished, so nothing was checkpointed" : $"the last good checkpoint ({state.Checkpoint}) is kept") +
                "; try a lower learning rate";
            double lossSum = 0;
            int correct = 0, seen = 0;
            foreach (var order in batches)
            {
                options.Cancel.ThrowIfCancellationRequested();
                ulong stepSeed = CounterRng.Hash(recipe.Seed ^ 0x7EA1, (ulong)stepsDone);
                using var images = Batch(train, order, normalization, device, augmentation, stepSeed);
                var labels = order.Select(i => train.Labels[i]).ToArray();
                using var targets = Tensor.FromArray(device, labels, labels.Length);
                float value = step.Run(images, targets, x => model.Forward(x, trainSeed: stepSeed), (logits, t) => Ops.CrossEntropy(logits, t, recipe.LabelSmoothing),
                    logits => correct += CountCorrect(logits, labels), hint);
                lossSum += value * labels.Length;
                seen += labels.Length;
                stepsDone++;
                double rate = (stepsDone - (long)stepsPerEpoch * state.EpochsDone) * recipe.BatchSize / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                options.Progress?.Invoke(new RunProgress(epoch + 1, recipe.TotalEpochs, stepsDone, totalSteps, rate,
                    (totalSteps - stepsDone) * recipe.BatchSize / Math.Max(rate, 1e-9), lossSum / seen));
            }
            if (step.WeightCopiesDropped is { } dropped && !copiesDroppedSaid)
            {
                log(dropped);
                copiesDroppedSaid = true;
            }
            bool last = epoch == recipe.TotalEpochs - 1;
            double? accuracy = null;
            if (last || (epoch + 1) % recipe.EvalEveryEpochs == 0)
                using (step.HoldWeightCopies()) // the products read the steps' 16-bit copies of the weights here too
                    accuracy = Evaluate(model, test, normalization, config.EvalBatchSize, device, options.Cancel);
            var entry = new EpochLog(epoch + 1, lr, lossSum / seen, 100.0 * correct / seen, accuracy, seen / epochClock.Elapsed.TotalSeconds, epochClock.Elapsed.TotalSeconds);
            state = Checkpoint(runDir, state, entry, method, model, opt, secondsBefore + clock.Elapsed.TotalSeconds, step.LossScaler);
            log($"epoch {entry.Epoch}/{recipe.TotalEpochs}: loss {entry.Loss:F4}, train {entry.TrainAccuracy:F1}%" +
                (accuracy is double a ? $", test {a:F2}%" : "") + $", lr {lr:G3}, {entry.ImagesPerSecond:F1} img/s");
        }
        method.SaveTrained(model, Path.Combine(runDir, "trained.safetensors"));
        var evals = state.Log.Where(e => e.TestAccuracy.HasValue).ToList();
        var bestEval = evals.MaxBy(e => e.TestAccuracy!.Value)!;
        var result = new RunResult(config.Task, method.Name, recipe.TotalEpochs, evals[^1].TestAccuracy!.Value, bestEval.TestAccuracy!.Value,
            bestEval.Epoch, trainable, state.Seconds, config.Weights == null ? null : Path.GetFileName(config.Weights),
            config.Weights == null ? null : Sha256(config.Weights));
        AtomicFile.Write(Path.Combine(runDir, "result.json"), s => JsonSerializer.Serialize(s, result, RunConfig.Json));
        return result;
    }

    /// <summary>Lower-case hex SHA-256 of a file (which backbone a run started from, for the report).</summary>
    static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(f)).ToLowerInvariant();
    }

    static ImageCache OpenCache(ImageList list, int size, RunOptions options, Action<string> log)
    {
        var clock = Stopwatch.StartNew();
        int lastReported = 0;
        return ImageCache.Open(list, size, options.CacheDir, options.DecodeThreads, (done, total) =>
        {
            if (done == total || done - lastReported >= Math.Max(256, total / 10))
            {
                log($"caching {Path.GetFileName(list.ListFile)}: {done}/{total} images decoded and resized ({done / clock.Elapsed.TotalSeconds:F0}/s)");
                lastReported = done;
            }
        });
    }

    /// <summary>The method, with its selection when it has a pass (SCT, GPS): read from the run folder, or computed on the
    /// train split (decoding the original images, as the reference selection scripts) and saved there first.</summary>
    static PeftMethod CreateMethod(RunConfig config, IImageClassifier model, ImageList trainList, Normalization normalization,
        string selectionPath, Action<string> log)
    {
        var recipe = config.Recipe;
        var info = PeftMethods.Get(recipe.Method);
        if (info.Selection == null) return info.Create(new MethodSetup(recipe.Seed, Lora: recipe.Lora, Adapter: recipe.Adapter, Vpt: recipe.Vpt));
        if (!File.Exists(selectionPath))
        {
            var items = trainList.Files.Zip(trainList.Labels).ToList();
            var clock = Stopwatch.StartNew();
            int batch = SelectionPass.BatchSizeOf(info, recipe);
            var metadata = new Dictionary<string, string>
            {
                ["k"] = recipe.K.ToString(), ["seed"] = recipe.Seed.ToString(), ["task"] = config.Task, ["batch_size"] = batch.ToString(),
            };
            string summary = SelectionPass.Run(info, model, items, new SelectionSettings(recipe.K, recipe.StageK, recipe.Seed), normalization, selectionPath,
                metadata, batch);
            log($"{info.Name} selection (K = {recipe.K}, batches of {batch}) over {items.Count} images in {clock.Elapsed.TotalSeconds:F1} s: {summary} → {selectionPath}");
        }
        return info.Create(new MethodSetup(recipe.Seed, selectionPath));
    }

    static Tensor Batch(ImageCache cache, int[] indices, Normalization normalization, Device device, TrainAugmentation? augmentation = null, ulong seed = 0)
    {
        var x = new float[(long)indices.Length * cache.ImageBytes];
        cache.FillBatch(indices, normalization, x, augmentation, seed);
        return Tensor.FromArray(device, x, indices.Length, 3, cache.Height, cache.Width);
    }

    static int CountCorrect(Tensor logits, int[] labels) => Batching.CountCorrect(logits.ToArray(), logits.Shape[1], labels);

    /// <summary>Top-1 accuracy (%) on every image of <paramref name="cache"/>, streamed in batches (eval mode).</summary>
    public static double Evaluate(IImageClassifier model, ImageCache cache, Normalization normalization, int batchSize, Device device,
        CancellationToken cancel = default)
    {
        using var _ = Tape.NoGrad();
        int correct = 0;
        for (int start = 0; start < cache.Count; start += batchSize)
        {
            cancel.ThrowIfCancellationRequested();
            var indices = Enumerable.Range(start, Math.Min(batchSize, cache.Count - start)).ToArray();
            using var images = Batch(cache, indices, normalization, device);
            using var logits = model.Forward(images);
            correct += CountCorrect(logits, [.. indices.Select(i => cache.Labels[i])]);
        }
        return 100.0 * correct / cache.Count;
    }

    /// <summary>Writes the epoch's checkpoint folder, then state.json naming it (the commit point), then log.jsonl, then
    /// removes the previous checkpoint.</summary>
    static RunState Checkpoint(string runDir, RunState state, EpochLog entry, PeftMethod method, IImageClassifier model, Adam opt, double seconds,
        LossScaler? scaler)
    {
        string name = CheckpointName(entry.Epoch), dir = Path.Combine(runDir, name);
        Directory.CreateDirectory(dir);
        method.SaveTrained(model, Path.Combine(dir, "trained.safetensors"));
        opt.SaveState(Path.Combine(dir, "optimizer.safetensors"));
        var next = new RunState(entry.Epoch, name, [.. state.Log, entry], seconds, scaler?.Scale, scaler?.GoodSteps ?? 0);
        AtomicFile.Write(Path.Combine(runDir, "state.json"), s => JsonSerializer.Serialize(s, next, RunConfig.Json));
        AtomicFile.Write(Path.Combine(runDir, "log.jsonl"), s =>
        {
            var compact = new JsonSerializerOptions(RunConfig.Json) { WriteIndented = false, DefaultIgnoreCondition = JsonIgnoreCondition.Never };
            foreach (var line in next.Log)
            {
                JsonSerializer.Serialize(s, line, compact);
                s.WriteByte((byte)'\n');
            }
        });
        if (state.Checkpoint != null && state.Checkpoint != name) Directory.Delete(Path.Combine(runDir, state.Checkpoint), recursive: true);
        return next;
    }

    /// <summary>Reads and checks state.json: the epochs done lie in [0, total] with one log line each, and the checkpoint
    /// it names is <c>checkpoint/epoch-NNNN</c> of the last epoch done, a real folder inside the run folder (never a link,
    /// never a path that leaves it: a resume deletes the previous checkpoint, so the state must not name anything else).</summary>
    internal static RunState ReadState(string path, string runDir, int totalEpochs)
    {
        RunState? state;
        try
        {
            state = JsonSerializer.Deserialize<RunState>(File.ReadAllText(path), RunConfig.Json);
        }
        catch (JsonException e)
        {
            throw new InvalidInputException(path, $"not a valid run state ({e.Message}); the run cannot be resumed", e);
        }
        if (state == null) throw new InvalidInputException(path, "empty run state; the run cannot be resumed");
        if (state.EpochsDone < 0 || state.EpochsDone > totalEpochs)
            throw new InvalidInputException(path, $"EpochsDone {state.EpochsDone} is outside [0, {totalEpochs}] (the run's epochs)");
        if (state.Log == null || state.Log.Count != state.EpochsDone || state.Log.Any(e => e == null))
            throw new InvalidInputException(path, $"Log must hold one entry per epoch done ({state.EpochsDone}), it holds {state.Log?.Count.ToString() ?? "null"}");
        if (!double.IsFinite(state.Seconds) || state.Seconds < 0) throw new InvalidInputException(path, $"Seconds {state.Seconds} is not a duration");
        if (state.LossScale is float scale && !(scale > 0 && float.IsFinite(scale)))
            throw new InvalidInputException(path, $"LossScale {scale} is not a positive finite loss scale");
        if (state.LossScaleGoodSteps < 0) throw new InvalidInputException(path, $"LossScaleGoodSteps {state.LossScaleGoodSteps} is negative");
        if (state.EpochsDone == 0 ? state.Checkpoint != null : state.Checkpoint != CheckpointName(state.EpochsDone))
            throw new InvalidInputException(path, $"Checkpoint '{state.Checkpoint}' is not the run's own checkpoint of epoch {state.EpochsDone} " +
                                                  $"({(state.EpochsDone == 0 ? "none" : CheckpointName(state.EpochsDone))})");
        if (state.Checkpoint != null) RequireRealFolder(runDir, state.Checkpoint, path);
        return state;
    }

    /// <summary>A file of the run folder, refused when it is a symbolic link (the run never writes one, so a link was
    /// planted to make the run read elsewhere).</summary>
    /// <summary>The files a run writes (never anything else the folder holds).</summary>
    static void DeleteRunFiles(string runDir)
    {
        foreach (var name in new[] { "config.json", "state.json", "log.jsonl", "selection.safetensors", "trained.safetensors", "result.json" })
            File.Delete(Path.Combine(runDir, name));
        string checkpoints = Path.Combine(runDir, "checkpoint");
        if (Directory.Exists(checkpoints) && new DirectoryInfo(checkpoints).LinkTarget == null) Directory.Delete(checkpoints, recursive: true);
        else if (new FileInfo(checkpoints).LinkTarget != null) File.Delete(checkpoints);
    }

    static string RunFile(string path) => new FileInfo(path).LinkTarget == null ? path
        : throw new InvalidInputException(path, "is a symbolic link, which a run folder never holds");

    /// <summary>The checkpoint folder of an epoch, relative to the run folder.</summary>
    static string CheckpointName(int epoch) => $"checkpoint/epoch-{epoch:D4}";

    /// <summary>Throws unless every component of <paramref name="relative"/> under <paramref name="runDir"/> is a real folder
    /// (no symbolic link) that stays inside the run folder.</summary>
    static void RequireRealFolder(string runDir, string relative, string statePath)
    {
        string full = Path.GetFullPath(Path.Combine(runDir, relative));
        if (!full.StartsWith(runDir + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new InvalidInputException(statePath, $"Checkpoint '{relative}' leaves the run folder {runDir}");
        string current = runDir;
        foreach (var part in relative.Split('/'))
        {
            current = Path.Combine(current, part);
            var info = new DirectoryInfo(current);
            if (!info.Exists) throw new InvalidInputException(statePath, $"Checkpoint '{relative}': {current} does not exist; the run cannot be resumed");
            if (info.LinkTarget != null) throw new InvalidInputException(statePath, $"Checkpoint '{relative}': {current} is a symbolic link, which a run folder never holds");
        }
    }
}
