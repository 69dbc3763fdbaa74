using System.CommandLine;
using Engine.Kernels.Cpu;

namespace Engine.Cli;

/// <summary><c>peft bench</c>: times one kernel at any shape on a device (GB/s against the device's copy of the same
/// bytes, or GEMM GFLOP/s beside OpenBLAS on the CPU); <c>--list</c> names the ops and their shapes.</summary>
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
        var command = new Command("bench", "Time one kernel at any shape on a device: ms, GB/s and its share of the device's copy bandwidth, or GEMM GFLOP/s.")
        {
            op, shape, repeats, list, device,
        };
        command.SetAction(r =>
        {
            if (r.GetValue(list))
            {
                foreach (var o in DeviceBenchmarks.Ops) Console.WriteLine($"{o.Name,-18} {o.ShapeForm,-12} {o.What}");
                return 0;
            }
            string name = r.GetValue(op) ?? throw new ArgumentException("--op: which kernel to time (--list shows them)");
            var info = DeviceBenchmarks.Ops.FirstOrDefault(o => o.Name == name)
                ?? throw new ArgumentException($"--op: unknown op '{name}' (known: {string.Join(", ", DeviceBenchmarks.Ops.Select(o => o.Name))})");
            var dims = DeviceBenchmarks.ParseShape(info, r.GetValue(shape) ?? throw new ArgumentException($"--shape: the size to time ({info.Name} takes {info.ShapeForm})"));
            var dev = DeviceOption.Resolve(r.GetValue(device)!);
            Console.WriteLine($"{info.Name} ({info.What}) on {(dev is CudaDevice c ? c.Runtime.Description : $"the CPU, {CpuParallel.Threads} thread(s)")}, median of {r.GetValue(repeats)}");
            Console.WriteLine(DeviceBenchmarks.TableHeader);
            Console.WriteLine(DeviceBenchmarks.FormatRow(DeviceBenchmarks.Measure(dev, info.Name, dims, r.GetValue(repeats))));
            return 0;
        });
        return command;
    }
}
