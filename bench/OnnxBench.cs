using System.Diagnostics;
using System.Globalization;
using Engine.Autograd;
using Engine.Kernels.Cpu;
using Engine.Models;
using Engine.Models.Export;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Engine.Bench;

/// <summary>
/// <c>bash bench/run.sh onnx [--models vit_base_patch16_224,...] [--batches 1,8] [--rounds 5]</c>: each model exported
/// by <see cref="ModelExport"/> and run by ONNX Runtime in this process beside the engine, on the same weights (seeded
/// initialisation) and the same images: the exported file's size, the largest logit difference, and eval-forward time
/// (median of alternating rounds, both on this machine's threads).
/// </summary>
public static class OnnxBench
{
    /// <summary>Runs the comparison and prints the table; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        string? Arg(string name) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        if (args.Contains("--help"))
        {
            Console.WriteLine("bash bench/run.sh onnx [--models vit_base_patch16_224,swin_base_patch4_window7_224,convnext_base] [--batches 1,8] [--rounds 5]");
            return 0;
        }
        var models = (Arg("--models") ?? "vit_base_patch16_224,swin_base_patch4_window7_224,convnext_base").Split(',');
        var batches = (Arg("--batches") ?? "1,8").Split(',').Select(int.Parse).ToArray();
        int rounds = int.Parse(Arg("--rounds") ?? "5", CultureInfo.InvariantCulture);
        CpuParallel.Threads = Environment.ProcessorCount;
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine($"ONNX export vs the engine, {Environment.ProcessorCount} threads, CPU GEMM {CpuGemm.BestIsa}, ONNX Runtime CPU, {rounds} rounds");
        Console.WriteLine("\n| model | .onnx MiB | batch | max abs logit difference | engine ms | ORT ms | engine / ORT time |\n|---|---|---|---|---|---|---|");
        foreach (var preset in models)
        {
            using var model = ImageModels.Create(Device.Cpu, preset, 1000, seed: 1);
            string path = Path.Combine(Path.GetTempPath(), $"peft-onnx-bench-{Environment.ProcessId}-{preset}.onnx");
            try
            {
                ModelExport.ToOnnx(model, path);
                double mib = new FileInfo(path).Length / 1048576.0;
                using var options = new SessionOptions { IntraOpNumThreads = Environment.ProcessorCount, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
                using var session = new InferenceSession(path, options);
                int size = model.ImageSize;
                foreach (int batch in batches)
                {
                    var rng = new Random(2);
                    var x = Enumerable.Range(0, batch * 3 * size * size).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                    float[] Engine()
                    {
                        using var input = Tensor.FromArray(Device.Cpu, x, batch, 3, size, size);
                        using var _ = Tape.NoGrad();
                        using var logits = model.Forward(input);
                        return logits.ToArray();
                    }
                    float[] Ort()
                    {
                        using var results = session.Run([NamedOnnxValue.CreateFromTensor("pixel_values", new DenseTensor<float>(x, [batch, 3, size, size]))]);
                        return [.. results.Single().AsEnumerable<float>()];
                    }
                    double worst = Engine().Zip(Ort()).Max(p => Math.Abs(p.First - p.Second)); // also the warm-up
                    var engineMs = new List<double>();
                    var ortMs = new List<double>();
                    for (int r = 0; r < rounds; r++)
                    {
                        var clock = Stopwatch.StartNew();
                        Engine();
                        engineMs.Add(clock.Elapsed.TotalMilliseconds);
                        clock.Restart();
                        Ort();
                        ortMs.Add(clock.Elapsed.TotalMilliseconds);
                    }
                    double e = engineMs.Order().ElementAt(rounds / 2), o = ortMs.Order().ElementAt(rounds / 2);
                    Console.WriteLine(string.Format(inv, "| {0} | {1:F1} | {2} | {3:E1} | {4:F0} | {5:F0} | {6:F2} |", preset, mib, batch, worst, e, o, e / o));
                }
            }
            finally
            {
                File.Delete(path);
            }
        }
        return 0;
    }
}
