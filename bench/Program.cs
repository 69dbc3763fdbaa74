using System.Globalization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Engine.Bench;
using Engine.Kernels.Cpu;

// Runs the selected benchmarks (BenchmarkDotNet arguments, e.g. --filter '*Gemm*'), then prints the README tables:
// GFLOP/s with the ratio to OpenBLAS, GB/s with the ratio to memcpy, and ViT-B/16, Swin-B and ConvNeXt-B forward images/s with the share of
// time in GEMMs, all measured in this run. `cuda` as the first argument runs the CUDA device benchmarks instead (CudaBench);
// `peft` runs a model's training step of every PEFT method next to full fine-tuning (PeftStepBench); `peers` sets the
// engine beside OpenBLAS (GEMM) and its own ONNX export in ONNX Runtime (forward), alternating (PeersBench).
if (args.Length > 0 && args[0] == "cuda") return CudaBench.Run(args[1..]);
if (args.Length > 0 && args[0] == "peft") return PeftStepBench.Run(args[1..]);
if (args.Length > 0 && args[0] == "peers") return PeersBench.Run(args[1..]);
if (args.Length > 0 && args[0] == "fused") return FusedOpsBench.Run(args[1..]);
var blas = OpenBlas.TryLoad(out var reason);
Console.WriteLine($"CPU GEMM micro-kernel: {CpuGemm.BestIsa}; OpenBLAS: {(blas == null ? reason : blas.CoreName)}; " +
                  $"OPENBLAS_CORETYPE={Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE") ?? "(unset)"}");
var summaries = BenchmarkSwitcher.FromAssembly(typeof(GemmBenchmarks).Assembly).Run(args);
foreach (var summary in summaries) Tables.Print(summary);
return 0;

namespace Engine.Bench
{
    /// <summary>In-process runs with a fixed, modest iteration count (the kernels take 10–500 ms each).</summary>
    public sealed class BenchConfig : ManualConfig
    {
        /// <summary>Creates the config.</summary>
        public BenchConfig()
        {
            AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance).WithWarmupCount(3).WithIterationCount(10)
                .WithInvocationCount(1).WithUnrollFactor(1));
            WithOptions(ConfigOptions.DisableOptimizationsValidator);
        }
    }

    /// <summary>Markdown tables derived from a summary.</summary>
    public static class Tables
    {
        /// <summary>Prints the ViT, GEMM or memory-bound table for one summary.</summary>
        public static void Print(Summary summary)
        {
            var rows = summary.Reports.Where(r => r.ResultStatistics != null)
                .Select(r => (Params: r.BenchmarkCase.Parameters.Items.ToDictionary(p => p.Name, p => p.Value?.ToString() ?? ""),
                              Median: r.ResultStatistics!.Median / 1e9))
                .ToList();
            if (rows.Count == 0) return;
            var inv = CultureInfo.InvariantCulture;
            if (rows[0].Params.ContainsKey("Batch"))
            {
                Console.WriteLine("\n| forward (224×224) | batch | median ms | images/s | GEMM share | forward / GEMM time | GEMM GFLOP/s in forward | largest non-GEMM kernels |\n|---|---|---|---|---|---|---|---|");
                foreach (var r in rows)
                {
                    int batch = int.Parse(r.Params["Batch"], inv);
                    string model = r.Params["Model"];
                    var b = ForwardBenchmarks.Breakdowns[(model, batch)];
                    string top = string.Join(", ", b.Others.Take(3).Select(o => string.Format(inv, "{0} {1:P1}", o.Kernel, o.Seconds / b.ForwardSeconds)));
                    Console.WriteLine(string.Format(inv, "| {7} | {0} | {1:F0} | {2:F2} | {3:P1} | {4:F2} | {5:F1} | {6} |", batch, r.Median * 1e3,
                        batch / r.Median, b.GemmSeconds / b.ForwardSeconds, b.ForwardSeconds / b.GemmSeconds, b.GemmFlops / b.GemmSeconds / 1e9, top, model));
                }
            }
            else if (rows[0].Params.ContainsKey("Impl"))
            {
                Console.WriteLine("\n| M×N×K (X·Wᵀ) | threads | ours GFLOP/s | OpenBLAS GFLOP/s | ours / OpenBLAS |\n|---|---|---|---|---|");
                foreach (var g in rows.GroupBy(r => (r.Params["Shape"], r.Params["Threads"])))
                {
                    double flops = GemmBenchmarks.Flops(g.Key.Item1);
                    double? ours = g.Where(r => r.Params["Impl"] == "ours").Select(r => flops / r.Median / 1e9).FirstOrDefault();
                    double? theirs = g.Where(r => r.Params["Impl"] == "openblas").Select(r => flops / r.Median / 1e9).FirstOrDefault();
                    Console.WriteLine(string.Format(inv, "| {0} | {1} | {2:F1} | {3} | {4} |", g.Key.Item1, g.Key.Item2, ours,
                        theirs is > 0 ? theirs.Value.ToString("F1", inv) : "n/a",
                        theirs is > 0 && ours is > 0 ? (ours.Value / theirs.Value).ToString("F2", inv) : "n/a"));
                }
            }
            else
            {
                Console.WriteLine("\n| kernel | threads | GB/s | memcpy GB/s (same bytes) | kernel / memcpy |\n|---|---|---|---|---|");
                foreach (var r in rows.Where(r => !r.Params["Kernel"].StartsWith("memcpy")))
                {
                    string threads = r.Params["Threads"];
                    double gbs = MemoryBoundBenchmarks.Bytes(r.Params["Kernel"]) / r.Median / 1e9;
                    // The memcpy yardstick ran only if the filter selected it.
                    var copy = rows.FirstOrDefault(c => c.Params["Kernel"].StartsWith("memcpy") && c.Params["Threads"] == threads);
                    double? copyGbs = copy.Params == null ? null : MemoryBoundBenchmarks.Bytes(copy.Params["Kernel"]) / copy.Median / 1e9;
                    Console.WriteLine(string.Format(inv, "| {0} | {1} | {2:F1} | {3} | {4} |", r.Params["Kernel"], threads, gbs,
                        copyGbs?.ToString("F1", inv) ?? "not run (filter)", copyGbs is double c ? (gbs / c).ToString("F2", inv) : "n/a"));
                }
            }
        }
    }
}
