using System.Diagnostics;
using System.Globalization;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Models;
using Engine.Models.Peft;
using Engine.Models.Training;
using Engine.Optim;

namespace Engine.Bench;

/// <summary>
/// <c>bash bench/run.sh peft [--model vit_base_patch16_224] [--batch 8] [--rounds 5] [--methods full,ssf,...] [--alone]
/// [--unfused-attention]</c>: one
/// training step (train-mode forward, cross-entropy, backward, Adam) of a model (ViT-B/16 by default; any preset, such as
/// <c>swin_base_patch4_window7_224</c> or <c>convnext_base</c>) at 224×224 with 100 classes on the CPU for each PEFT method
/// next to full fine-tuning, with the optimizer-state bytes. Each method has its own model; the rounds interleave the methods
/// (one step of each per round, in a rotating order) so machine noise spreads evenly, and the median per method is
/// reported with its ratio to full's median from the same run. A method with a selection pass (SCT, GPS) uses a fixed
/// selection of its recipe's K evenly spread entries (<see cref="SelectionPassInfo.SaveUniform"/>; SCT 96 channels per
/// site, GPS 1 input per row): the step's cost does not depend on which entries are selected.
/// </summary>
public static class PeftStepBench
{
    /// <summary>Runs the benchmark and prints the markdown table; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        const string usage = "bash bench/run.sh peft [--model PRESET|CONFIG.json] [--batch 8] [--rounds 5] [--methods full,ssf,...] [--alone] [--unfused-attention]";
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine($"{usage}\n  A training step (forward, loss, backward, optimizer) per PEFT method next to full fine-tuning on the CPU:\n" +
                              "  median ms, step / full, optimizer state, activations kept for backward. SCT and GPS use fixed, evenly spread selections.\n" +
                              "  --alone: only the listed methods (no full beside them), so that the process's peak RSS, printed last, is theirs.\n" +
                              "  --unfused-attention: attention on the unfused reference path (split, batched GEMMs, softmax, merge), to compare.");
            return 0;
        }
        foreach (var unknown in args.Where(a => a.StartsWith('-') && a is not ("--model" or "--batch" or "--rounds" or "--methods" or "--alone" or "--unfused-attention")))
        {
            Console.Error.WriteLine($"error: unknown option {unknown}\nusage: {usage}");
            return 1;
        }
        int batch = IntArg(args, "--batch", 8), rounds = IntArg(args, "--rounds", 5);
        string model = Arg(args, "--model") ?? "vit_base_patch16_224";
        string family = ImageModels.FamilyOf(model);
        var methods = Arg(args, "--methods") is { } given ? [.. given.Split(',').Select(PeftMethods.Get)] : PeftMethods.All.Where(m => m.AppliesTo(family)).ToList();
        bool alone = args.Contains("--alone");
        Ops.DefaultAttentionPath = args.Contains("--unfused-attention") ? AttentionPath.Unfused : AttentionPath.Auto;
        if (!alone && !methods.Contains(PeftMethods.Full)) methods = [PeftMethods.Full, .. methods]; // the ratios' yardstick
        CpuParallel.Threads = Environment.ProcessorCount;
        Console.WriteLine($"{model} training step, batch {batch}, {rounds} rounds, {Environment.ProcessorCount} threads, CPU GEMM {CpuGemm.BestIsa}, " +
                          $"attention {(Ops.DefaultAttentionPath == AttentionPath.Unfused ? "unfused" : "fused")}");
        var kernels = new InstrumentedKernels(new CpuKernels()); // timing off except for one step per method at the end
        var device = new CpuDevice(kernels);
        var runs = methods.Select(m => new StepBenchmark(device, m, model, batch)).ToList();
        try
        {
            foreach (var r in runs) r.Step(); // warm-up: pools, moments, JIT
            for (int round = 0; round < rounds; round++)
                for (int i = 0; i < runs.Count; i++)
                {
                    var r = runs[(i + round) % runs.Count];
                    r.Times.Add(r.Step());
                    Console.Error.WriteLine($"round {round + 1}/{rounds}: {r.Name} {r.Times[^1] * 1e3:F0} ms");
                }
            var inv = CultureInfo.InvariantCulture;
            var full = runs.FirstOrDefault(r => r.Name == PeftMethods.Full.Name);
            Console.WriteLine("\n| method | trainable | step ms (median) | step / full | optimizer state | activations kept for backward | one step: GEMM share, largest other kernels |\n|---|---|---|---|---|---|---|");
            foreach (var r in runs)
                Console.WriteLine(string.Format(inv, "| {0} | {1:N0} | {2:F0} | {3} | {4} | {5} | {6} |", r.Name, r.Trainable, r.Median * 1e3,
                    full == null ? "n/a" : Rounds.PairedRatio(r.Times, full.Times).ToString("F2", inv),
                    Bytes(r.Optimizer.StateBytes), Bytes(r.SavedBytes), KernelSplit.Of(kernels, () => r.Step())));
            using var self = Process.GetCurrentProcess();
            Console.WriteLine($"\nprocess peak RSS: {self.PeakWorkingSet64 / 1048576.0:F0} MiB ({string.Join(", ", runs.Select(r => r.Name))} in one process)");
        }
        finally
        {
            foreach (var r in runs) r.Dispose();
        }
        return 0;
    }

    static string Bytes(long b) => b >= 1 << 20 ? $"{b / (double)(1 << 20):F1} MiB" : $"{b / 1024.0:F1} KiB";

    static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    static int IntArg(string[] args, string name, int fallback) => Arg(args, name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
}
