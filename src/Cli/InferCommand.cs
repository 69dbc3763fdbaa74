using System.CommandLine;
using Engine.Autograd;
using Engine.Checkpoints;
using Engine.Imaging;
using Engine.Kernels.Cpu;
using Engine.Models;

namespace Engine.Cli;

/// <summary><c>peft infer</c>: ViT, Swin or ConvNeXt logits for a .npy batch or a folder of images, written as a .npy array.</summary>
public static class InferCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var weights = new Option<string>("--weights") { Description = "Checkpoint: timm .safetensors, Google .npz (ViT) or the original PyTorch .pth (Swin, ConvNeXt)", Required = true };
        var input = new Option<string>("--input") { Description = "Images: a .npy float32 array [B,3,H,W] (already normalised) or a folder of .png/.jpg files", Required = true };
        var output = new Option<string>("--output") { Description = "Where to write the logits [B, classes] as .npy (a folder input also gets <output>.files.txt, the image of each row)", Required = true };
        var device = DeviceOption.Create();
        var batch = new Option<int>("--batch-size") { Description = "Images per forward pass", DefaultValueFactory = _ => 16 }.AtLeast(1);
        var classes = new Option<int?>("--num-classes") { Description = "Head size (default: the checkpoint's head; 0 = no head, write the pooled features)" }.AtLeast(0);
        var norm = new Option<string>("--normalize") { Description = "Normalisation of folder images: inception (mean = std = 0.5, ViT AugReg) or imagenet", DefaultValueFactory = _ => "inception" };
        var command = new Command("infer", "Run a ViT, Swin or ConvNeXt forward pass (eval mode) over images and write the logits.")
        {
            model, weights, input, output, device, batch, classes, norm,
        };
        command.SetAction(r => Run(r.GetValue(model)!, r.GetValue(weights)!, r.GetValue(input)!, r.GetValue(output)!, r.GetValue(device)!,
            r.GetValue(batch), r.GetValue(classes), r.GetValue(norm)!));
        return command;
    }

    static int Run(string modelName, string weightsPath, string inputPath, string outputPath, string deviceName, int batchSize,
        int? numClasses, string normName)
    {
        if (batchSize < 1) throw new ArgumentException($"--batch-size must be at least 1 (got {batchSize})");
        var normalization = Normalization.FromName(normName);
        var device = DeviceOption.Resolve(deviceName);
        int classes = numClasses ?? ImageModels.HeadClasses(modelName, weightsPath);
        using var model = ImageModels.Create(device, modelName, classes);
        model.Load(weightsPath);
        int size = model.ImageSize, channels = model.InChannels, pixels = channels * size * size;
        var (count, files, fill) = OpenInput(inputPath, size, channels, normalization);
        Console.Error.WriteLine($"infer: {modelName} ({model.ParameterCount:N0} parameters, {classes} classes) from {weightsPath} on {device}, " +
                                $"{count} image(s) of {size}×{size}, batch {batchSize}");
        float[]? result = null;
        int outputs = 0;
        var progress = new Progress("infer", count, "images");
        var batchData = new float[(long)batchSize * pixels];
        for (int start = 0; start < count; start += batchSize)
        {
            int n = Math.Min(batchSize, count - start);
            var span = batchData.AsSpan(0, n * pixels);
            fill(start, n, span);
            using var x = Tensor.FromArray(device, span, n, channels, size, size);
            using var _ = Tape.NoGrad();
            using var logits = model.Forward(x);
            outputs = logits.Shape[1]; // the classes, or the pooled feature width for a model without a head
            result ??= new float[(long)count * outputs];
            logits.CopyTo(result.AsSpan(start * outputs, n * outputs));
            progress.Report(start + n);
        }
        Npy.Write(outputPath, [count, outputs], result!);
        if (files != null) IO.AtomicFile.Write(Path.ChangeExtension(outputPath, ".files.txt"), s =>
        {
            using var w = new StreamWriter(s, leaveOpen: true);
            foreach (var f in files) w.WriteLine(f);
        });
        Console.WriteLine($"wrote {(classes > 0 ? "logits" : "features")} [{count}, {outputs}] to {outputPath}");
        return 0;
    }

    /// <summary>The number of images, their file names (folders only) and a function that writes images
    /// [start, start+n) into a batch buffer [n, C, H, W].</summary>
    static (int, string[]?, Action<int, int, Span<float>>) OpenInput(string path, int size, int channels, Normalization normalization)
    {
        int pixels = channels * size * size;
        if (Directory.Exists(path))
        {
            var files = Directory.GetFiles(path).Where(LabeledImages.IsImage).Order(StringComparer.Ordinal).ToArray();
            if (files.Length == 0) throw new ArgumentException($"--input {path}: the folder holds no .png/.jpg images");
            if (channels != 3) throw new ArgumentException($"--input {path}: images are RGB but the model has in_chans {channels}");
            return (files.Length, files.Select(f => Path.GetFileName(f)).ToArray(), (start, n, batch) =>
            {
                for (int i = 0; i < n; i++) normalization.ResizeInto(ImageFile.Read(files[start + i]), size, batch.Slice(i * pixels, pixels));
            });
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"--input {path}: no such file or folder", path);
        var array = Npy.Read(path);
        if (array.Shape.Length != 4 || array.Shape[1] != channels || array.Shape[2] != size || array.Shape[3] != size)
            throw new ArgumentException($"--input {path}: array [{string.Join(", ", array.Shape)}] must be [B, {channels}, {size}, {size}] for this model");
        return (array.Shape[0], null, (start, n, batch) => array.Data.AsSpan(start * pixels, n * pixels).CopyTo(batch));
    }
}
