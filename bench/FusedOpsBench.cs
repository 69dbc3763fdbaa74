using System.Diagnostics;
using System.Globalization;
using Engine.Autograd;
using Engine.Kernels.Cpu;
using Engine.Models;
using Engine.Models.Vit;

namespace Engine.Bench;

/// <summary>
/// <c>bash bench/run.sh fused [--rounds 9]</c>: each fused op against its unfused path on the CPU, alternating in one
/// process (each measurement the median of 3 calls; medians over the rounds, the ratio the median of the rounds' ratios): attention forward + backward through
/// <see cref="Ops.Attention"/> at ViT-B/16's shapes (batch 1 and 8) and Swin-B's first-stage windows (batch 8: 512
/// windows of 49 tokens, 4 heads of 32); Linear+GELU (inference) and SSF's Linear+scale-shift (training: the product
/// kept too) at ViT-B/16's fc1, batch 1 and 8. Then ViT-B/16's eval forward (weights frozen) with its last block on
/// the class row against the same forward with every token through it (KeepEveryToken).
/// </summary>
public static class FusedOpsBench
{
    /// <summary>Runs the comparisons and prints their table; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        const string usage = "bash bench/run.sh fused [--rounds 9]";
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine($"{usage}\n  Fused ops vs their unfused paths on the CPU (attention forward + backward, Linear+GELU, Linear+scale-shift), alternating in one process;\n  then ViT-B/16's eval forward with its last block on the class row vs on every token.");
            return 0;
        }
        int rounds = 9;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--rounds" && i + 1 < args.Length && int.TryParse(args[i + 1], out rounds) && rounds >= 1) i++;
            else
            {
                Console.Error.WriteLine($"error: unknown option {args[i]}\nusage: {usage}");
                return 1;
            }
        }
        CpuParallel.Threads = Environment.ProcessorCount;
        Console.WriteLine($"fused ops vs their unfused paths on the CPU, {Environment.ProcessorCount} threads, {Simd.Best} vectors, {rounds} rounds");
        Console.WriteLine("\n| op | shape | fused ms | unfused ms | fused / unfused | fused GFLOP/s |\n|---|---|---|---|---|---|");
        var cases = new (string Fused, string Unfused, int[] Shape)[]
        {
            ("attention", "attention-unfused", [1, 197, 12, 64]), ("attention", "attention-unfused", [8, 197, 12, 64]),
            ("attention", "attention-unfused", [512, 49, 4, 32]),
            ("linear-gelu", "linear-gelu-unfused", [197, 3072, 768]), ("linear-gelu", "linear-gelu-unfused", [1576, 3072, 768]),
            ("linear-scale-shift", "linear-scale-shift-unfused", [197, 3072, 768]),
            ("linear-scale-shift", "linear-scale-shift-unfused", [1576, 3072, 768]),
        };
        var inv = CultureInfo.InvariantCulture;
        foreach (var (fusedOp, unfusedOp, shape) in cases)
        {
            var fused = new List<BenchmarkRow>();
            var unfused = new List<double>();
            for (int r = 0; r < rounds; r++) // taking turns going first
            {
                if (r % 2 == 1) unfused.Add(DeviceBenchmarks.Measure(Device.Cpu, unfusedOp, shape, 3).Milliseconds);
                fused.Add(DeviceBenchmarks.Measure(Device.Cpu, fusedOp, shape, 3));
                if (r % 2 == 0) unfused.Add(DeviceBenchmarks.Measure(Device.Cpu, unfusedOp, shape, 3).Milliseconds);
            }
            var f = fused.OrderBy(x => x.Milliseconds).ElementAt(rounds / 2);
            Console.WriteLine(string.Format(inv, "| {0} | {1} | {2:F1} | {3:F1} | {4:F2} | {5:F1} |", fusedOp, f.Shape, f.Milliseconds,
                Rounds.Median(unfused), Rounds.PairedRatio([.. fused.Select(x => x.Milliseconds)], unfused), f.Tflops * 1000));
        }
        ClassRowForward(rounds);
        return 0;
    }

    /// <summary>ViT-B/16's eval forward at batch 1 and 8: the last block on the class row vs on every token.</summary>
    static void ClassRowForward(int rounds)
    {
        Console.WriteLine("\nViT-B/16 eval forward, weights frozen: the last block's projection, MLP and norm on the class row vs on every token\n");
        Console.WriteLine("| model | batch | class row ms | every token ms | class row / every token |\n|---|---|---|---|---|");
        using var model = (VisionTransformer)ImageModels.Create(Device.Cpu, "vit_base_patch16_224", 1000, seed: 1);
        using var frozen = FrozenWeights.Freeze(model.Parameters);
        foreach (int batch in new[] { 1, 8 })
        {
            var rng = new Random(2);
            int size = model.ImageSize;
            using var input = Tensor.FromArray(Device.Cpu, Enumerable.Range(0, batch * 3 * size * size).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), batch, 3, size, size);
            double Time(bool everyToken)
            {
                model.KeepEveryToken = everyToken;
                var clock = Stopwatch.StartNew();
                using (Tape.NoGrad()) model.Forward(input).Dispose();
                return clock.Elapsed.TotalMilliseconds;
            }
            Time(false); // warm-up: packs the frozen weights
            Time(true);
            var classRow = new List<double>();
            var everyToken = new List<double>();
            for (int r = 0; r < rounds; r++) // taking turns going first
            {
                if (r % 2 == 1) everyToken.Add(Time(true));
                classRow.Add(Time(false));
                if (r % 2 == 0) everyToken.Add(Time(true));
            }
            model.KeepEveryToken = false;
            Console.WriteLine(string.Format(CultureInfo.InvariantCulture, "| vit_base_patch16_224 | {0} | {1:F1} | {2:F1} | {3:F3} |",
                batch, Rounds.Median(classRow), Rounds.Median(everyToken), Rounds.PairedRatio([.. classRow], everyToken)));
        }
    }
}
