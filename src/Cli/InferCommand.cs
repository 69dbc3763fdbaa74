using System.CommandLine;
using Engine.Autograd;
using Engine.Checkpoints;
using Engine.Imaging;
using Engine.Kernels.Cpu;
using Engine.IO;
using Engine.Models;
using Engine.Models.Peft;

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
        var output = new Option<string>("--output") { Description = "Where to write the logits [B, classes] as .npy (a folder input also gets NAME.files.txt beside NAME.npy: the image of each row)", Required = true };
        var trained = new Option<string?>("--trained") { Description = "A trained PEFT file (any method, SCT included; its metadata names the method): the method is applied to --weights and loaded" };
        var topK = new Option<int?>("--top-k") { Description = "Also write NAME.top<K>.csv: each image's K most likely classes with their softmax probabilities" }.AtLeast(1);
        var labels = new Option<string?>("--labels") { Description = "Class names for --top-k, one per line (line i names class i)" };
        var device = DeviceOption.Create();
        var batch = new Option<int>("--batch-size") { Description = "Images per forward pass", DefaultValueFactory = _ => 16 }.AtLeast(1);
        var classes = new Option<int?>("--num-classes") { Description = "Head size (default: the checkpoint's head; 0 = no head, write the pooled features)" }.AtLeast(0);
        var norm = new Option<string>("--normalize") { Description = "Normalisation of folder images: inception (mean = std = 0.5, ViT AugReg) or imagenet", DefaultValueFactory = _ => "inception" };
        var command = new Command("infer", "Run a ViT, Swin or ConvNeXt forward pass (eval mode) over images and write the logits.")
        {
            model, weights, input, output, device, batch, classes, norm, trained, topK, labels,
        };
        command.SetAction(r => Run(r.GetValue(model)!, r.GetValue(weights)!, r.GetValue(input)!, r.GetValue(output)!, r.GetValue(device)!,
            r.GetValue(batch), r.GetValue(classes), r.GetValue(norm)!, r.GetValue(trained), r.GetValue(topK), r.GetValue(labels)));
        return command;
    }

    static int Run(string modelName, string weightsPath, string inputPath, string outputPath, string deviceName, int batchSize,
        int? numClasses, string normName, string? trainedPath, int? topK, string? labelsPath)
    {
        CommonOptions.RequireSeparateOutput("--output", outputPath, ("--input", inputPath), ("--weights", weightsPath), ("--trained", trainedPath),
            ("--model", modelName), ("--labels", labelsPath));
        if (labelsPath != null && topK == null) throw new ArgumentException("--labels names the classes of --top-k; give --top-k too");
        var names = labelsPath == null ? null : File.ReadAllLines(labelsPath);
        var normalization = Normalization.FromName(normName);
        var device = DeviceOption.Resolve(deviceName);
        using var method = trainedPath == null ? null : PeftMethod.ForTrainedFile(trainedPath);
        int classes = numClasses ?? ImageModels.HeadClasses(modelName, trainedPath ?? weightsPath);
        if (names != null && names.Length < classes) throw new InvalidInputException(labelsPath!, $"names {names.Length} classes; the model has {classes}");
        using var model = ImageModels.Create(device, modelName, classes);
        model.Load(weightsPath, trainedPath == null ? LoadMode.Strict : LoadMode.NewHead);
        if (method != null)
        {
            method.Apply(model);
            method.LoadTrained(model, trainedPath!);
        }
        int size = model.ImageSize, channels = model.InChannels, pixels = channels * size * size;
        var (count, files, fill) = OpenInput(inputPath, size, channels, normalization);
        Console.Error.WriteLine($"infer: {modelName} ({model.ParameterCount:N0} parameters, {classes} classes) from {weightsPath} on {device}, " +
                                $"{count} image(s) of {size}×{size}, batch {batchSize}");
        float[]? result = null;
        int outputs = 0;
        var progress = new Progress("infer", count, "images");
        var batchData = new float[(long)batchSize * pixels];
        // Weights stay fixed from here: the CPU GEMM packs each once at the first batch and streams the packs after
        // (products of 49–197 rows gain most, `bash bench/run.sh peers`); one batch would pay for packing and not reuse it.
        using var frozen = count > batchSize ? FrozenWeights.Freeze(model.Parameters) : null;
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
        if (topK is int k)
        {
            if (classes == 0) throw new ArgumentException("--top-k needs a head (--num-classes 0 writes features)");
            string csv = Path.ChangeExtension(outputPath, $".top{k}.csv");
            AtomicFile.Write(csv, s => WriteTopK(s, result!, count, outputs, Math.Min(k, outputs), files, names));
            Console.WriteLine($"wrote the top {Math.Min(k, outputs)} classes of each image to {csv}");
        }
        return 0;
    }

    /// <summary>CSV: image (file name or row), then rank by rank the class (its name when given) and its softmax probability.</summary>
    static void WriteTopK(Stream stream, float[] logits, int count, int classes, int k, string[]? files, string[]? names)
    {
        using var w = new StreamWriter(stream, leaveOpen: true);
        w.WriteLine(string.Join(',', new[] { "image" }.Concat(Enumerable.Range(1, k).SelectMany(r => new[] { $"class{r}", $"p{r}" }))));
        var p = new double[classes];
        for (int row = 0; row < count; row++)
        {
            var z = logits.AsSpan(row * classes, classes);
            float max = float.NegativeInfinity;
            foreach (float v in z) max = Math.Max(max, v);
            double sum = 0;
            for (int c = 0; c < classes; c++) sum += p[c] = Math.Exp(z[c] - max);
            var order = Enumerable.Range(0, classes).OrderByDescending(c => p[c]).ThenBy(c => c).Take(k);
            var cells = new List<string> { Csv(files?[row] ?? row.ToString(System.Globalization.CultureInfo.InvariantCulture)) };
            foreach (int c in order)
            {
                cells.Add(Csv(names?[c] ?? c.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                cells.Add((p[c] / sum).ToString("G6", System.Globalization.CultureInfo.InvariantCulture));
            }
            w.WriteLine(string.Join(',', cells));
        }
    }

    static string Csv(string v) => v.IndexOfAny([',', '"', '\n', '\r']) < 0 ? v : "\"" + v.Replace("\"", "\"\"") + "\"";

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
