using System.CommandLine;
using Engine.Checkpoints;
using Engine.IO;
using Engine.Models;
using Engine.Models.Export;
using Engine.Models.Peft;

namespace Engine.Cli;

/// <summary><c>peft export</c>: a model, with a trained PEFT file merged in, as ONNX for any runtime.</summary>
public static class ExportCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var weights = new Option<string>("--weights") { Description = "The checkpoint (timm .safetensors, Google .npz or the original .pth)", Required = true };
        var trained = new Option<string?>("--trained") { Description = "A trained PEFT file: merged first where the method folds (ssf, lora, gps, bias, linear, full); SCT, Adapter, AdaptFormer and VPT-deep as explicit nodes" };
        var output = new Option<string>("--output") { Description = "The .onnx file (weights over 2 GB go to OUTPUT.data beside it)", Required = true };
        var opset = new Option<int>("--opset") { Description = "ONNX opset (17 or newer)", DefaultValueFactory = _ => 17 }.AtLeast(17);
        var batch = new Option<string>("--batch") { Description = "dynamic (any batch from one file) or a fixed size N", DefaultValueFactory = _ => "dynamic" };
        var command = new Command("export", "Write a model (with a trained PEFT file merged in) as ONNX: input pixel_values [B, 3, H, W] float32, normalised; output logits [B, classes].")
        {
            model, weights, trained, output, opset, batch,
        };
        command.SetAction(r => Run(r.GetValue(model)!, r.GetValue(weights)!, r.GetValue(trained), r.GetValue(output)!, r.GetValue(opset), r.GetValue(batch)!));
        return command;
    }

    static int Run(string modelName, string weightsPath, string? trainedPath, string outputPath, int opset, string batchText)
    {
        CommonOptions.RequireSeparateOutput("--output", outputPath, ("--weights", weightsPath), ("--trained", trainedPath), ("--model", modelName));
        int? batch = batchText == "dynamic" ? null
            : int.TryParse(batchText, out int n) && n >= 1 ? n : throw new ArgumentException($"--batch: '{batchText}' is not dynamic or a size ≥ 1");
        using var method = trainedPath == null ? null : PeftMethod.ForTrainedFile(trainedPath);
        int classes = ImageModels.HeadClasses(modelName, trainedPath ?? weightsPath);
        using var net = ImageModels.Create(Device.Cpu, modelName, classes);
        net.Load(weightsPath, trainedPath == null ? LoadMode.Strict : LoadMode.NewHead);
        // A method that folds is merged into the weights; what cannot fold (SCT; SSF on ConvNeXt's stage output) is
        // written as explicit nodes.
        PeftMethod? asNodes = null;
        string how = "";
        if (method != null)
        {
            method.Apply(net);
            method.LoadTrained(net, trainedPath!);
            if (method is Sct or BottleneckAdapter or VptDeep)
            {
                asNodes = method;
                how = $", {PeftMethods.Get(method.Name).Title} as explicit nodes";
            }
            else
            {
                var kept = method.Merge();
                asNodes = kept.Count > 0 ? method : null;
                how = $", {method.Name} merged" + (kept.Count > 0 ? $" (on {string.Join(", ", kept)} as explicit nodes)" : "");
            }
        }
        long bytes = ModelExport.ToOnnx(net, outputPath, new OnnxExportOptions { Opset = opset, Batch = batch, Method = asNodes });
        Console.WriteLine($"wrote {outputPath}: {net.Family}, {classes} classes, opset {opset}, batch {batchText}, {bytes / 1048576.0:F1} MiB of weights" +
                          (File.Exists(outputPath + ".data") ? $" in {outputPath}.data" : "") + how);
        return 0;
    }
}
