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
        // Rate and ETA only once there is time enough to measure them.
        string speed = seconds < 0.5 ? "" : $", {rate:F1} {unit}/s, ETA {(total - done) / Math.Max(rate, 1e-9):F0} s";
        string line = $"{what}: {done}/{total} {unit} ({100.0 * done / Math.Max(total, 1):F0}%), {seconds:F1} s elapsed{speed}";
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
