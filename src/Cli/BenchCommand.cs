using System.CommandLine;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Kernels.Cuda;
using Engine.Models;
using Engine.Models.Peft;
using Engine.Models.Training;

namespace Engine.Cli;

/// <summary><c>peft bench</c>: times one kernel at any shape on a device (GB/s against the device's copy of the same
/// bytes, or GEMM GFLOP/s beside OpenBLAS on the CPU); <c>--list</c> names the ops and their shapes; <c>--train-step</c>
/// times whole training steps per method, precision and batch.</summary>
public static class BenchCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var op = new Option<string?>("--op") { Description = $"The kernel: {string.Join(", ", DeviceBenchmarks.Ops.Select(o => o.Name))}" };
        var shape = new Option<string?>("--shape") { Description = "Its shape, e.g. 1576x3072 (see --list for each op's form)" };
        var repeats = new Option<int>("--repeats") { Description = "Timed calls after two warm-up calls (the median is reported)", DefaultValueFactory = _ => 10 }.AtLeast(1);
        var list = new Option<bool>("--list") { Description = "List the ops and the shape each takes" };
        var device = DeviceOption.Create();
        var trainStep = new Option<bool>("--train-step") { Description = "Time a whole training step per method and precision instead of one kernel" };
        var model = new Option<string>("--model") { Description = "With --train-step: the model (a preset or a config)", DefaultValueFactory = _ => "vit_base_patch16_224" };
        var batches = new Option<int[]>("--batch") { Description = "With --train-step: images per step, one or more", DefaultValueFactory = _ => [32], AllowMultipleArgumentsPerToken = true };
        var methods = new Option<string[]>("--methods")
        {
            Description = $"With --train-step: the methods (default: {string.Join(" ", PeftMethods.Default.Select(m => m.Name))}, those the model's family has; also: {string.Join(" ", PeftMethods.All.Except(PeftMethods.Default).Select(m => m.Name))})",
            AllowMultipleArgumentsPerToken = true,
        };
        var precisions = new Option<string[]>("--precision")
        {
            Description = "GEMM operand precisions, one or more of fp32 tf32 bf16 fp16 (a row for each; with --op they set the kernel's GEMMs, " +
                          "fused attention's rounding and the tensor-core paths)", DefaultValueFactory = _ => ["fp32"],
            AllowMultipleArgumentsPerToken = true,
        };
        var json = new Option<string?>("--json") { Description = "With --train-step: also write the rows as JSON lines to this file" };
        var cudaGraph = new Option<bool>("--cuda-graph")
        {
            Description = "With --train-step on a CUDA device: capture each step (forward, loss, backward, AdamW) in a CUDA graph and time " +
                          "its replays (one launch instead of one per kernel)",
        };
        var attention = new Option<string>("--attention")
        {
            Description = "With --train-step: the attention path, auto (the device's faster one: fused on the CPU; on a GPU, where the fused " +
                          "kernels run on tensor cores, each shape's faster path, timed both ways on its first step; else unfused), fused or unfused",
            DefaultValueFactory = _ => "auto",
        };
        var epilogues = new Option<string>("--linear-epilogues")
        {
            Description = "With --train-step on a CUDA device: on (each Linear's bias added in the GEMM's epilogue, cuBLASLt on a GPU, outputs " +
                          "only products read written in 16 bits straight from it) or off (a GEMM into float32, then a bias pass; to compare)",
            DefaultValueFactory = _ => "on",
        };
        var profile = new Option<bool>("--profile")
        {
            Description = "With --train-step: after the timed steps, one more step with every kernel timed where it runs (GPU events on a GPU) " +
                          "and a table of the kernels by their share of it; on a CUDA device one more with each kernel launch and library product " +
                          "(by shape, with TFLOP/s) timed on its own",
        };
        var command = new Command("bench", "Time one kernel at any shape on a device (ms, GB/s and its share of the device's copy bandwidth, or GEMM " +
                                           "GFLOP/s), or with --train-step a training step per method, precision and batch (images/s, peak memory).")
        {
            op, shape, repeats, list, device, trainStep, model, batches, methods, precisions, json, cudaGraph, profile, attention, epilogues,
        };
        command.SetAction(r =>
        {
            if (r.GetValue(cudaGraph) && !r.GetValue(trainStep)) throw new ArgumentException("--cuda-graph: goes with --train-step");
            if (r.GetValue(profile) && !r.GetValue(trainStep)) throw new ArgumentException("--profile: goes with --train-step");
            if (r.GetValue(profile) && r.GetValue(cudaGraph))
                throw new ArgumentException("--profile: times each kernel on its own, which a replayed CUDA graph cannot do; drop --cuda-graph");
            if (r.GetValue(attention) != "auto" && !r.GetValue(trainStep)) throw new ArgumentException("--attention: goes with --train-step");
            var path = r.GetValue(attention) switch
            {
                "auto" => AttentionPath.Auto,
                "fused" => AttentionPath.Fused,
                "unfused" => AttentionPath.Unfused,
                var other => throw new ArgumentException($"--attention must be auto, fused or unfused (got '{other}')"),
            };
            bool linearEpilogues = r.GetValue(epilogues) switch
            {
                "on" => true,
                "off" => false,
                var other => throw new ArgumentException($"--linear-epilogues must be on or off (got '{other}')"),
            };
            if (!linearEpilogues && !r.GetValue(trainStep)) throw new ArgumentException("--linear-epilogues: goes with --train-step");
            if (r.GetValue(trainStep))
            {
                var previous = Ops.DefaultAttentionPath;
                Ops.DefaultAttentionPath = path;
                var trainDevice = DeviceOption.Resolve(r.GetValue(device)!, instrumented: r.GetValue(profile));
                if (!linearEpilogues && trainDevice is not CudaDevice)
                    throw new ArgumentException($"--linear-epilogues: only a CUDA device has them (--device cuda or emulated-cuda), not {trainDevice.Name}");
                var runtime = (trainDevice as CudaDevice)?.Runtime;
                bool previousEpilogues = runtime?.LinearEpilogues ?? true;
                try
                {
                    if (runtime != null) runtime.LinearEpilogues = linearEpilogues;
                    return TrainSteps(trainDevice, r.GetValue(model)!, r.GetValue(batches)!,
                        r.GetValue(methods), [.. r.GetValue(precisions)!.Select(LowPrecision.Parse)], r.GetValue(repeats), r.GetValue(json), r.GetValue(cudaGraph));
                }
                finally
                {
                    Ops.DefaultAttentionPath = previous;
                    if (runtime != null) runtime.LinearEpilogues = previousEpilogues;
                }
            }
            if (r.GetValue(list))
            {
                int width = DeviceBenchmarks.Ops.Max(o => o.Name.Length) + 1;
                foreach (var o in DeviceBenchmarks.Ops) Console.WriteLine($"{o.Name.PadRight(width)} {o.ShapeForm,-12} {o.What}");
                return 0;
            }
            string name = r.GetValue(op) ?? throw new ArgumentException("--op: which kernel to time (--list shows them)");
            var info = DeviceBenchmarks.Ops.FirstOrDefault(o => o.Name == name)
                ?? throw new ArgumentException($"--op: unknown op '{name}' (known: {string.Join(", ", DeviceBenchmarks.Ops.Select(o => o.Name))})");
            var dims = DeviceBenchmarks.ParseShape(info, r.GetValue(shape) ?? throw new ArgumentException($"--shape: the size to time ({info.Name} takes {info.ShapeForm})"));
            var opPrecisions = r.GetValue(precisions)!.Select(LowPrecision.Parse).ToArray();
            var dev = DeviceOption.Resolve(r.GetValue(device)!);
            Console.WriteLine($"{info.Name} ({info.What}) on {(dev is CudaDevice c ? c.Runtime.Description : $"the CPU, {CpuParallel.Threads} thread(s)")}, median of {r.GetValue(repeats)}");
            Console.WriteLine(DeviceBenchmarks.TableHeader);
            foreach (var precision in opPrecisions)
            {
                using var scope = dev.Kernels.UseGemmPrecision(precision);
                var row = DeviceBenchmarks.Measure(dev, info.Name, dims, r.GetValue(repeats));
                Console.WriteLine(DeviceBenchmarks.FormatRow(precision == Precision.FP32 ? row : row with { Name = $"{row.Name} {precision}" }));
            }
            return 0;
        });
        return command;
    }

    /// <summary><c>--train-step</c>: for each batch, precision and method, one warm-up step (two with a CUDA graph: the
    /// second captures it) then the median of <paramref name="repeats"/> timed steps (each finished on the device),
    /// images/s and the device's peak bytes in use over the steps after the first. Attention paths chosen by measurement
    /// (<see cref="CudaDevice.TunesAttention"/>) are printed as they are made, and each row says the path its steps ran.</summary>
    static int TrainSteps(Device device, string model, int[] batches, string[]? methodNames, Precision[] precisions, int repeats, string? jsonPath,
        bool cudaGraph)
    {
        if (batches.Any(b => b < 1)) throw new ArgumentException($"--batch: every batch must be at least 1 (got {string.Join(" ", batches)})");
        if (cudaGraph && device is not CudaDevice)
            throw new ArgumentException($"--cuda-graph: needs a CUDA device (--device cuda or emulated-cuda), not {device.Name}");
        string family = ImageModels.FamilyOf(model);
        foreach (var m in (methodNames ?? []).Where(m => PeftMethods.Find(m) == null))
            throw new ArgumentException($"--methods: unknown method '{m}' (use {string.Join(", ", PeftMethods.Names)})");
        var methods = methodNames is { Length: > 0 } ? [.. methodNames.Select(PeftMethods.Get)] : PeftMethods.Default.Where(m => m.AppliesTo(family)).ToList();
        foreach (var m in methods.Where(m => !m.AppliesTo(family)))
            throw new ArgumentException($"--methods: {m.Title} is not defined for {ImageModels.FamilyTitle(family)}");
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        string attention = Ops.DefaultAttentionPath switch
        {
            AttentionPath.Fused => "fused",
            AttentionPath.Unfused => "unfused",
            _ when device is CudaDevice { TunesAttention: true } => "auto: each shape timed both ways on first use",
            _ => device.PrefersFusedAttention ? "fused" : "unfused",
        };
        string linear = device is CudaDevice { Runtime: var runtime } ? $"; Linear biases {(runtime.LinearEpilogues ? "in the GEMMs' epilogues" : "in a pass after the GEMMs")}" : "";
        Console.WriteLine($"{model} training step (forward, loss, backward, Adam; 100 classes; attention {attention}{linear}" +
                          $"{(cudaGraph ? "; replayed from a CUDA graph" : "")}) " +
                          $"on {(device is CudaDevice c ? c.Runtime.Description : $"the CPU, {CpuParallel.Threads} thread(s)")}, median of {repeats}");
        // Peak memory: the tensors' (PyTorch's max_memory_allocated); device: all the CUDA runtime held, the pool's cached
        // buffers and the kernels' scratch included (PyTorch's max_memory_reserved).
        var gpuRuntime = (device as CudaDevice)?.Runtime;
        Console.WriteLine("| method | precision | batch | ms per step | images/s | peak memory MiB | trainable | activations kept MiB | device MiB |\n|---|---|---|---|---|---|---|---|---|");
        using var jsonFile = jsonPath == null ? null : new StreamWriter(jsonPath);
        var reported = new HashSet<string>(); // declined Linear products already printed
        int rows = 0, outOfMemory = 0, failed = 0;
        var order = (from batch in batches from precision in precisions from method in methods select (batch, precision, method)).ToList();
        foreach (var (batch, precision, method) in order)
        {
            rows++;
            using var scope = device.Kernels.UseGemmPrecision(precision);
            try
            {
                // A row can take minutes (ViT-B/16 at batch 128 on a CPU or the emulated device): its steps are shown
                // on a terminal, where the row replaces them; logs get the table alone.
                int steps = 0, total = 1 + (cudaGraph ? 1 : 0) + repeats;
                var progress = new Progress($"{method.Name} {precision.Name()} batch {batch}", total, "steps") { TerminalOnly = true };
                progress.Report(0);
                using var run = new StepBenchmark(device, method, model, batch, cudaGraph);
                var (fusedBefore, unfusedBefore) = device.TrainedAttentionCalls;
                using (device.ReportAttentionChoices(choice => Progress.Line($"  {choice}")))
                    run.Step(); // warm-up: pools, moments, kernel compiles, the attention path where it is measured
                progress.Report(++steps);
                if (device is CudaDevice { Runtime: var cudaRuntime })
                    foreach (var declined in cudaRuntime.DeclinedLinearProducts.Where(reported.Add))
                        Progress.Line($"  cuBLASLt declined {declined}: a GEMM, then a bias pass");
                string path = device.TrainedAttentionCalls switch
                {
                    var (f, u) when f == fusedBefore && u == unfusedBefore => "none",
                    var (f, _) when f == fusedBefore => "unfused",
                    var (_, u) when u == unfusedBefore => "fused",
                    _ => "mixed",
                };
                // The peak of the steps that follow (a graph's capture among them: its replays rent nothing), not of the
                // warm-up's own allocations, such as a measured attention's trial runs.
                device.ResetPeak();
                gpuRuntime?.ResetPeakAllocated();
                if (cudaGraph)
                {
                    run.Step(); // the capture, and its first replay
                    progress.Report(++steps);
                }
                for (int i = 0; i < repeats; i++)
                {
                    run.Times.Add(run.Step());
                    progress.Report(++steps);
                }
                double ms = run.Median * 1e3, perSecond = batch / run.Median, mib = device.PeakBytesInUse / 1048576.0, kept = run.SavedBytes / 1048576.0;
                double? deviceMib = gpuRuntime?.PeakAllocatedBytes / 1048576.0;
                Console.WriteLine(string.Format(inv, "| {0} | {1} | {2} | {3:F1} | {4:F1} | {5:F0} | {6:N0} | {7:F1} | {8} |", method.Name, precision.Name(), batch, ms, perSecond,
                    mib, run.Trainable, kept, deviceMib is double d ? d.ToString("F0", inv) : "–"));
                if (run.WeightCopiesDropped is { } dropped) Progress.Line($"  {dropped}");
                if (device.Kernels is InstrumentedKernels kernels)
                {
                    PrintProfile(kernels, run, $"{method.Name}, {precision.Name()}, batch {batch}");
                    if (gpuRuntime != null) PrintDeviceWork(gpuRuntime, run, $"{method.Name}, {precision.Name()}, batch {batch}");
                }
                jsonFile?.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
                {
                    engine = "peft-engine", model, method = method.Name, precision = precision.Name(), batch, ms_per_step = ms,
                    images_per_second = perSecond, peak_memory_mib = mib, activations_mib = kept, device_memory_mib = deviceMib, cuda_graph = cudaGraph,
                    attention = path,
                    linear_epilogues = device is CudaDevice { Runtime.LinearEpilogues: true },
                    graph_mib = run.GraphBytes / 1048576.0,
                    weight_copies_mib = run.WeightCopyBytes / 1048576.0,
                }));
            }
            catch (DeviceOutOfMemoryException e)
            {
                // A batch too large for the device: its row says so, and the rows after it still run (the step
                // let go of everything it made).
                outOfMemory++;
                Progress.Erase();
                Console.WriteLine($"| {method.Name} | {precision.Name()} | {batch} | out of memory | | | | | |");
                Progress.Line($"  {e.Message}");
                jsonFile?.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
                {
                    engine = "peft-engine", model, method = method.Name, precision = precision.Name(), batch, cuda_graph = cudaGraph,
                    out_of_memory = true, error = e.Message,
                }));
            }
            catch (Exception e) when (e is DivergedException or CudaException)
            {
                // A step whose loss is not finite or whose CUDA call failed (a kernel broken on this device): its row
                // says so and the rows after it run, unless a kernel's fault lost the GPU context, which no later
                // row in this process can use.
                failed++;
                CudaException? lost = e is CudaException { LosesContext: true } sticky ? sticky
                    : e is CudaException && gpuRuntime != null && gpuRuntime.ContextLost(out var found) ? found : null;
                Progress.Erase();
                Console.WriteLine($"| {method.Name} | {precision.Name()} | {batch} | {(e is DivergedException ? "diverged" : "failed")} | | | | | |");
                Progress.Line($"  {e.Message}");
                jsonFile?.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
                {
                    engine = "peft-engine", model, method = method.Name, precision = precision.Name(), batch, cuda_graph = cudaGraph,
                    failed = true, context_lost = lost != null, error = e.Message,
                }));
                if (lost == null) continue;
                if (lost != e) Progress.Line($"  then: {lost.Message}");
                var rest = order.Skip(rows).Select(r => $"{r.method.Name} {r.precision.Name()} batch {r.batch}").ToList();
                Console.Error.WriteLine($"error: {method.Name} {precision.Name()} batch {batch} lost the GPU context; " +
                    (rest.Count == 0 ? "it was the last row" : $"{rest.Count} row(s) not run, which a new process can run: {string.Join(", ", rest)}"));
                Console.Error.WriteLine($"context lost in method {method.Name}");
                return 1;
            }
        }
        if (outOfMemory + failed > 0)
        {
            Console.Error.WriteLine((outOfMemory, failed) switch
            {
                (_, 0) => $"error: {outOfMemory} of {rows} rows ran out of device memory (each says so, with the sizes below it)",
                (0, _) => $"error: {failed} of {rows} rows failed (each says so, with the error below it)",
                _ => $"error: {outOfMemory + failed} of {rows} rows did not time their steps: {outOfMemory} ran out of device memory, {failed} failed " +
                     "(each says so, with the reason below it)",
            });
            return 1;
        }
        return 0;
    }

    /// <summary><c>--profile</c>: one more step with every kernel timed on its own, then every kernel it called, the
    /// slowest first (calls, ms, share of the kernels' time).</summary>
    static void PrintProfile(InstrumentedKernels kernels, StepBenchmark run, string what)
    {
        kernels.Reset();
        kernels.Timing = true;
        double wall;
        try { wall = run.Step(); }
        finally { kernels.Timing = false; }
        var rows = Enum.GetValues<KernelId>().Select(k => (Kernel: k, Calls: kernels.Calls(k), Seconds: kernels.Time(k).TotalSeconds))
            .Where(r => r.Calls > 0).OrderByDescending(r => r.Seconds).ToList();
        double timed = rows.Sum(r => r.Seconds);
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        Console.WriteLine(string.Format(inv, "\nprofile of one {0} step: {1:F1} ms of kernels, {2:F1} ms of wall time with every kernel waited for; " +
                                            "GEMMs {3:F0} GFLOP", what, timed * 1e3, wall * 1e3, kernels.Flops / 1e9));
        Console.WriteLine("| kernel | calls | ms | share of kernel time |\n|---|---|---|---|");
        foreach (var r in rows)
            Console.WriteLine(string.Format(inv, "| {0} | {1} | {2:F2} | {3:P1} |", r.Kernel, r.Calls, r.Seconds * 1e3, r.Seconds / timed));
        Console.WriteLine();
    }

    /// <summary><c>--profile</c> on a CUDA device: one more step with every kernel launch and library product timed on
    /// its own (<see cref="DeviceWorkProfile"/>), then each kernel and each product shape, the slowest first (calls, ms,
    /// share, and TFLOP/s for the products): what the ops of <see cref="PrintProfile"/> spent their time on.</summary>
    static void PrintDeviceWork(CudaRuntime runtime, StepBenchmark run, string what)
    {
        var profile = new DeviceWorkProfile(runtime);
        runtime.WorkProfile = profile;
        try { run.Step(); }
        finally { runtime.WorkProfile = null; }
        var rows = profile.Rows;
        double total = rows.Sum(r => r.Seconds), products = rows.Where(r => r.Flops > 0).Sum(r => r.Seconds);
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        long standIns = rows.Where(r => r.EmulatorOnly).Sum(r => r.Calls);
        Console.WriteLine(string.Format(inv, "device work of one {0} step: {1:F1} ms, {2:F1} ms of it in {3} library products ({4:F1} GFLOP), " +
                                            "the rest in {5} kernel launches{6}", what, total * 1e3, products * 1e3, rows.Where(r => r.Flops > 0).Sum(r => r.Calls),
            rows.Sum(r => r.Flops) / 1e9, rows.Where(r => r.Flops == 0).Sum(r => r.Calls),
            standIns == 0 ? "" : $" ({standIns} of them the emulator's stand-ins for work a GPU does inside its libraries, marked \"emulator only\")"));
        Console.WriteLine("| work | calls | ms | share | TFLOP/s |\n|---|---|---|---|---|");
        foreach (var r in rows)
            Console.WriteLine(string.Format(inv, "| {0} | {1} | {2:F3} | {3:P1} | {4} |", r.Name, r.Calls, r.Seconds * 1e3, r.Seconds / total,
                r.Flops > 0 && r.Seconds > 0 ? (r.Flops / r.Seconds / 1e12).ToString("F1", inv) : ""));
        Console.WriteLine();
    }
}
