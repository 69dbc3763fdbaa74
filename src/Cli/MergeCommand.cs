using System.CommandLine;
using Engine.Checkpoints;
using Engine.Models.Peft;
using Engine.Models;
using Engine.IO;

namespace Engine.Cli;

/// <summary><c>peft merge</c>: base weights + a trained PEFT file → one plain timm checkpoint.</summary>
public static class MergeCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var weights = new Option<string>("--weights") { Description = "The base checkpoint the method was trained on (.safetensors, .npz or .pth)", Required = true };
        var trained = new Option<string>("--trained") { Description = "The trained part, as written by a PEFT method (its metadata names the method)", Required = true };
        var output = new Option<string>("--output") { Description = "Where to write the merged checkpoint (.safetensors, timm keys, no extra parameters)", Required = true };
        var command = new Command("merge", "Fold a trained PEFT file into its base weights and write a plain checkpoint: SSF re-parameterised into the " +
                                           "layers before it; LoRA's B·A added to its layers' weights; full, linear, bias and GPS written into the weights. SCT (on the residual stream), " +
                                           "Adapter, AdaptFormer (non-linear bottlenecks) and VPT-deep (extra tokens) do not fold: export them with their modules instead.")
        {
            model, weights, trained, output,
        };
        command.SetAction(r => Run(r.GetValue(model)!, r.GetValue(weights)!, r.GetValue(trained)!, r.GetValue(output)!));
        return command;
    }

    static int Run(string modelName, string weightsPath, string trainedPath, string outputPath)
    {
        CommonOptions.RequireSeparateOutput("--output", outputPath, ("--weights", weightsPath), ("--trained", trainedPath), ("--model", modelName));
        using var method = PeftMethod.ForTrainedFile(trainedPath);
        int classes = ImageModels.HeadClasses(modelName, trainedPath);
        if (classes == 0) throw new InvalidInputException(trainedPath, $"holds no head.weight or head.fc.weight, so the class count is unknown");
        using var model = ImageModels.Create(Device.Cpu, modelName, classes);
        model.Load(weightsPath, LoadMode.NewHead);
        method.Apply(model);
        method.LoadTrained(model, trainedPath);
        IReadOnlyList<string> kept;
        try
        {
            kept = method.Merge();
        }
        catch (NotSupportedException e)
        {
            throw new ArgumentException($"--trained {trainedPath}: {e.Message}; load it with the method instead");
        }
        if (kept.Count > 0)
            throw new ArgumentException($"--trained {trainedPath}: {PeftMethods.Get(method.Name).Title} on {string.Join(", ", kept)} scales a residual sum that pooling and a norm follow, " +
                                        $"which no layer of a plain {model.Family} can absorb exactly; load it with the method instead (every other site folds)");
        model.Save(outputPath);
        Console.WriteLine($"merged {method.Name} ({method.TrainableCount(model):N0} trained values) into {weightsPath}: wrote {outputPath} " +
                          $"({model.ParameterCount:N0} parameters, {classes} classes)");
        return 0;
    }
}
