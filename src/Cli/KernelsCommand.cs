using System.CommandLine;
using System.Text.RegularExpressions;
using Engine.IO;
using Engine.Kernels.Cuda;

namespace Engine.Cli;

/// <summary><c>peft kernels</c>: the CUDA kernel families compiled by NVRTC for one architecture, no GPU needed, with
/// ptxas's report on each kernel (registers, stack, spills, shared memory) and, with <c>--out</c>, the cubins or PTX
/// written for a disassembler (<c>cuobjdump -sass</c>; <c>tools/sass.sh</c> fetches one).</summary>
public static partial class KernelsCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var arch = new Option<string>("--arch")
        {
            Description = "sm_XY for cubins and ptxas's report on each kernel, or compute_XY for PTX (no report)",
            DefaultValueFactory = _ => "sm_90",
        };
        var family = new Option<string[]>("--family")
        {
            Description = "Only these kernel families (cuda/NAME.cu: attention, norm, ...; repeated or comma-separated; default: all)",
            AllowMultipleArgumentsPerToken = true,
        };
        var output = new Option<string?>("--out") { Description = "Write each family's image here as FAMILY-ARCH.cubin (or .ptx)" };
        var command = new Command("kernels", "Compile the CUDA kernels with NVRTC for a GPU architecture (no GPU needed) and report each kernel's " +
            "registers, stack, spills and shared memory; --out writes the cubins or PTX for a disassembler.") { arch, family, output };
        command.SetAction(r => Run(r.GetValue(arch)!, r.GetValue(family) ?? [], r.GetValue(output)));
        return command;
    }

    static int Run(string arch, string[] familyArgs, string? output)
    {
        var match = ArchPattern().Match(arch);
        if (!match.Success) throw new ArgumentException($"--arch: '{arch}' is not sm_XY (a cubin) or compute_XY (PTX), e.g. sm_90");
        if (!Nvrtc.IsAvailable(out var reason)) throw new InvalidOperationException($"kernels: NVRTC is not available ({reason}); tools/install-nvrtc.sh installs it");
        int capability = int.Parse(match.Groups[2].Value);
        var supported = Nvrtc.SupportedArchitectures;
        if (!supported.Contains(capability))
            throw new ArgumentException($"--arch: NVRTC {Nvrtc.Version.Major}.{Nvrtc.Version.Minor} cannot target {arch} (it can: {string.Join(", ", supported)})");
        var known = KernelSources.KernelFiles.Order().ToList();
        var families = familyArgs.SelectMany(f => f.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            .Select(f => f.EndsWith(".cu", StringComparison.Ordinal) ? f : f + ".cu").Distinct().ToList();
        foreach (var f in families)
            if (!known.Contains(f)) throw new ArgumentException($"--family: no kernel family '{f[..^3]}' (known: {string.Join(", ", known.Select(k => k[..^3]))})");
        if (families.Count == 0) families = known;

        // NVRTC compiles a program on one thread: the families go in parallel, the largest first.
        var compiled = new System.Collections.Concurrent.ConcurrentDictionary<string, (byte[] Image, IReadOnlyList<PtxasReport> Kernels)>();
        Parallel.ForEach(families.OrderByDescending(f => KernelSources.Files[f].Length), f => compiled[f] = PtxasReport.Compile(f, arch));

        bool cubin = match.Groups[1].Value == "sm";
        var (major, minor) = Nvrtc.Version;
        Console.WriteLine($"{families.Count} kernel famil{(families.Count == 1 ? "y" : "ies")} compiled by NVRTC {major}.{minor} for {arch}" +
            (cubin ? "" : " (PTX: ptxas reports on a cubin only)"));
        if (cubin)
        {
            Console.WriteLine("| family | kernel | registers | stack B | spill stores B | spill loads B | shared B |");
            Console.WriteLine("|---|---|---|---|---|---|---|");
            foreach (var f in families)
                foreach (var k in compiled[f].Kernels.OrderBy(k => k.Kernel, StringComparer.Ordinal))
                    Console.WriteLine($"| {f[..^3]} | {k.Kernel} | {k.Registers} | {k.StackBytes} | {k.SpillStoreBytes} | {k.SpillLoadBytes} | {k.SharedBytes} |");
            var spilling = families.SelectMany(f => compiled[f].Kernels).Where(k => k.SpillStoreBytes + k.SpillLoadBytes > 0).Select(k => k.Kernel).ToList();
            Console.WriteLine(spilling.Count == 0 ? "no kernel spills registers" : $"{spilling.Count} kernel(s) spill registers: {string.Join(", ", spilling)}");
        }
        if (output != null)
        {
            foreach (var f in families)
            {
                string path = Path.Combine(output, $"{f[..^3]}-{arch}.{(cubin ? "cubin" : "ptx")}");
                var image = compiled[f].Image;
                int length = cubin ? image.Length : Array.IndexOf(image, (byte)0) is var end and >= 0 ? end : image.Length; // PTX comes NUL-terminated
                AtomicFile.Write(path, s => s.Write(image, 0, length));
                Console.WriteLine($"wrote {path}");
            }
            if (cubin) Console.WriteLine("disassemble with: cuobjdump -sass FILE (tools/sass.sh fetches cuobjdump and runs it)");
        }
        return 0;
    }

    [GeneratedRegex(@"^(sm|compute)_(\d+)$")]
    private static partial Regex ArchPattern();
}
