using System.Text.RegularExpressions;

namespace Engine.Kernels.Cuda;

/// <summary>ptxas's report on one kernel of a cubin compiled with <c>--ptxas-options=-v</c>: registers per thread,
/// stack frame, register spills (each a memory round trip where the kernel needs the value) and static shared
/// memory.</summary>
public sealed partial record PtxasReport(string Kernel, int Registers, int StackBytes, int SpillStoreBytes, int SpillLoadBytes, int SharedBytes)
{
    /// <summary>The kernels of a ptxas log, in its order: per kernel "Compiling entry function 'K' for 'sm_90'", then
    /// "N bytes stack frame, S bytes spill stores, L bytes spill loads" and "Used R registers[, B bytes smem]".</summary>
    /// <exception cref="FormatException">A kernel's report lacks those lines (the message quotes it).</exception>
    public static IReadOnlyList<PtxasReport> Parse(string log)
    {
        var reports = new List<PtxasReport>();
        foreach (var entry in log.Split("Compiling entry function '").Skip(1))
        {
            string kernel = entry[..entry.IndexOf('\'')];
            var frame = FrameLine().Match(entry);
            var used = UsedLine().Match(entry);
            if (!frame.Success || !used.Success) throw new FormatException($"ptxas's report on {kernel} has no stack or register line:\n{entry}");
            reports.Add(new PtxasReport(kernel, int.Parse(used.Groups[1].Value), int.Parse(frame.Groups[1].Value), int.Parse(frame.Groups[2].Value),
                int.Parse(frame.Groups[3].Value), used.Groups[2].Success ? int.Parse(used.Groups[2].Value) : 0));
        }
        return reports;
    }

    /// <summary>Compiles kernel family <paramref name="family"/> (a file of <see cref="KernelSources.KernelFiles"/>) as
    /// <see cref="KernelCache"/> compiles it, for <paramref name="arch"/>: a cubin ("sm_90") with ptxas's report on each
    /// kernel, or PTX ("compute_90") with none. Needs NVRTC, not a GPU.</summary>
    /// <exception cref="ArgumentException">No such family (the known ones are listed).</exception>
    /// <exception cref="CudaCompileException">NVRTC refused the source or the architecture.</exception>
    public static (byte[] Image, IReadOnlyList<PtxasReport> Kernels) Compile(string family, string arch)
    {
        if (!KernelSources.KernelFiles.Contains(family))
            throw new ArgumentException($"no kernel family '{family}' (known: {string.Join(", ", KernelSources.KernelFiles.Order())})", nameof(family));
        var headers = new Dictionary<string, string> { [KernelSources.CommonHeader] = KernelSources.Files[KernelSources.CommonHeader] };
        bool cubin = arch.StartsWith("sm_", StringComparison.Ordinal);
        var (image, log) = Nvrtc.Compile(KernelSources.Files[family], family, arch, cubin ? [.. KernelCache.Options, "--ptxas-options=-v"] : KernelCache.Options,
            headers);
        return (image, cubin ? Parse(log) : []);
    }

    [GeneratedRegex(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")]
    private static partial Regex FrameLine();

    [GeneratedRegex(@"Used (\d+) registers(?:, (\d+) bytes smem)?")]
    private static partial Regex UsedLine();
}
