using System.Globalization;
using Engine.Kernels.Cpu;

namespace Engine.Bench;

/// <summary>
/// <c>bash bench/run.sh attention [--rounds 9]</c>: fused attention against the unfused path on the CPU, forward and
/// backward through <see cref="Ops.Attention"/>, at ViT-B/16's shapes (batch 1 and 8) and Swin-B's first-stage windows
/// (batch 8: 512 windows of 49 tokens, 4 heads of 32), the two alternating in one process (each measurement the median of
/// 3 calls); medians over the rounds.
/// </summary>
public static class AttentionBench
{
    /// <summary>Runs the comparison and prints its table; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        const string usage = "bash bench/run.sh attention [--rounds 9]";
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine($"{usage}\n  Fused vs unfused attention (forward + backward) on the CPU, alternating in one process.");
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
        Console.WriteLine($"attention forward + backward on the CPU, {Environment.ProcessorCount} threads, {Simd.Best} vectors, {rounds} rounds");
        Console.WriteLine("\n| shape B×T×heads×head dim | fused ms | unfused ms | fused / unfused | fused GFLOP/s |\n|---|---|---|---|---|");
        var inv = CultureInfo.InvariantCulture;
        foreach (var shape in new[] { new[] { 1, 197, 12, 64 }, new[] { 8, 197, 12, 64 }, new[] { 512, 49, 4, 32 } })
        {
            var fused = new List<BenchmarkRow>();
            var unfused = new List<double>();
            for (int r = 0; r < rounds; r++)
            {
                fused.Add(DeviceBenchmarks.Measure(Device.Cpu, "attention", shape, 3));
                unfused.Add(DeviceBenchmarks.Measure(Device.Cpu, "attention-unfused", shape, 3).Milliseconds);
            }
            var f = fused.OrderBy(x => x.Milliseconds).ElementAt(rounds / 2);
            double u = unfused.Order().ElementAt(rounds / 2);
            Console.WriteLine(string.Format(inv, "| {0} | {1:F1} | {2:F1} | {3:F2} | {4:F1} |", f.Shape, f.Milliseconds, u, f.Milliseconds / u, f.Tflops * 1000));
        }
        return 0;
    }
}
