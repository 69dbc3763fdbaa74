using Engine.Kernels.Cpu;
using Engine.Models.Training;

namespace Engine.Cli;

/// <summary>Fine-tuning runs on the console, shared by <c>vtab</c> and <c>synthetic</c>: live progress, Ctrl-C keeps the
/// last finished epoch and says how to resume, and the report at the end.</summary>
internal static class RunConsole
{
    /// <summary>Runs the suite with live progress (<see cref="FineTuneSuite.Run"/>).</summary>
    internal static SuiteOutcome RunSuite(IReadOnlyList<PlannedRun> runs, string output, Device device, string cacheDir, bool stopOnError) =>
        FineTuneSuite.Run(runs, output, (config, runDir, resume) => Execute(config, runDir, device, cacheDir, resume), Progress.Line, stopOnError);

    /// <summary>Runs with live progress; null when interrupted (Ctrl-C), after saying how to resume.</summary>
    internal static RunResult? Execute(RunConfig config, string runDir, Device device, string cacheDir, bool resume, bool force = false)
    {
        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        Progress? progress = null;
        long firstStep = 0;
        try
        {
            return FineTuneRun.Execute(config, runDir, device, new RunOptions
            {
                Resume = resume, Force = force, CacheDir = cacheDir, DecodeThreads = CpuParallel.Threads, Cancel = cancel.Token,
                Log = line => Progress.Line($"  {line}"),
                // Counted from the first step this process runs, so a resumed run's rate and ETA are its own.
                Progress = p =>
                {
                    if (progress == null)
                    {
                        firstStep = p.StepsDone - 1;
                        progress = new Progress($"  {config.Task}/{config.Recipe.Method} (steps {p.StepsDone}..{p.TotalSteps})", p.TotalSteps - firstStep, "steps");
                    }
                    progress.Report(p.StepsDone - firstStep);
                },
            });
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine($"\ninterrupted; the last finished epoch is checkpointed in {runDir}. Continue with: peft vtab run ... --task {config.Task} --method {config.Recipe.Method} --resume");
            return null;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>Prints the report of a runs folder and writes its files.</summary>
    internal static int WriteReport(string runs, string output)
    {
        var report = VtabReport.Collect(runs);
        Console.WriteLine(report.Markdown());
        foreach (var file in report.Write(output)) Console.WriteLine($"wrote {file}");
        return 0;
    }
}
