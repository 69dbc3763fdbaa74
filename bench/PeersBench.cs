using System.Diagnostics;
using System.Globalization;
using Engine.Autograd;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Models;
using Engine.Models.Export;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Engine.Bench;

/// <summary>
/// <c>bash bench/run.sh peers [--only gemm|forward] [--models ...] [--batches 1,8] [--rounds 5]</c>: the engine beside
/// its peers in one process, alternating round by round so that machine noise falls on both sides alike.
/// <list type="bullet">
/// <item>GEMM: our kernel against OpenBLAS at ViT-B/16's four Linear shapes for batch 1 and 8 (M = 197, 1576), on 1 and
/// 2 threads (OpenBLAS is told the same thread count).</item>
/// <item>Forward: each model exported by <see cref="ModelExport"/> and run by ONNX Runtime beside the engine on the same
/// weights (seeded initialisation) and images: the file's size, the largest logit difference, eval-forward time, and
/// where the engine's time goes (an instrumented pass after the timed rounds).</item>
/// </list>
/// </summary>
public static class PeersBench
{
    const string Usage = "bash bench/run.sh peers [--only gemm|forward] [--models vit_base_patch16_224,swin_base_patch4_window7_224,convnext_base] [--batches 1,8] [--rounds 5] [--unfused-attention]";
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Runs the comparisons and prints their tables; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine($"{Usage}\n  GEMM GFLOP/s against OpenBLAS at the ViT-B/16 shapes (1 and 2 threads), and eval-forward time against the\n" +
                              "  model's ONNX export in ONNX Runtime; medians of alternating rounds, ratios from the same run.");
            return 0;
        }
        foreach (var unknown in args.Where(a => a.StartsWith('-') && a is not ("--only" or "--models" or "--batches" or "--rounds" or "--unfused-attention")))
        {
            Console.Error.WriteLine($"error: unknown option {unknown}\nusage: {Usage}");
            return 1;
        }
        string? Arg(string name) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        string only = Arg("--only") ?? "all";
        if (only is not ("all" or "gemm" or "forward"))
        {
            Console.Error.WriteLine($"error: --only takes gemm or forward, not '{only}'\nusage: {Usage}");
            return 1;
        }
        int rounds = int.Parse(Arg("--rounds") ?? "5", Inv);
        var blas = OpenBlas.TryLoad(out var reason);
        Console.WriteLine($"CPU: {Environment.ProcessorCount} threads, GEMM micro-kernel {CpuGemm.BestIsa}; OpenBLAS: " +
                          $"{(blas == null ? reason : blas.CoreName)} (OPENBLAS_CORETYPE={Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE") ?? "unset"}); {rounds} rounds");
        Ops.FusedAttentionByDefault = !args.Contains("--unfused-attention");
        if (only is "all" or "gemm") Gemm(blas, rounds);
        if (only is "all" or "forward")
            Forward((Arg("--models") ?? "vit_base_patch16_224,swin_base_patch4_window7_224,convnext_base").Split(','),
                (Arg("--batches") ?? "1,8").Split(',').Select(b => int.Parse(b, Inv)).ToArray(), rounds);
        return 0;
    }

    /// <summary>ViT-B/16's Linear layers as M×N×K of X·Wᵀ: qkv, attention projection, MLP fc1 and fc2.</summary>
    static readonly (int N, int K, string Layer)[] VitLinears = [(2304, 768, "qkv"), (768, 768, "proj"), (3072, 768, "fc1"), (768, 3072, "fc2")];

    static unsafe void Gemm(OpenBlas? blas, int rounds)
    {
        Console.WriteLine("\n| layer | M×N×K (X·Wᵀ) | threads | ours GFLOP/s | OpenBLAS GFLOP/s | ours / OpenBLAS |\n|---|---|---|---|---|---|");
        int savedThreads = CpuParallel.Threads;
        try
        {
            foreach (int M in new[] { 197, 1576 })
                foreach (var (N, K, layer) in VitLinears)
                    foreach (int threads in new[] { 1, 2 }.Where(t => t <= Environment.ProcessorCount))
                    {
                        float* x = Aligned.Filled((long)M * K), w = Aligned.Filled((long)N * K), y = Aligned.Filled((long)M * N);
                        CpuParallel.Threads = threads;
                        blas?.SetThreads(threads);
                        double flops = 2.0 * M * N * K;
                        // One round = several calls of each (about 60 ms at 300 GFLOP/s), ours then OpenBLAS.
                        int calls = Math.Max(5, (int)(2e10 / flops));
                        var ours = new List<double>();
                        var theirs = new List<double>();
                        for (int r = -1; r < rounds; r++) // round -1 warms up both
                        {
                            double t = Time(calls, () => CpuGemm.Gemm(false, true, M, N, K, 1f, x, K, w, K, 0f, y, N));
                            if (r >= 0) ours.Add(flops / t / 1e9);
                            if (blas == null) continue;
                            t = Time(calls, () => blas.Sgemm(false, true, M, N, K, 1f, x, K, w, K, 0f, y, N));
                            if (r >= 0) theirs.Add(flops / t / 1e9);
                        }
                        double o = Median(ours);
                        string peer = blas == null ? "n/a" : Median(theirs).ToString("F1", Inv);
                        string ratio = blas == null ? "n/a" : (o / Median(theirs)).ToString("F2", Inv);
                        Console.WriteLine(string.Format(Inv, "| {0} | {1}×{2}×{3} | {4} | {5:F1} | {6} | {7} |", layer, M, N, K, threads, o, peer, ratio));
                        Aligned.Free(x, w, y);
                    }
        }
        finally
        {
            CpuParallel.Threads = savedThreads;
        }
    }

    /// <summary>Seconds per call of <paramref name="work"/>, after a pause that lets the other side's threads go idle
    /// (OpenBLAS's workers spin for a while after each call and would otherwise take a core from ours, and back) and one
    /// untimed call that wakes this side's threads (the first call after a pause ran up to 2× slower on either side).</summary>
    static double Time(int calls, Action work)
    {
        Thread.Sleep(200);
        work();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < calls; i++) work();
        return clock.Elapsed.TotalSeconds / calls;
    }

    /// <summary>One profiled ONNX Runtime run (after a warm-up, in a session of its own): the share of its node time
    /// spent in matrix-product ops and its three largest other op types, from ORT's own profile.</summary>
    static string OrtSplit(string model, float[] pixels, int batch, int size)
    {
        string prefix = Path.Combine(Path.GetTempPath(), $"peft-peers-ort-profile-{Environment.ProcessId}");
        using var options = new SessionOptions
        {
            IntraOpNumThreads = Environment.ProcessorCount, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            EnableProfiling = true, ProfileOutputPathPrefix = prefix,
        };
        using var session = new InferenceSession(model, options);
        var input = new[] { NamedOnnxValue.CreateFromTensor("pixel_values", new DenseTensor<float>(pixels, [batch, 3, size, size])) };
        session.Run(input).Dispose(); // warm-up
        session.Run(input).Dispose();
        string file = session.EndProfiling();
        try
        {
            // Chrome-trace events: per node "…_kernel_time" with args.op_name and dur (µs); keep the last run's only.
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(file));
            var nodes = doc.RootElement.EnumerateArray()
                .Where(ev => ev.TryGetProperty("cat", out var cat) && cat.GetString() == "Node" &&
                             ev.GetProperty("name").GetString()!.EndsWith("_kernel_time", StringComparison.Ordinal))
                .Select(ev => (Op: ev.GetProperty("args").GetProperty("op_name").GetString()!, Us: ev.GetProperty("dur").GetDouble()))
                .ToList();
            var last = nodes.Skip(nodes.Count / 2).ToList(); // the two runs profile the same nodes in the same order
            double total = last.Sum(n => n.Us);
            bool IsProduct(string op) => op is "MatMul" or "Gemm" or "FusedMatMul" or "FusedGemm" or "QAttention" or "Attention";
            double gemm = last.Where(n => IsProduct(n.Op)).Sum(n => n.Us);
            var others = last.Where(n => !IsProduct(n.Op)).GroupBy(n => n.Op).Select(g => (Op: g.Key, Us: g.Sum(n => n.Us)))
                .OrderByDescending(g => g.Us).Take(3);
            return string.Format(Inv, "GEMM {0:P0}; ", gemm / total) + // shares only: profiling slows every node
                   string.Join(", ", others.Select(g => string.Format(Inv, "{0} {1:P1}", g.Op, g.Us / total)));
        }
        finally
        {
            File.Delete(file);
        }
    }

    static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);

    static void Forward(string[] models, int[] batches, int rounds)
    {
        CpuParallel.Threads = Environment.ProcessorCount;
        Console.WriteLine($"\nEval forward (224×224, 1000 classes), {Environment.ProcessorCount} threads each, engine attention {(Ops.FusedAttentionByDefault ? "fused" : "unfused")}; ONNX Runtime CPU with all graph optimisations.");
        Console.WriteLine("\n| model | .onnx MiB | batch | max abs logit difference | engine ms | ORT ms | engine / ORT time | engine: GEMM share, largest other kernels | ORT (profiled run): GEMM share, largest other ops |\n|---|---|---|---|---|---|---|---|---|");
        var kernels = new InstrumentedKernels(new CpuKernels());
        var device = new CpuDevice(kernels);
        foreach (var preset in models)
        {
            using var model = ImageModels.Create(device, preset, 1000, seed: 1);
            string path = Path.Combine(Path.GetTempPath(), $"peft-peers-bench-{Environment.ProcessId}-{preset}.onnx");
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
                    var pixels = Enumerable.Range(0, batch * 3 * size * size).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                    using var input = Tensor.FromArray(device, pixels, batch, 3, size, size);
                    float[] Engine()
                    {
                        using var _ = Tape.NoGrad();
                        using var logits = model.Forward(input);
                        return logits.ToArray();
                    }
                    float[] Ort()
                    {
                        using var results = session.Run([NamedOnnxValue.CreateFromTensor("pixel_values", new DenseTensor<float>(pixels, [batch, 3, size, size]))]);
                        return [.. results.Single().AsEnumerable<float>()];
                    }
                    double worst = Engine().Zip(Ort()).Max(p => Math.Abs(p.First - p.Second)); // also the warm-up
                    var engineMs = new List<double>();
                    var ortMs = new List<double>();
                    for (int r = 0; r < rounds; r++)
                    {
                        engineMs.Add(Time(1, () => Engine()) * 1e3);
                        ortMs.Add(Time(1, () => Ort()) * 1e3);
                    }
                    double e = Median(engineMs), o = Median(ortMs);
                    Console.WriteLine(string.Format(Inv, "| {0} | {1:F1} | {2} | {3:E1} | {4:F0} | {5:F0} | {6:F2} | {7} | {8} |", preset, mib, batch, worst, e, o, e / o,
                        KernelSplit.Of(kernels, () => Engine()), OrtSplit(path, pixels, batch, size)));
                }
            }
            finally
            {
                File.Delete(path);
            }
        }
    }
}
