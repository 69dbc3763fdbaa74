namespace Engine.Models.Training;

/// <summary>One run of a suite: its task, method, and its config (built knowing whether the run resumes, so a resumed run
/// need not have its checkpoint at hand).</summary>
public sealed record PlannedRun(string Task, string Method, Func<bool, RunConfig> Config);

/// <summary>How a suite ended: interrupted (Ctrl-C), and the runs that failed with why.</summary>
public sealed record SuiteOutcome(bool Interrupted, IReadOnlyList<string> Failures);

/// <summary>Tasks × methods as durable runs in <c>&lt;output&gt;/&lt;task&gt;/&lt;method&gt;</c> (<c>peft vtab suite</c>
/// and the synthetic suite).</summary>
public static class FineTuneSuite
{
    /// <summary>
    /// Runs each planned run in order: a finished run is skipped, an interrupted one resumed, a new one started.
    /// <paramref name="execute"/> runs one (config, run folder, resume) and returns its result, or null when it was
    /// interrupted, which stops the suite. A run that fails (bad data, a diverging loss, ...) is logged and, unless
    /// <paramref name="stopOnError"/>, the suite goes on; the failures are summarised at the end.
    /// </summary>
    /// <param name="runs">The runs, in order.</param>
    /// <param name="output">The runs folder.</param>
    /// <param name="execute">Runs one.</param>
    /// <param name="log">One line per event.</param>
    /// <param name="stopOnError">Stop at the first failure instead of going on.</param>
    /// <param name="starting">Called with the index of each run as it is reached (skipped ones too), for progress.</param>
    public static SuiteOutcome Run(IReadOnlyList<PlannedRun> runs, string output, Func<RunConfig, string, bool, RunResult?> execute, Action<string> log,
        bool stopOnError = false, Action<int>? starting = null)
    {
        var failures = new List<string>();
        for (int i = 0; i < runs.Count; i++)
        {
            starting?.Invoke(i);
            var run = runs[i];
            string runDir = Path.Combine(output, run.Task, run.Method), where = $"[{i + 1}/{runs.Count}] {run.Task}/{run.Method}";
            if (RunResult.Read(runDir) is { } done)
            {
                log($"{where}: finished earlier (best {done.BestAccuracy:F1}%), skipped");
                continue;
            }
            bool resume = File.Exists(Path.Combine(runDir, "config.json"));
            log($"{where}{(resume ? " (resuming)" : "")}");
            try
            {
                if (execute(run.Config(resume), runDir, resume) is null) return new SuiteOutcome(true, failures);
            }
            catch (Exception e) when (e is not OperationCanceledException && !stopOnError)
            {
                failures.Add($"{run.Task}/{run.Method}: {e.Message}");
                log($"{where} failed: {e.Message}");
            }
        }
        if (failures.Count > 0)
        {
            log($"{failures.Count} of {runs.Count} run(s) failed (the others are reported; fix and rerun the suite to retry them):");
            foreach (var f in failures) log($"  {f}");
        }
        return new SuiteOutcome(false, failures);
    }
}
