using System.Diagnostics;
using System.Globalization;
using Engine.Autograd;
using Engine.Kernels.Cpu;
using Engine.Models;
using Engine.Models.Peft;
using Engine.Optim;

namespace Engine.Bench;

/// <summary>
/// <c>bash bench/run.sh peft [--model vit_base_patch16_224] [--batch 8] [--rounds 5] [--methods full,ssf,...]</c>: one
/// training step (train-mode forward, cross-entropy, backward, Adam) of a model (ViT-B/16 by default; any preset, such as
/// <c>swin_base_patch4_window7_224</c> or <c>convnext_base</c>) at 224×224 with 100 classes on the CPU for each PEFT method
/// next to full fine-tuning, with the optimizer-state bytes. Each method has its own model; the rounds interleave the methods
/// (one step of each per round, in a rotating order) so machine noise spreads evenly, and the median per method is
/// reported with its ratio to full's median from the same run. SCT and GPS use a fixed synthetic selection (K = 96
/// evenly spaced channels on every SCT site; K = 1 column per row): the step's cost does not depend on which entries are selected.
/// </summary>
public static class PeftStepBench
{
    /// <summary>Runs the benchmark and prints the markdown table; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        int batch = IntArg(args, "--batch", 8), rounds = IntArg(args, "--rounds", 5);
        string model = Arg(args, "--model") ?? "vit_base_patch16_224";
        bool hasSct = ImageModels.FamilyOf(model) != "convnext"; // ConvNeXt has no attention residual for SCT
        var methods = (Arg(args, "--methods") ?? (hasSct ? "full,linear,bias,ssf,sct,gps" : "full,linear,bias,ssf,gps")).Split(',');
        if (!methods.Contains("full")) methods = ["full", .. methods];
        CpuParallel.Threads = Environment.ProcessorCount;
        Console.WriteLine($"{model} training step, batch {batch}, {rounds} rounds, {Environment.ProcessorCount} threads, CPU GEMM {CpuGemm.BestIsa}");
        var runs = methods.Select(m => new MethodRun(m, model, batch)).ToList();
        try
        {
            foreach (var r in runs) r.Step(); // warm-up: pools, moments, JIT
            for (int round = 0; round < rounds; round++)
                for (int i = 0; i < runs.Count; i++)
                {
                    var r = runs[(i + round) % runs.Count];
                    r.Times.Add(r.Step());
                    Console.Error.WriteLine($"round {round + 1}/{rounds}: {r.Name} {r.Times[^1] * 1e3:F0} ms");
                }
            var inv = CultureInfo.InvariantCulture;
            double full = runs[0].Median;
            Console.WriteLine("\n| method | trainable | step ms (median) | step / full | optimizer state | activations kept for backward |\n|---|---|---|---|---|---|");
            foreach (var r in runs)
                Console.WriteLine(string.Format(inv, "| {0} | {1:N0} | {2:F0} | {3:F2} | {4} | {5} |", r.Name, r.Trainable, r.Median * 1e3, r.Median / full,
                    Bytes(r.Optimizer.StateBytes), Bytes(r.SavedBytes)));
        }
        finally
        {
            foreach (var r in runs) r.Dispose();
        }
        return 0;
    }

    static string Bytes(long b) => b >= 1 << 20 ? $"{b / (double)(1 << 20):F1} MiB" : $"{b / 1024.0:F1} KiB";

    static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    static int IntArg(string[] args, string name, int fallback) => Arg(args, name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;

    sealed class MethodRun : IDisposable
    {
        readonly IImageClassifier _model;
        readonly PeftMethod _method;
        readonly Tensor _images, _targets;
        readonly Tape _tape = new();
        ulong _step;

        public MethodRun(string name, string model, int batch)
        {
            Name = name;
            var device = Device.Cpu;
            _model = ImageModels.Create(device, model, numClasses: 100, seed: 1);
            _method = name switch
            {
                "full" => SubsetMethod.Full(),
                "linear" => SubsetMethod.Linear(),
                "bias" => SubsetMethod.Bias(),
                "ssf" => new Ssf(),
                "sct" => new Sct(SctSelection.Sites(_model).ToDictionary(s => s.Name, s => Enumerable.Range(0, 96).Select(i => i * (s.Channels / 96)).ToArray())),
                "gps" => new Gps(GpsSelection.SelectedWeights(_model).ToDictionary(p => p.Name!,
                    p => new GpsRows(p.Shape[0], 1, [.. Enumerable.Range(0, p.Shape[0]).Select(o => o * 7 % (int)(p.Count / p.Shape[0]))]))),
                _ => throw new ArgumentException($"--methods: unknown method '{name}' (full, linear, bias, ssf, sct, gps)"),
            };
            _method.Apply(_model);
            Trainable = _method.TrainableCount(_model);
            Optimizer = new Adam(_method.Trainable(_model), new AdamOptions { LearningRate = 1e-4f });
            int size = _model.ImageSize;
            _images = Tensor.FromArray(device, Init.NormalValues(batch * 3 * size * size, 0f, 1f, 2), batch, 3, size, size);
            _targets = Tensor.FromArray(device, Enumerable.Range(0, batch).Select(i => i % 100).ToArray(), batch);
        }

        public string Name { get; }
        public long Trainable { get; }
        public Adam Optimizer { get; }
        public List<double> Times { get; } = new();
        public long SavedBytes { get; private set; }
        public double Median => Times.Order().ElementAt(Times.Count / 2);

        /// <summary>One training step; returns its wall time in seconds.</summary>
        public double Step()
        {
            var clock = Stopwatch.StartNew();
            using (_tape.Record())
            {
                using var logits = _model.Forward(_images, trainSeed: ++_step);
                using var loss = Ops.CrossEntropy(logits, _targets);
                SavedBytes = _tape.SavedBytes;
                _tape.Backward(loss);
            }
            Optimizer.Step();
            Optimizer.ZeroGrad();
            return clock.Elapsed.TotalSeconds;
        }

        public void Dispose()
        {
            Optimizer.Dispose();
            _method.Dispose();
            _model.Dispose();
            _images.Dispose();
            _targets.Dispose();
        }
    }
}
