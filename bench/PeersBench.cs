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
/// <c>bash bench/run.sh peers [--only gemm|backward|forward] [--models ...] [--batches 1,8] [--rounds 5]</c>: the engine beside
/// its peers in one process, alternating round by round so that machine noise falls on both sides alike.
/// <list type="bullet">
/// <item>GEMM: our kernel against OpenBLAS and ONNX Runtime's MatMul (MLAS) at ViT-B/16's four Linear shapes for each of
/// --batches (default 1 and 8: M = 197, 1576) and Swin-B/ConvNeXt-B's stage-3 and stage-4 MLPs at batch 1, on 1 and 2 threads (each peer is given the
/// same thread count), and our kernel again reading W packed once (<see cref="CpuGemm.PackedB"/>), as ORT reads the
/// weight it packed when the session loaded (with --cold-weights each product reads the next of many copies of W, so W
/// comes from memory as in a forward); then the backward's two products (dX = dY·W, dW = dYᵀ·X) of ViT-B/16's
/// Linear layers at batch 8 against OpenBLAS, dX also with W packed once (what a frozen weight could read). --only gemm
/// runs both GEMM tables, --only backward the second alone.</item>
/// <item>Forward: each model exported by <see cref="ModelExport"/> and run by ONNX Runtime beside the engine on the same
/// weights (seeded initialisation) and images: the file's size, the largest logit difference, eval-forward time with the
/// engine's weights frozen (<see cref="FrozenWeights"/>) beside ORT and beside the same model thawed, and where
/// the engine's time goes (an instrumented pass after the timed rounds).</item>
/// </list>
/// </summary>
public static class PeersBench
{
    const string Usage = "bash bench/run.sh peers [--only gemm|backward|forward] [--models vit_base_patch16_224,swin_base_patch4_window7_224,convnext_base] [--batches 1,8] [--rounds 5] [--unfused-attention] [--cold-weights]";
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Runs the comparisons and prints their tables; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine($"{Usage}\n  GEMM GFLOP/s against OpenBLAS and ORT's MatMul at the ViT-B/16 shapes (1 and 2 threads), and eval-forward time against the\n" +
                              "  model's ONNX export in ONNX Runtime; medians of alternating rounds; each ratio is the median of the per-round ratios (a round's\n" +
                              "  sides run back to back, so a slow spell of a shared VM slows both).");
            return 0;
        }
        foreach (var unknown in args.Where(a => a.StartsWith('-') && a is not ("--only" or "--models" or "--batches" or "--rounds" or "--unfused-attention" or "--cold-weights")))
        {
            Console.Error.WriteLine($"error: unknown option {unknown}\nusage: {Usage}");
            return 1;
        }
        string? Arg(string name) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        string only = Arg("--only") ?? "all";
        if (only is not ("all" or "gemm" or "backward" or "forward"))
        {
            Console.Error.WriteLine($"error: --only takes gemm, backward or forward, not '{only}'\nusage: {Usage}");
            return 1;
        }
        int rounds = int.Parse(Arg("--rounds") ?? "5", Inv);
        int[] batches = (Arg("--batches") ?? "1,8").Split(',').Select(b => int.Parse(b, Inv)).ToArray();
        var blas = OpenBlas.TryLoad(out var reason);
        Console.WriteLine($"CPU: {Environment.ProcessorCount} threads, GEMM micro-kernel {CpuGemm.BestIsa}; OpenBLAS: " +
                          $"{(blas == null ? reason : blas.CoreName)} (OPENBLAS_CORETYPE={Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE") ?? "unset"}); {rounds} rounds");
        Ops.DefaultAttentionPath = args.Contains("--unfused-attention") ? AttentionPath.Unfused : AttentionPath.Auto;
        if (only is "all" or "gemm") Gemm(blas, batches, rounds, args.Contains("--cold-weights"));
        if (only is "all" or "gemm" or "backward")
        {
            if (blas != null) TrainingGemm(blas, rounds);
            else Console.WriteLine($"\nThe backward's products are compared against OpenBLAS only, which is missing: {reason}");
        }
        if (only is "all" or "forward")
            Forward((Arg("--models") ?? "vit_base_patch16_224,swin_base_patch4_window7_224,convnext_base").Split(','),
                batches, rounds);
        return 0;
    }

    /// <summary>The GEMM shapes, M×N×K of X·Wᵀ: ViT-B/16's Linear layers (qkv, attention projection, MLP fc1 and fc2) at
    /// each of <paramref name="batches"/> (M = 197·batch; the issue's first yardstick was batch 32, M = 6304), then, when
    /// batch 1 is among them, the MLP of Swin-B's and ConvNeXt-B's third stage (most of their FLOPs) and fourth stage (49
    /// rows, where packing a weight block is repaid by the fewest rows) at batch 1.</summary>
    static (int M, int N, int K, string Layer)[] GemmShapes(int[] batches) =>
    [
        .. batches.Select(b => 197 * b).SelectMany(M => new[] { (M, 2304, 768, "qkv"), (M, 768, 768, "proj"), (M, 3072, 768, "fc1"), (M, 768, 3072, "fc2") }),
        .. batches.Contains(1)
            ? new[] { (196, 2048, 512, "stage-3 fc1"), (196, 512, 2048, "stage-3 fc2"), (49, 4096, 1024, "stage-4 fc1"), (49, 1024, 4096, "stage-4 fc2") }
            : [],
    ];

    /// <summary>With <paramref name="coldWeights"/>, every side cycles through enough copies of W (each product reads the
    /// next one) that they cannot stay in any cache, as inside a forward, where each layer's weight comes from memory;
    /// ORT runs one session holding one MatMul per copy. A register-only FMA loop (<see cref="FmaPeak"/>) takes its turn
    /// among the sides with the same FLOPs, so each row also says how close the products come to the core's ceiling in
    /// the same spell of the machine.</summary>
    static unsafe void Gemm(OpenBlas? blas, int[] batches, int rounds, bool coldWeights)
    {
        Console.WriteLine((coldWeights ? "\nEach product reads the next of several copies of W (256 MiB or more of weights), so W comes from memory.\n" : "") +
                          "\n| layer | M×N×K (X·Wᵀ) | threads | ours GFLOP/s | OpenBLAS GFLOP/s | ORT MatMul GFLOP/s | ours, W packed once GFLOP/s | ours / OpenBLAS | ours / ORT | W packed once / ORT | FMA loop GFLOP/s | W packed once / FMA loop | ORT / FMA loop |\n" +
                          "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        int savedThreads = CpuParallel.Threads;
        try
        {
            foreach (var (M, N, K, layer) in GemmShapes(batches))
                foreach (int threads in new[] { 1, 2 }.Where(t => t <= Environment.ProcessorCount))
                {
                    int copies = coldWeights ? (int)Math.Clamp((256L << 20) / ((long)N * K * sizeof(float)), 2, 256) : 1;
                    using var input = Weight((long)M * K); // allocated as the forward's activations are (huge pages from 2 MiB)
                    float* x = (float*)input.Pointer;
                    var weights = Enumerable.Range(0, copies).Select(_ => Weight((long)N * K)).ToArray();
                    var outputs = Enumerable.Range(0, copies).Select(_ => Weight((long)M * N)).ToArray(); // as ORT's: one per product
                    using var ort = new OrtMatMul(M, N, K, threads, copies);
                    var packs = weights.Select(w => CpuGemm.PackedB.Pack(true, (float*)w.Pointer, K, K, N)).ToArray(); // frozen weights, as ORT's initializers
                    CpuParallel.Threads = threads;
                    blas?.SetThreads(threads);
                    double flops = 2.0 * M * N * K * copies; // a call: one product per copy
                    float* W(int i) => (float*)weights[i].Pointer;
                    float* Y(int i) => (float*)outputs[i].Pointer;
                    var sides = new List<Action>
                    {
                        () => { for (int i = 0; i < copies; i++) CpuGemm.Gemm(false, true, M, N, K, 1f, x, K, W(i), K, 0f, Y(i), N); },
                        ort.Run,
                        () => { for (int i = 0; i < copies; i++) CpuGemm.Gemm(false, true, M, N, K, 1f, x, K, null, K, 0f, Y(i), N, packedB: packs[i]); },
                        () => FmaPeak.Run(flops),
                    };
                    if (blas != null) sides.Add(() => { for (int i = 0; i < copies; i++) blas.Sgemm(false, true, M, N, K, 1f, x, K, W(i), K, 0f, Y(i), N); });
                    var speeds = Alternate(rounds, flops, sides);
                    List<double> ours = speeds[0], mlas = speeds[1], oursPacked = speeds[2], peak = speeds[3], theirs = blas == null ? [] : speeds[4];
                    double o = Rounds.Median(ours), m = Rounds.Median(mlas);
                    string peer = blas == null ? "n/a" : Rounds.Median(theirs).ToString("F1", Inv);
                    string ratio = blas == null ? "n/a" : Rounds.PairedRatio(ours, theirs).ToString("F2", Inv);
                    Console.WriteLine(string.Format(Inv, "| {0} | {1}×{2}×{3} | {4} | {5:F1} | {6} | {7:F1} | {8:F1} | {9} | {10:F2} | {11:F2} | {12:F1} | {13:F2} | {14:F2} |",
                        layer, M, N, K, threads, o, peer, m, Rounds.Median(oursPacked), ratio, Rounds.PairedRatio(ours, mlas), Rounds.PairedRatio(oursPacked, mlas),
                        Rounds.Median(peak), Rounds.PairedRatio(oursPacked, peak), Rounds.PairedRatio(mlas, peak)));
                    foreach (IDisposable d in weights.Concat<IDisposable>(outputs).Concat(packs)) d.Dispose();
                }
        }
        finally
        {
            CpuParallel.Threads = savedThreads;
        }
    }

    /// <summary>n floats in memory allocated as the engine allocates a weight's or an activation's, filled as
    /// <see cref="Aligned.Filled"/>.</summary>
    static unsafe NativeBuffer Weight(long n)
    {
        var buffer = new NativeBuffer(n * sizeof(float));
        float* w = Aligned.Filled(n);
        Buffer.MemoryCopy(w, buffer.Pointer, buffer.Bytes, buffer.Bytes);
        Aligned.Free(w);
        return buffer;
    }

    /// <summary>The training step's other two products for each of ViT-B/16's Linear layers at batch 8 (1576 tokens),
    /// out × in: dX = dY·W (M×N×K = 1576×in×out, B not transposed) and dW = dYᵀ·X (out×in×1576, A transposed: the
    /// tokens are summed over).</summary>
    static readonly (int Out, int In, string Layer)[] TrainingLayers = [(2304, 768, "qkv"), (768, 768, "proj"), (3072, 768, "fc1"), (768, 3072, "fc2")];

    /// <summary>Our GEMM against OpenBLAS at the backward products of <see cref="TrainingLayers"/>, 1 and 2 threads.</summary>
    static unsafe void TrainingGemm(OpenBlas blas, int rounds)
    {
        Console.WriteLine("\n| layer | product | M×N×K | threads | ours GFLOP/s | OpenBLAS GFLOP/s | ours / OpenBLAS | ours, W packed once / OpenBLAS | FMA loop GFLOP/s | ours / FMA loop | OpenBLAS / FMA loop |\n" +
                          "|---|---|---|---|---|---|---|---|---|---|---|");
        const int T = 1576;
        int savedThreads = CpuParallel.Threads;
        try
        {
            foreach (var (Out, In, layer) in TrainingLayers)
                foreach (bool weightGrad in new[] { false, true })
                    foreach (int threads in new[] { 1, 2 }.Where(t => t <= Environment.ProcessorCount))
                    {
                        // dY [T, out]; dX: B = W [out, in], C [T, in]; dW: B = X [T, in], C [out, in].
                        int M = weightGrad ? Out : T, K = weightGrad ? T : Out;
                        float* dy = Aligned.Filled((long)T * Out), b = Aligned.Filled((long)K * In), c = Aligned.Filled((long)M * In);
                        // dX of a frozen weight could read W's panels packed once, as the forward does (dW has no frozen operand).
                        using var packed = weightGrad ? null : CpuGemm.PackedB.Pack(false, b, In, K, In);
                        CpuParallel.Threads = threads;
                        blas.SetThreads(threads);
                        var sides = new List<Action>
                        {
                            () => CpuGemm.Gemm(weightGrad, false, M, In, K, 1f, dy, Out, b, In, 0f, c, In),
                            () => blas.Sgemm(weightGrad, false, M, In, K, 1f, dy, Out, b, In, 0f, c, In),
                            () => FmaPeak.Run(2.0 * M * In * K),
                        };
                        if (packed != null) sides.Add(() => CpuGemm.Gemm(false, false, M, In, K, 1f, dy, Out, null, In, 0f, c, In, packedB: packed));
                        var speeds = Alternate(rounds, 2.0 * M * In * K, sides);
                        Console.WriteLine(string.Format(Inv, "| {0} | {1} | {2}×{3}×{4} | {5} | {6:F1} | {7:F1} | {8:F2} | {9} | {10:F1} | {11:F2} | {12:F2} |", layer,
                            weightGrad ? "dW = dYᵀ·X" : "dX = dY·W", M, In, K, threads, Rounds.Median(speeds[0]), Rounds.Median(speeds[1]),
                            Rounds.PairedRatio(speeds[0], speeds[1]), packed == null ? "–" : Rounds.PairedRatio(speeds[3], speeds[1]).ToString("F2", Inv),
                            Rounds.Median(speeds[2]), Rounds.PairedRatio(speeds[0], speeds[2]), Rounds.PairedRatio(speeds[1], speeds[2])));
                        Aligned.Free(dy, b, c);
                    }
        }
        finally
        {
            CpuParallel.Threads = savedThreads;
        }
    }

    /// <summary>GFLOP/s of each side per round: one round = several calls of each (about 60 ms at 300 GFLOP/s), the
    /// sides taking turns going first; round -1 warms every side up and is not kept.</summary>
    static List<double>[] Alternate(int rounds, double flops, IReadOnlyList<Action> sides)
    {
        int calls = Math.Max(5, (int)(2e10 / flops));
        var speeds = sides.Select(_ => new List<double>()).ToArray();
        for (int r = -1; r < rounds; r++)
            for (int i = 0; i < sides.Count; i++)
            {
                int side = (i + Math.Max(r, 0)) % sides.Count;
                double t = Time(calls, sides[side]);
                if (r >= 0) speeds[side].Add(flops / t / 1e9);
            }
        return speeds;
    }

    /// <summary>ONNX Runtime's MatMul (MLAS's SGEMM, the product under every ORT forward above) on <c>copies</c>
    /// weights: y_i [M, N] = x [M, K] · W_iᵀ, W_iᵀ [K, N] an initializer (each a different fill, so none is shared); a run
    /// is the <c>copies</c> products one after another, inputs and outputs bound once.</summary>
    sealed class OrtMatMul : IDisposable
    {
        readonly string _path = Path.Combine(Path.GetTempPath(), $"peft-peers-matmul-{Environment.ProcessId}.onnx");
        readonly InferenceSession _session;
        readonly OrtIoBinding _binding;
        readonly RunOptions _run = new();
        readonly OrtValue[] _values;

        public OrtMatMul(int M, int N, int K, int threads, int copies)
        {
            var graph = new OnnxGraph();
            graph.Declare(true, "x", M, K);
            for (int i = 0; i < copies; i++)
            {
                string wt = graph.Weight($"wt{i}", Enumerable.Range(0, N * K).Select(j => ((j + i) % 23 - 11) * 0.01f).ToArray(), K, N);
                graph.Output(graph.Node("MatMul", $"matmul{i}", ["x", wt]), $"y{i}", M, N);
            }
            graph.Save(_path, 17, "MatMuls", [], long.MaxValue);
            using var options = new SessionOptions { IntraOpNumThreads = threads, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
            _session = new InferenceSession(_path, options);
            _binding = _session.CreateIoBinding();
            var x = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(0.5f, M * K).ToArray(), [M, K]);
            _binding.BindInput("x", x);
            _values = [x, .. Enumerable.Range(0, copies).Select(i =>
            {
                var y = OrtValue.CreateTensorValueFromMemory(new float[M * N], [M, N]);
                _binding.BindOutput($"y{i}", y);
                return y;
            })];
        }

        public void Run() => _session.RunWithBinding(_run, _binding);

        public void Dispose()
        {
            _binding.Dispose();
            _run.Dispose();
            foreach (var v in _values) v.Dispose();
            _session.Dispose();
            File.Delete(_path);
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

    static void Forward(string[] models, int[] batches, int rounds)
    {
        CpuParallel.Threads = Environment.ProcessorCount;
        Console.WriteLine($"\nEval forward (224×224, 1000 classes), {Environment.ProcessorCount} threads each, engine attention {(Ops.DefaultAttentionPath == AttentionPath.Unfused ? "unfused" : "fused")}; ONNX Runtime CPU with all graph optimisations.");
        Console.WriteLine("Engine: the model's weights frozen (FrozenWeights: the CPU GEMM packs each Linear weight once, as ORT packs its initializers at load); 'thawed': the same model with its weights thawed, every product packing its weight blocks as it goes.");
        Console.WriteLine("\n| model | .onnx MiB | batch | max abs logit difference | engine ms | thawed ms | ORT ms | engine / ORT time | engine / thawed time | packed weights MiB | engine: GEMM share, largest other kernels | ORT (profiled run): GEMM share, largest other ops |\n|---|---|---|---|---|---|---|---|---|---|---|---|");
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
                    // The same model frozen and thawed by turns (a second copy of the weights elsewhere in memory
                    // measured up to 16% apart from the first with neither frozen); each timing's untimed first call
                    // freezes and packs, or thaws.
                    FrozenWeights? frozen = null;
                    float[] Run(bool freeze)
                    {
                        if (freeze) frozen ??= FrozenWeights.Freeze(model.Parameters);
                        else
                        {
                            frozen?.Dispose();
                            frozen = null;
                        }
                        using var _ = Tape.NoGrad();
                        using var logits = model.Forward(input);
                        return logits.ToArray();
                    }
                    float[] Engine() => Run(freeze: true);
                    float[] Ort()
                    {
                        using var results = session.Run([NamedOnnxValue.CreateFromTensor("pixel_values", new DenseTensor<float>(pixels, [batch, 3, size, size]))]);
                        return [.. results.Single().AsEnumerable<float>()];
                    }
                    var engineLogits = Engine();
                    double packedMib = ((CpuKernels)kernels.Inner).PackedWeightBytes / 1048576.0; // also the warm-ups (the first frozen forward packs the weights)
                    double worst = engineLogits.Zip(Ort()).Max(p => Math.Abs(p.First - p.Second));
                    if (!engineLogits.AsSpan().SequenceEqual(Run(freeze: false)))
                        throw new InvalidOperationException($"{preset}: frozen and thawed logits differ (packing once must not change a bit)");
                    var engineMs = new List<double>();
                    var thawedMs = new List<double>();
                    var ortMs = new List<double>();
                    var sides = new List<(Action Run, List<double> Ms)> { (() => Engine(), engineMs), (() => Ort(), ortMs), (() => Run(freeze: false), thawedMs) };
                    for (int r = 0; r < rounds; r++) // taking turns going first
                        for (int i = 0; i < sides.Count; i++)
                        {
                            var (run, ms) = sides[(i + r) % sides.Count];
                            ms.Add(Time(1, run) * 1e3);
                        }
                    Console.WriteLine(string.Format(Inv, "| {0} | {1:F1} | {2} | {3:E1} | {4:F0} | {5:F0} | {6:F0} | {7:F2} | {8:F2} | {9:F1} | {10} | {11} |", preset, mib, batch, worst,
                        Rounds.Median(engineMs), Rounds.Median(thawedMs), Rounds.Median(ortMs), Rounds.PairedRatio(engineMs, ortMs), Rounds.PairedRatio(engineMs, thawedMs), packedMib,
                        KernelSplit.Of(kernels, () => Engine()), OrtSplit(path, pixels, batch, size)));
                    frozen?.Dispose();
                }
            }
            finally
            {
                File.Delete(path);
            }
        }
    }
}
