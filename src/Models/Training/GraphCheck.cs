using Engine.Kernels;
using Engine.Models.Peft;
using Engine.Optim;

namespace Engine.Models.Training;

/// <summary>
/// Training steps replayed from a CUDA graph against ordinary ones on the same device (<see cref="TrainStep.CudaGraph"/>):
/// six AdamW steps of a small model with a learning rate that changes every step, weight decay, and a smaller fourth
/// batch that runs beside the graph. Without dropout both runs must give the same losses and parameters, bit for bit.
/// <c>peft selftest</c> runs <see cref="Check"/> on a GPU; the tests run the same steps on the emulated device.
/// </summary>
public static class GraphCheck
{
    /// <summary>Images per step; the fourth step takes one fewer.</summary>
    public static readonly int[] Batches = [3, 3, 3, 2, 3, 3];

    /// <summary>One run: every parameter before and after, the losses, how many steps replayed the graph, and the
    /// activation bytes the last step kept for its backward.</summary>
    public sealed record Result(float[][] Initial, float[][] Parameters, float[] Losses, long Replays, long SavedBytes);

    /// <summary>Trains <paramref name="model"/> (which this disposes; <paramref name="classes"/> outputs) with
    /// <paramref name="method"/> for six steps, with or without <paramref name="graph"/>; <paramref name="clip"/> clips the gradient norm to 0.5 (the optimizer then
    /// steps after each replay, else inside it), fp16 adds a loss scaler; <paramref name="weightCopies"/> gives the steps
    /// the model's weights (<see cref="TrainStep.Weights"/>), as every training loop of the project does.</summary>
    public static Result Train(IImageClassifier model, int classes, string method, bool graph, bool clip = false,
        Precision precision = Precision.FP32, bool weightCopies = true)
    {
        using var _ = model;
        var device = model.Parameters[0].Device;
        var info = PeftMethods.Get(method);
        string? selection = null;
        if (info.Selection != null) // two entries per output row (GPS) or channels (SCT), evenly spread
            info.Selection.SaveUniform(model, 2, selection = Path.Combine(Path.GetTempPath(), $"peft-graph-{Guid.NewGuid():N}.safetensors"));
        PeftMethod peft;
        try { peft = info.Create(new MethodSetup(Seed: 42, SelectionFile: selection)); }
        finally { if (selection != null) File.Delete(selection); }
        using var __ = peft;
        peft.Apply(model);
        var initial = model.Parameters.Select(p => p.ToArray()).ToArray();
        using var adam = new Adam(peft.Trainable(model), new AdamOptions { LearningRate = 1e-2f, WeightDecay = 0.05f });
        using var step = new TrainStep(adam)
        {
            CudaGraph = graph,
            MaxGradNorm = clip ? 0.5f : null,
            LossScaler = precision == Precision.FP16 ? new LossScaler(1024f) : null,
            Context = $"graph check ({method})",
            Weights = weightCopies ? model.Parameters : null,
        };
        using var ___ = device.Kernels.UseGemmPrecision(precision);
        int size = model.ImageSize;
        var losses = new float[Batches.Length];
        for (int i = 0; i < Batches.Length; i++)
        {
            int batch = Batches[i];
            adam.LearningRate = 1e-2f / (i + 1);
            var pixels = Enumerable.Range(0, batch * 3 * size * size).Select(j => CounterRng.Uniform((ulong)(10 + i), (ulong)j) * 2 - 1).ToArray();
            using var images = Tensor.FromArray(device, pixels, batch, 3, size, size);
            images.Name = $"batch {i}"; // names do not matter, shapes do
            using var targets = Tensor.FromArray(device, Enumerable.Range(0, batch).Select(j => (i + 2 * j) % classes).ToArray(), batch);
            losses[i] = step.Run(images, targets, x => model.Forward(x, trainSeed: 7), (logits, t) => Ops.CrossEntropy(logits, t));
        }
        return new Result(initial, [.. model.Parameters.Select(p => p.ToArray())], losses, step.GraphReplays, step.SavedBytes);
    }

    /// <summary>What differs between an ordinary run and a graphed one of the same steps (empty when they agree bit for
    /// bit and the graph replayed the four steps of the captured shape).</summary>
    public static IReadOnlyList<string> Compare(Result ordinary, Result graphed)
    {
        var problems = new List<string>();
        if (graphed.Replays != 4) problems.Add($"{graphed.Replays} steps replayed the graph, expected 4 (steps 2, 3, 5, 6)");
        for (int i = 0; i < ordinary.Losses.Length; i++)
            if (BitConverter.SingleToInt32Bits(ordinary.Losses[i]) != BitConverter.SingleToInt32Bits(graphed.Losses[i]))
                problems.Add($"step {i + 1}: loss {graphed.Losses[i]:G9} replayed, {ordinary.Losses[i]:G9} ordinary");
        for (int p = 0; p < ordinary.Parameters.Length; p++)
        {
            int differing = ordinary.Parameters[p].Zip(graphed.Parameters[p]).Count(e => BitConverter.SingleToInt32Bits(e.First) != BitConverter.SingleToInt32Bits(e.Second));
            if (differing > 0) problems.Add($"parameter {p}: {differing} of {ordinary.Parameters[p].Length} elements differ");
        }
        if (ordinary.Parameters.Zip(ordinary.Initial).All(p => p.First.SequenceEqual(p.Second))) problems.Add("training moved no parameter");
        return problems;
    }

    /// <summary>The check <c>peft selftest</c> runs on a CUDA device: a tiny ViT trained with full, ssf and gps, the
    /// optimizer inside the graph and (clipping) after it, each against ordinary steps. Returns one line per case
    /// (name, then "ok" or what differs) and whether all agreed.</summary>
    public static (IReadOnlyList<(string Case, string? Failure)> Cases, bool Passed) Check(CudaDevice device)
    {
        var cases = new List<(string, string?)>();
        foreach (string method in new[] { "full", "ssf", "gps" })
            foreach (bool clip in new[] { false, true })
            {
                string name = $"{method}, optimizer {(clip ? "after the replay (clipping)" : "in the graph")}";
                string? failure;
                try
                {
                    var ordinary = Train(TinyVit(device), TinyVitClasses, method, graph: false, clip);
                    var graphed = Train(TinyVit(device), TinyVitClasses, method, graph: true, clip);
                    var problems = Compare(ordinary, graphed);
                    failure = problems.Count == 0 ? null : string.Join("; ", problems.Take(4));
                }
                catch (Exception e) when (e is InvalidOperationException or Kernels.Cuda.CudaException or DivergedException)
                {
                    failure = e.Message;
                }
                cases.Add((name, failure));
            }
        return (cases, cases.All(c => c.Item2 == null));
    }

    const int TinyVitClasses = 5;

    /// <summary>A two-block ViT on 16×16 images with <see cref="TinyVitClasses"/> classes.</summary>
    static IImageClassifier TinyVit(Device device) => new Vit.VisionTransformer(device,
        new Vit.VitConfig { img_size = 16, patch_size = 4, embed_dim = 32, depth = 2, num_heads = 2, num_classes = TinyVitClasses }, seed: 3);
}
