using System.CommandLine;
using Engine.Checkpoints;

namespace Engine.Cli;

/// <summary><c>peft inspect</c>: every tensor of a checkpoint with its shape and dtype, and the parameter count.</summary>
public static class InspectCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var path = new Argument<string>("checkpoint") { Description = "A .safetensors, .npz or PyTorch .pth file" };
        var timm = new Option<bool>("--timm") { Description = "For a Google ViT .npz: list the tensors under the timm names and layouts they load as" };
        var command = new Command("inspect", "List a checkpoint's tensors (name, shape, dtype, elements) and its parameter count.") { path, timm };
        command.SetAction(r => Run(r.GetValue(path)!, r.GetValue(timm)));
        return command;
    }

    static int Run(string path, bool timm)
    {
        using var checkpoint = Checkpoint.Open(path);
        var entries = timm ? GoogleVitNpz.TimmEntries(checkpoint) : checkpoint.Entries.ToList();
        int nameWidth = Math.Max(4, entries.Count == 0 ? 0 : entries.Max(e => e.Name.Length));
        int shapeWidth = Math.Max(5, entries.Count == 0 ? 0 : entries.Max(e => e.ShapeText.Length));
        Console.WriteLine($"{checkpoint.Path} ({checkpoint.Format}, {entries.Count} tensors)");
        foreach (var (k, v) in checkpoint.Metadata) Console.WriteLine($"  metadata {k} = {v}");
        Console.WriteLine($"{"name".PadRight(nameWidth)}  {"shape".PadRight(shapeWidth)}  dtype  {"elements",12}");
        Console.WriteLine($"{new string('-', nameWidth)}  {new string('-', shapeWidth)}  -----  {new string('-', 12)}");
        foreach (var e in entries) Console.WriteLine($"{e.Name.PadRight(nameWidth)}  {e.ShapeText.PadRight(shapeWidth)}  {e.DType,-5}  {e.Count,12:N0}");
        Console.WriteLine($"total: {entries.Sum(e => e.Count):N0} parameters in {entries.Count} tensors");
        return 0;
    }
}
