using Engine.Kernels.Cpu;
using Engine.Models.Training;
using Spectre.Console;

namespace Engine.Cli;

/// <summary>Fine-tuning runs on the console, shared by <c>vtab</c> and <c>synthetic</c>: live progress (Spectre.Console
/// bars for the suite and the current run, with rate and ETA, on a terminal; a line per event and a progress line per
/// ~10% when redirected), Ctrl-C keeps the last finished epoch and says how to resume, and the report at the end.</summary>
internal static class RunConsole
{
    /// <summary>True when stdout and stderr are a terminal that can redraw: then progress is drawn live.</summary>
    static bool Live => !Console.IsOutputRedirected && !Console.IsErrorRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Runs the suite with live progress (<see cref="FineTuneSuite.Run"/>).</summary>
    internal static SuiteOutcome RunSuite(IReadOnlyList<PlannedRun> runs, string output, Device device, string cacheDir, bool stopOnError)
    {
        if (!Live)
            return FineTuneSuite.Run(runs, output, (config, runDir, resume) => Execute(config, runDir, device, cacheDir, resume), Progress.Line, stopOnError);
        return Bars().Start(ctx =>
        {
            var view = new LiveView(ctx, ctx.AddTask("suite", maxValue: runs.Count));
            return FineTuneSuite.Run(runs, output, (config, runDir, resume) => Execute(config, runDir, device, cacheDir, resume, false, view), view.Line,
                stopOnError, i => view.Suite!.Value = i);
        });
    }

    /// <summary>Runs with live progress; null when interrupted (Ctrl-C), after saying how to resume.</summary>
    internal static RunResult? Execute(RunConfig config, string runDir, Device device, string cacheDir, bool resume, bool force = false) =>
        Live ? Bars().Start(ctx => Execute(config, runDir, device, cacheDir, resume, force, new LiveView(ctx, null)))
             : Execute(config, runDir, device, cacheDir, resume, force, view: null);

    static Spectre.Console.Progress Bars() => AnsiConsole.Progress().AutoClear(true).HideCompleted(true)
        .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn());

    static RunResult? Execute(RunConfig config, string runDir, Device device, string cacheDir, bool resume, bool force, LiveView? view)
    {
        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        Action<string> line = view == null ? Progress.Line : view.Line;
        Progress? progress = null;
        long firstStep = 0;
        string name = $"{config.Task}/{config.Recipe.Method}";
        try
        {
            return FineTuneRun.Execute(config, runDir, device, new RunOptions
            {
                Resume = resume, Force = force, CacheDir = cacheDir, DecodeThreads = CpuParallel.Threads, Cancel = cancel.Token,
                Log = text => line($"  {text}"),
                // Counted from the first step this process runs, so a resumed run's rate and ETA are its own.
                Progress = p =>
                {
                    if (view != null)
                    {
                        view.Run(name, p);
                        return;
                    }
                    if (progress == null)
                    {
                        firstStep = p.StepsDone - 1;
                        progress = new Progress($"  {name} (steps {p.StepsDone}..{p.TotalSteps})", p.TotalSteps - firstStep, "steps");
                    }
                    progress.Report(p.StepsDone - firstStep);
                },
            });
        }
        catch (OperationCanceledException)
        {
            line($"interrupted; the last finished epoch is checkpointed in {runDir}. Continue with: peft vtab run ... --task {config.Task} --method {config.Recipe.Method} --resume");
            return null;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
            view?.EndRun();
        }
    }

    /// <summary>Spectre.Console bars: the suite's (when there is one) and the current run's, which shows its rate;
    /// log lines are written above them.</summary>
    sealed class LiveView(ProgressContext context, ProgressTask? suite)
    {
        ProgressTask? _run;

        public ProgressTask? Suite => suite;

        public void Line(string text) => AnsiConsole.Console.WriteLine(text, Style.Plain);

        public void Run(string name, RunProgress p)
        {
            _run ??= context.AddTask(Markup.Escape(name), maxValue: p.TotalSteps);
            _run.Value = p.StepsDone;
            _run.Description = Markup.Escape($"{name}  epoch {p.Epoch}/{p.TotalEpochs}, loss {p.Loss:F3}, {p.ImagesPerSecond:F0} img/s");
        }

        public void EndRun()
        {
            _run?.StopTask();
            _run = null;
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
