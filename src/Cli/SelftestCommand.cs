using System.CommandLine;
using System.Diagnostics;
using Engine.Conformance;
using Engine.Kernels.Cuda;
using Engine.Models.Training;

namespace Engine.Cli;

/// <summary>
/// <c>peft selftest</c>: the op conformance suite (the same cases the NUnit tests run) on one device, with a results
/// table, on a CUDA device the CUDA graph check (<see cref="GraphCheck"/>), and optionally the device benchmarks. This is how a GPU machine without the .NET SDK checks the CUDA
/// backend (tools/gpu-check.sh). A case whose kernel faults loses the GPU context (<see cref="CudaException.LosesContext"/>):
/// the cases after it cannot run in this process, so they are listed as not run, with the line
/// <c>context lost in case NAME</c> for a rerun with <c>--skip NAME</c>. Exit codes: 0 all passed, 1 a case failed or
/// bad arguments, 3 the device is not available here (for example no GPU), with the reason.
/// </summary>
public static class SelftestCommand
{
    /// <summary>Exit code when the requested device cannot be opened.</summary>
    public const int DeviceUnavailable = 3;

    /// <summary>The name --filter selects the CUDA graph check by (alone, with no op case, when it matches no case).</summary>
    public const string GraphCheckName = "CudaGraphs";

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var device = new Option<string>("--device")
        {
            Description = "Device to check: cuda (GPU 0), cuda:N (GPU N), emulated-cuda (the CUDA kernels on CPU threads), cpu, or auto (cuda when a GPU is usable, else cpu)",
            DefaultValueFactory = _ => "auto",
        };
        var filter = new Option<string?>("--filter")
        {
            Description = $"Run only the cases whose name contains this text ({GraphCheckName}: the CUDA graph check alone)",
        };
        var skip = new Option<string[]>("--skip")
        {
            Description = "Leave out these cases (exact names, comma-separated or repeated; " + GraphCheckName + ": the CUDA graph check), " +
                "e.g. a case whose kernel faulted on this GPU, so that the rest run in a new process",
            AllowMultipleArgumentsPerToken = true,
        };
        var bench = new Option<bool>("--bench") { Description = "Also run the device benchmarks (every kernel at ViT-B/16 sizes, GB/s against the device's copy, GEMM GFLOP/s)" };
        var benchSize = new Option<string>("--bench-size")
        {
            Description = "full (ViT-B/16 training sizes) or small (a quick run)",
            DefaultValueFactory = _ => "full",
        };
        var threadOrder = new Option<string>("--thread-order")
        {
            Description = "emulated-cuda only: ascending (lowest thread and first block first) or descending; a kernel with a data race " +
                "between its threads fails its case in one of the two",
            DefaultValueFactory = _ => "ascending",
        };
        var multiprocessors = new Option<int>("--multiprocessors")
        {
            Description = "emulated-cuda only: size the kernels' grids as on a GPU with this many multiprocessors (132: an H200), " +
                "so the reductions take the partials and slices they take there",
            DefaultValueFactory = _ => 1,
        };
        var command = new Command("selftest", "Check every op on a device against double-precision references and finite differences; optionally benchmark it.")
        {
            device, filter, skip, bench, benchSize, threadOrder, multiprocessors,
        };
        command.SetAction(r => Run(r.GetValue(device)!, r.GetValue(filter), r.GetValue(skip) ?? [], r.GetValue(bench), r.GetValue(benchSize)!,
            r.GetValue(threadOrder)!, r.GetValue(multiprocessors)));
        return command;
    }

    static int Run(string deviceName, string? filter, string[] skipValues, bool bench, string benchSize, string threadOrder, int multiprocessors)
    {
        if (benchSize is not ("full" or "small")) throw new ArgumentException($"--bench-size must be full or small (got '{benchSize}')");
        var skip = skipValues.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            .ToHashSet(StringComparer.OrdinalIgnoreCase);
        foreach (var name in skip.Where(n => !n.Equals(GraphCheckName, StringComparison.OrdinalIgnoreCase) && OpCases.All.All(c => !c.Name.Equals(n, StringComparison.OrdinalIgnoreCase))))
            throw new ArgumentException($"--skip: no case named '{name}'; cases: {string.Join(", ", OpCases.All.Select(c => c.Name))} (and {GraphCheckName})");
        var order = threadOrder switch
        {
            "ascending" => EmulatedThreadOrder.Ascending,
            "descending" => EmulatedThreadOrder.Descending,
            _ => throw new ArgumentException($"--thread-order must be ascending or descending (got '{threadOrder}')"),
        };
        if (order != EmulatedThreadOrder.Ascending && deviceName != "emulated-cuda")
            throw new ArgumentException($"--thread-order {threadOrder} needs --device emulated-cuda (a GPU orders its threads itself; got '{deviceName}')");
        if (multiprocessors is < 1 or > 1024)
            throw new ArgumentException($"--multiprocessors must be 1 to 1024 (got {multiprocessors})");
        if (multiprocessors != 1 && deviceName != "emulated-cuda")
            throw new ArgumentException($"--multiprocessors {multiprocessors} needs --device emulated-cuda (a GPU has its own; got '{deviceName}')");
        Device device;
        switch (deviceName)
        {
            case "cpu":
                device = Device.Cpu;
                break;
            case "auto":
                device = CudaDevice.TryOpen(out var gpu, out _) ? gpu! : Device.Cpu;
                break;
            case "emulated-cuda":
            case var name when CudaDevice.GpuOrdinal(name) != null:
                CudaDevice? cuda;
                string reason;
                bool onCpuThreads = deviceName == "emulated-cuda";
                if (!(onCpuThreads ? CudaDevice.TryOpenEmulated(out cuda, out reason, multiprocessors: multiprocessors) : CudaDevice.TryOpen(deviceName, out cuda, out reason)))
                {
                    Console.WriteLine($"{(onCpuThreads ? "no emulated CUDA device" : "no GPU")}: {reason}");
                    return DeviceUnavailable;
                }
                if (cuda!.Runtime is EmulatedRuntime emulated) emulated.ThreadOrder = order;
                device = cuda;
                break;
            default:
                throw new ArgumentException($"--device must be auto, cuda, cuda:N, emulated-cuda or cpu (got '{deviceName}')");
        }

        Console.WriteLine($"device: {device.Name}{(device is CudaDevice d ? $" ({d.Runtime.Description})" : "")}" +
            (deviceName == "emulated-cuda" ? $", threads and blocks in {threadOrder} order" : ""));
        if (Nvrtc.IsAvailable(out var nvrtcReason)) Console.WriteLine($"NVRTC: {Nvrtc.Version.Major}.{Nvrtc.Version.Minor}");
        else Console.WriteLine($"NVRTC: not available ({nvrtcReason})");

        bool Matches(string name) => filter == null || name.Contains(filter, StringComparison.OrdinalIgnoreCase);
        var cases = OpCases.All.Where(c => Matches(c.Name)).ToList();
        bool graphs = device is CudaDevice && Matches(GraphCheckName);
        if (cases.Count == 0 && !graphs)
            throw new ArgumentException($"--filter '{filter}' matches no case; cases: {string.Join(", ", OpCases.All.Select(c => c.Name))}" +
                $" (and {GraphCheckName} on a CUDA device)");
        var skipped = cases.Where(c => skip.Contains(c.Name)).Select(c => c.Name).ToList();
        cases.RemoveAll(c => skip.Contains(c.Name));
        if (skipped.Count > 0) Console.WriteLine($"left out (--skip): {string.Join(", ", skipped)}");
        if (graphs && skip.Contains(GraphCheckName))
        {
            Console.WriteLine($"left out (--skip): {GraphCheckName}");
            graphs = false;
        }
        var (failed, lost) = cases.Count == 0 ? (0, false) : RunCases(device, cases);
        if (lost)
        {
            // Nothing more can run on this device in this process: the graph check and the benchmarks need it too.
            if (graphs || bench) Console.WriteLine($"not run (the GPU context is lost): {string.Join(" and ", new[] { graphs ? "the CUDA graph check" : null, bench ? "the device benchmarks" : null }.OfType<string>())}");
            return 1;
        }
        if (graphs)
        {
            // Graph capture is the one thing the op cases do not exercise: a whole training step recorded and replayed.
            Console.WriteLine("\nCUDA graphs: a tiny ViT's AdamW steps replayed from a captured graph against ordinary steps, bit for bit:");
            var (graphCases, graphsPassed) = GraphCheck.Check((CudaDevice)device);
            foreach (var (name, failure) in graphCases) Console.WriteLine($"  {name,-45} {(failure == null ? "ok" : $"FAIL  {failure}")}");
            if (!graphsPassed) failed++;
        }

        if (bench) DeviceBenchmarks.RunAndPrint(device, benchSize == "full", Console.Out);
        return failed == 0 ? 0 : 1;
    }

    // The op cases as a table, then on a CUDA device which path its Linear products took; returns how many failed, and
    // whether a case lost the GPU context (the cases after it are then listed as not run).
    static (int Failed, bool Lost) RunCases(Device device, IReadOnlyList<(string Name, Action<Device> Run)> cases)
    {
        Console.WriteLine($"\nop conformance, {cases.Count} case(s):");
        int width = OpCases.All.Max(c => c.Name.Length) + 1;
        Console.WriteLine($"  {"case".PadRight(width)} {"result",-6} {"ms",8}");
        int failed = 0, ran = 0;
        foreach (var (name, run) in cases)
        {
            var clock = Stopwatch.StartNew();
            string? failure = null;
            CudaException? lost = null;
            ran++;
            try
            {
                run(device);
            }
            catch (Exception e) when (e is ConformanceException or CudaException or InvalidOperationException)
            {
                failure = e.Message;
                failed++;
                // A faulted kernel may first show as another error (a cuBLAS status); waiting for the device tells.
                if (e is CudaException { LosesContext: true } sticky) lost = sticky;
                else if (e is CudaException && device is CudaDevice { Runtime: var cudaRuntime } && cudaRuntime.ContextLost(out var found)) lost = found;
            }
            Console.WriteLine($"  {name.PadRight(width)} {(failure == null ? "ok" : "FAIL"),-6} {clock.Elapsed.TotalMilliseconds,8:F0}{(failure == null ? "" : $"  {failure}")}");
            if (lost != null)
            {
                var rest = cases.Skip(ran).Select(c => c.Name).ToList();
                Console.WriteLine($"{ran - failed} passed, {failed} failed, {rest.Count} not run");
                if (lost.Message != failure) Console.WriteLine($"  then: {lost.Message}");
                Console.WriteLine($"The GPU context is lost: CUDA work in this process cannot continue, so the case(s) after {name} did not run" +
                                  (rest.Count == 0 ? "." : $": {string.Join(", ", rest)}."));
                Console.WriteLine($"context lost in case {name}: rerun with --skip {name} to run the rest in a new process");
                return (failed, true);
            }
        }
        Console.WriteLine($"{cases.Count - failed} passed, {failed} failed");
        if (device is CudaDevice { Runtime: var runtime })
        {
            // Whether the Linear cases took the epilogue or its fallback: both pass, so say which ran.
            var declined = runtime.DeclinedLinearProducts.ToList();
            Console.WriteLine($"Linear products with the bias in the GEMM's epilogue: {runtime.LinearProducts} ran, " +
                (declined.Count == 0 ? "none declined" : $"{declined.Count} shape(s) declined (run as a GEMM and a bias pass):"));
            foreach (var line in declined) Console.WriteLine($"  {line}");
        }
        return (failed, false);
    }
}
