using System.CommandLine;
using Engine.Checkpoints;
using Engine.Imaging;
using Engine.Models.Peft;
using Engine.Models;

namespace Engine.Cli;

/// <summary><c>peft select</c>: SCT's channel selection or GPS's parameter selection over a labelled image folder,
/// written as safetensors.</summary>
public static class SelectCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var selecting = PeftMethods.All.Where(m => m.Selection != null).ToList();
        var method = new Option<string>("--method")
        {
            Description = string.Join("; ", selecting.Select(m => m.Summary)), Required = true,
        };
        method.Validators.Add(result =>
        {
            string? name = result.Tokens.Count > 0 ? result.Tokens[^1].Value : null;
            if (name == null || selecting.Any(m => m.Name == name)) return;
            string which = string.Join(" and ", selecting.Select(m => m.Name));
            result.AddError(PeftMethods.Find(name) is { } known
                ? $"--method {name}: {known.Title} has no selection pass (only {which} select what they train); fine-tune it directly"
                : $"--method: unknown method '{name}' (methods with a selection pass: {which})");
        });
        var model = CommonOptions.Model();
        var weights = new Option<string>("--weights") { Description = "Pretrained checkpoint: timm .safetensors, Google .npz (ViT) or the original .pth (its head, if any, is ignored)", Required = true };
        var data = new Option<string>("--data") { Description = "A folder of class subfolders, or a VTAB-1k task folder (train800val200.txt is used)", Required = true };
        var output = new Option<string>("--output") { Description = "Where to write the selection (.safetensors): blocks.{i}.sct_index [K], or <weight>.gps_index [out, K]", Required = true };
        var k = new Option<int?>("--k") { Description = "Selection size (default: the method's recipe): channels per block for SCT (96), inputs per output row for GPS (1)" }.AtLeast(1);
        var stageK = CommonOptions.StageK();
        var seed = new Option<ulong>("--seed") { Description = "Seed of the shuffle, the augmentations and the drop-path masks", DefaultValueFactory = _ => 42 };
        var noAugment = new Option<bool>("--no-augment") { Description = "GPS: both views are the plain resized image (for exact comparisons with other implementations)" };
        var batch = new Option<int?>("--batch-size")
        {
            Description = $"Images per batch (default: {string.Join(", ", selecting.Select(m => $"{m.Name} {m.Selection!.BatchSize?.ToString() ?? "the recipe's training batch (16 without a task)"}"))}), " +
                          "shuffled, the last partial batch dropped",
        }.AtLeast(1);
        var dropPath = new Option<float>("--drop-path") { Description = "Stochastic depth during a train-mode pass (GPS), as the training script sets it", DefaultValueFactory = _ => 0f }.Fraction();
        var norm = new Option<string?>("--normalize") { Description = "inception (mean = std = 0.5) or imagenet (default: as the method's scripts: imagenet for SCT and for Swin and ConvNeXt, inception for GPS on ViT)" };
        var device = DeviceOption.Create();
        var command = new Command("select", "Select what SCT or GPS will train, from a labelled image folder, and write it as safetensors.")
        {
            method, model, weights, data, output, k, stageK, seed, noAugment, batch, dropPath, norm, device,
        };
        command.SetAction(r =>
        {
            var info = PeftMethods.Get(r.GetValue(method)!);
            string modelName = r.GetValue(model)!;
            var recipe = PeftRecipe.For(info.Name, null, ImageModels.FamilyOf(modelName));
            var settings = new SelectionSettings(r.GetValue(k) ?? recipe.K, CommonOptions.ParseStageK(r.GetValue(stageK)), r.GetValue(seed));
            return Run(info, modelName, r.GetValue(weights)!, r.GetValue(data)!, r.GetValue(output)!, settings, r.GetValue(noAugment),
                r.GetValue(batch) ?? SelectionPass.BatchSizeOf(info, recipe), r.GetValue(dropPath), r.GetValue(norm) ?? recipe.Normalization, r.GetValue(device)!);
        });
        return command;
    }

    static int Run(PeftMethodInfo method, string modelName, string weightsPath, string dataPath, string outputPath, SelectionSettings settings,
        bool noAugment, int batchSize, float dropPath, string normName, string deviceName)
    {
        CommonOptions.RequireSeparateOutput("--output", outputPath, ("--weights", weightsPath), ("--model", modelName));
        var pass = method.Selection!;
        if (batchSize < 1) throw new ArgumentException($"--batch-size must be at least 1 (got {batchSize})");
        if (settings.StageK != null && !pass.TakesStageK) throw new ArgumentException($"--stage-k sets SCT's K per stage; {method.Name.ToUpperInvariant()} takes --k only");
        var normalization = Normalization.FromName(normName);
        var images = LabeledImages.Open(dataPath);
        var device = DeviceOption.Resolve(deviceName);
        using var model = ImageModels.Create(device, modelName, images.Classes, pass.TrainMode ? dropPath : 0f);
        if (model.InChannels != 3) throw new ArgumentException($"--model {modelName}: images are RGB but the model has in_chans {model.InChannels}");
        model.Load(weightsPath, LoadMode.NewHead);
        int batchCount = SelectionPass.BatchCount(images.Items.Count, batchSize, settings.Seed);
        Console.Error.WriteLine($"select {method.Name}: {modelName} from {weightsPath} on {device}; {images.Items.Count} images in {images.Classes} classes " +
                                $"from {images.Source}; {batchCount} batch(es) of {Math.Min(batchSize, images.Items.Count)}; K = {settings.K}");
        var progress = new Progress($"select {method.Name}", batchCount, "batches");
        bool augment = pass.Views > 1 && !noAugment;
        var metadata = new Dictionary<string, string>
        {
            ["k"] = settings.K.ToString(), ["seed"] = settings.Seed.ToString(), ["model"] = modelName, ["weights"] = Path.GetFileName(weightsPath),
            ["images"] = images.Items.Count.ToString(), ["augment"] = augment.ToString().ToLowerInvariant(), ["batch_size"] = batchSize.ToString(),
        };
        string summary = SelectionPass.Run(method, model, images.Items, settings, normalization, outputPath, metadata, batchSize, !noAugment,
            (done, _) => progress.Report(done));
        Console.WriteLine($"wrote {summary} to {outputPath}");
        return 0;
    }
}
