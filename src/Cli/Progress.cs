using System.Diagnostics;

namespace Engine.Cli;

/// <summary>Progress of a long run on stderr: one updating line on a terminal, a line per ~10% when redirected.</summary>
public sealed class Progress(string what, long total, string unit)
{
    readonly Stopwatch _clock = Stopwatch.StartNew();
    long _lastPrinted = -1;

    /// <summary>Reports <paramref name="done"/> of the total.</summary>
    public void Report(long done)
    {
        double seconds = _clock.Elapsed.TotalSeconds, rate = done / Math.Max(seconds, 1e-9);
        double eta = rate > 0 ? (total - done) / rate : 0;
        string line = $"{what}: {done}/{total} {unit} ({100.0 * done / Math.Max(total, 1):F0}%), {rate:F1} {unit}/s, {seconds:F1} s elapsed, ETA {eta:F0} s";
        if (!Console.IsErrorRedirected)
        {
            Console.Error.Write("\r" + line.PadRight(Console.WindowWidth > 0 ? Math.Min(Console.WindowWidth - 1, 120) : 0));
            if (done == total) Console.Error.WriteLine();
        }
        else if (done == total || _lastPrinted < 0 || done - _lastPrinted >= Math.Max(1, total / 10))
        {
            Console.Error.WriteLine(line);
            _lastPrinted = done;
        }
    }
}
