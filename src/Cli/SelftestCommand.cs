using System.CommandLine;
using System.Diagnostics;
using Engine.Conformance;
using Engine.Kernels.Cuda;
using Engine.Models.Training;

namespace Engine.Cli;

/// <summary>
/// <c>peft selftest</c>: the op conformance suite (the same cases the NUnit tests run) on one device, with a results
/// table, on a CUDA device the CUDA graph check (<see cref="GraphCheck"/>), and optionally the device benchmarks. This is how a GPU machine without the .NET SDK checks the CUDA
/// backend (tools/gpu-check.sh). Exit codes: 0 all passed, 1 a case failed or bad arguments, 3 the device is not
/// available here (for example no GPU), with the reason.
/// </summary>
public static class SelftestCommand
{
    /// <summary>Exit code when the requested device cannot be opened.</summary>
    public const int DeviceUnavailable = 3;

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var device = new Option<string>("--device")
        {
            Description = "Device to check: cuda (a GPU), emulated-cuda (the CUDA kernels on CPU threads), cpu, or auto (cuda when a GPU is usable, else cpu)",
            DefaultValueFactory = _ => "auto",
        };
        var filter = new Option<string?>("--filter") { Description = "Run only the cases whose name contains this text" };
        var bench = new Option<bool>("--bench") { Description = "Also run the device benchmarks (every kernel at ViT-B/16 sizes, GB/s against the device's copy, GEMM GFLOP/s)" };
        var benchSize = new Option<string>("--bench-size")
        {
            Description = "full (ViT-B/16 training sizes) or small (a quick run)",
            DefaultValueFactory = _ => "full",
        };
        var command = new Command("selftest", "Check every op on a device against double-precision references and finite differences; optionally benchmark it.")
        {
            device, filter, bench, benchSize,
        };
        command.SetAction(r => Run(r.GetValue(device)!, r.GetValue(filter), r.GetValue(bench), r.GetValue(benchSize)!));
        return command;
    }

    static int Run(string deviceName, string? filter, bool bench, string benchSize)
    {
        if (benchSize is not ("full" or "small")) throw new ArgumentException($"--bench-size must be full or small (got '{benchSize}')");
        Device device;
        switch (deviceName)
        {
            case "cpu":
                device = Device.Cpu;
                break;
            case "auto":
                device = CudaDevice.TryOpen(out var gpu, out _) ? gpu! : Device.Cpu;
                break;
            case "cuda" or "emulated-cuda":
                if (!CudaDevice.TryOpen(deviceName, out var cuda, out var reason))
                {
                    Console.WriteLine($"{(deviceName == "cuda" ? "no GPU" : "no emulated CUDA device")}: {reason}");
                    return DeviceUnavailable;
                }
                device = cuda!;
                break;
            default:
                throw new ArgumentException($"--device must be auto, cuda, emulated-cuda or cpu (got '{deviceName}')");
        }

        Console.WriteLine($"device: {device.Name}{(device is CudaDevice d ? $" ({d.Runtime.Description})" : "")}");
        if (Nvrtc.IsAvailable(out var nvrtcReason)) Console.WriteLine($"NVRTC: {Nvrtc.Version.Major}.{Nvrtc.Version.Minor}");
        else Console.WriteLine($"NVRTC: not available ({nvrtcReason})");

        var cases = OpCases.All.Where(c => filter == null || c.Name.Contains(filter, StringComparison.OrdinalIgnoreCase)).ToList();
        if (cases.Count == 0) throw new ArgumentException($"--filter '{filter}' matches no case; cases: {string.Join(", ", OpCases.All.Select(c => c.Name))}");
        Console.WriteLine($"\nop conformance, {cases.Count} case(s):");
        int width = OpCases.All.Max(c => c.Name.Length) + 1;
        Console.WriteLine($"  {"case".PadRight(width)} {"result",-6} {"ms",8}");
        int failed = 0;
        foreach (var (name, run) in cases)
        {
            var clock = Stopwatch.StartNew();
            string? failure = null;
            try
            {
                run(device);
            }
            catch (Exception e) when (e is ConformanceException or CudaException or InvalidOperationException)
            {
                failure = e.Message;
                failed++;
            }
            Console.WriteLine($"  {name.PadRight(width)} {(failure == null ? "ok" : "FAIL"),-6} {clock.Elapsed.TotalMilliseconds,8:F0}{(failure == null ? "" : $"  {failure}")}");
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

        if (device is CudaDevice cudaDevice && filter == null)
        {
            // Graph capture is the one thing the op cases do not exercise: a whole training step recorded and replayed.
            Console.WriteLine("\nCUDA graphs: a tiny ViT's AdamW steps replayed from a captured graph against ordinary steps, bit for bit:");
            var (graphCases, graphsPassed) = GraphCheck.Check(cudaDevice);
            foreach (var (name, failure) in graphCases) Console.WriteLine($"  {name,-45} {(failure == null ? "ok" : $"FAIL  {failure}")}");
            if (!graphsPassed) failed++;
        }

        if (bench) DeviceBenchmarks.RunAndPrint(device, benchSize == "full", Console.Out);
        return failed == 0 ? 0 : 1;
    }
}
