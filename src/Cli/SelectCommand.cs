using System.CommandLine;
using Engine.Checkpoints;
using Engine.Imaging;
using Engine.Kernels.Cpu;
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
        var method = new Option<string>("--method") { Description = "sct (channels by class-aware importance) or gps (entries by the contrastive gradient)", Required = true };
        method.AcceptOnlyFromAmong("sct", "gps");
        var model = CommonOptions.Model();
        var weights = new Option<string>("--weights") { Description = "Pretrained checkpoint: timm .safetensors, Google .npz (ViT) or the original .pth (its head, if any, is ignored)", Required = true };
        var data = new Option<string>("--data") { Description = "A folder of class subfolders, or a VTAB-1k task folder (train800val200.txt is used)", Required = true };
        var output = new Option<string>("--output") { Description = "Where to write the selection (.safetensors): blocks.{i}.sct_index [K], or <weight>.gps_index [out, K]", Required = true };
        var k = new Option<int?>("--k") { Description = "Selection size: channels per block for SCT (default 96), inputs per output row for GPS (default 1)" };
        var stageK = CommonOptions.StageK();
        var seed = new Option<ulong>("--seed") { Description = "Seed of the shuffle, the augmentations and the drop-path masks", DefaultValueFactory = _ => 42 };
        var noAugment = new Option<bool>("--no-augment") { Description = "GPS: both views are the plain resized image (for exact comparisons with other implementations)" };
        var batch = new Option<int?>("--batch-size") { Description = "Images per batch (default: SCT 50, GPS 32), shuffled, the last partial batch dropped" };
        var dropPath = new Option<float>("--drop-path") { Description = "GPS: stochastic depth during the pass (train mode), as the training script sets it", DefaultValueFactory = _ => 0f };
        var norm = new Option<string?>("--normalize") { Description = "inception (mean = std = 0.5) or imagenet (default: as the method's scripts: imagenet for SCT and for Swin and ConvNeXt, inception for GPS on ViT)" };
        var device = DeviceOption.Create();
        var threads = CommonOptions.Threads();
        var command = new Command("select", "Select what SCT or GPS will train, from a labelled image folder, and write it as safetensors.")
        {
            method, model, weights, data, output, k, stageK, seed, noAugment, batch, dropPath, norm, device, threads,
        };
        command.SetAction(r =>
        {
            string m = r.GetValue(method)!;
            CpuParallel.Threads = r.GetValue(threads);
            return Run(m, r.GetValue(model)!, r.GetValue(weights)!, r.GetValue(data)!, r.GetValue(output)!,
                r.GetValue(k) ?? (m == "sct" ? SctSelection.DefaultK : GpsSelection.DefaultK), CommonOptions.ParseStageK(r.GetValue(stageK)), r.GetValue(seed), r.GetValue(noAugment),
                r.GetValue(batch) ?? (m == "sct" ? 50 : 32), r.GetValue(dropPath), r.GetValue(norm) ?? PeftRecipe.For(m, null, ImageModels.FamilyOf(r.GetValue(model)!)).Normalization,
                r.GetValue(device)!);
        });
        return command;
    }

    static int Run(string method, string modelName, string weightsPath, string dataPath, string outputPath, int k, Dictionary<string, int>? stageK, ulong seed,
        bool noAugment, int batchSize, float dropPath, string normName, string deviceName)
    {
        if (batchSize < 1) throw new ArgumentException($"--batch-size must be at least 1 (got {batchSize})");
        if (stageK != null && method != "sct") throw new ArgumentException("--stage-k sets SCT's K per stage; GPS takes --k only");
        var normalization = Normalization.FromName(normName);
        var images = LabeledImages.Open(dataPath);
        var device = DeviceOption.Resolve(deviceName);
        using var model = ImageModels.Create(device, modelName, images.Classes, method == "gps" ? dropPath : 0f);
        if (model.InChannels != 3) throw new ArgumentException($"--model {modelName}: images are RGB but the model has in_chans {model.InChannels}");
        model.Load(weightsPath, LoadMode.NewHead);
        int size = model.ImageSize, views = method == "gps" ? 2 : 1, batchCount = Data.Batching.Shuffled(images.Items.Count, batchSize, seed).Count;
        Console.Error.WriteLine($"select {method}: {modelName} from {weightsPath} on {device}; {images.Items.Count} images in {images.Classes} classes " +
                                $"from {images.Source}; {batchCount} batch(es) of {Math.Min(batchSize, images.Items.Count)}; K = {k}");
        var progress = new Progress($"select {method}", batchCount, "batches");
        var batches = SelectionBatches.Stream(images.Items, views, augment: !noAugment, size, normalization, batchSize, seed, device,
            (done, _) => progress.Report(done));
        var metadata = new Dictionary<string, string>
        {
            ["k"] = k.ToString(), ["seed"] = seed.ToString(), ["model"] = modelName, ["weights"] = Path.GetFileName(weightsPath),
            ["images"] = images.Items.Count.ToString(), ["augment"] = (method == "gps" && !noAugment).ToString().ToLowerInvariant(),
        };
        if (method == "sct")
        {
            var selection = SctSelection.Compute(model, batches, k, stageK);
            SctSelection.Save(outputPath, selection, metadata);
            var sizes = selection.Values.GroupBy(c => c.Length).OrderBy(g => g.Key).Select(g => $"{g.Count()} of {g.Key}");
            Console.WriteLine($"wrote {selection.Count} channel sets ({string.Join(", ", sizes)}) to {outputPath}");
        }
        else
        {
            var selection = GpsSelection.Compute(model, batches, k, seed);
            GpsSelection.Save(outputPath, selection, metadata);
            Console.WriteLine($"wrote {selection.Count} selections ({selection.Values.Sum(s => (long)s.Columns.Length):N0} entries) to {outputPath}");
        }
        return 0;
    }
}
