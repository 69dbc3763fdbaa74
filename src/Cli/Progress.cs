using System.Diagnostics;

namespace Engine.Cli;

/// <summary>
/// Progress of a long run on stderr: on a terminal, one status line redrawn in place (cut to the window's width so it
/// never wraps) that log lines written through <see cref="Line"/> clear first and redraw after, so the two never mix;
/// when stderr is redirected, a plain line per ~10% (or nothing, with <see cref="TerminalOnly"/>).
/// </summary>
public sealed class Progress(string what, long total, string unit)
{
    /// <summary>Shown only on a terminal, and erased when done, as for the steps behind one row of a table: a redirected
    /// stderr (a log, a script) gets nothing, and the row that follows takes the status line's place.</summary>
    public bool TerminalOnly { get; init; }

    static readonly object Gate = new();
    static string? _shown; // the status line on the terminal now, if any

    readonly Stopwatch _clock = Stopwatch.StartNew();
    long _lastPrinted = -1;

    /// <summary>Writes a log line to stdout, keeping a status line shown on the terminal below it.</summary>
    public static void Line(string text)
    {
        lock (Gate)
        {
            if (_shown != null) Console.Error.Write("\r\u001b[K");
            Console.WriteLine(text);
            if (_shown != null) Console.Error.Write(_shown);
        }
    }

    /// <summary>Reports <paramref name="done"/> of the total.</summary>
    public void Report(long done)
    {
        double seconds = _clock.Elapsed.TotalSeconds, rate = done / Math.Max(seconds, 1e-9);
        // Rate and ETA only once there is time enough to measure them.
        string speed = seconds < 0.5 ? "" : $", {rate:F1} {unit}/s, ETA {(total - done) / Math.Max(rate, 1e-9):F0} s";
        string line = $"{what}: {done}/{total} {unit} ({100.0 * done / Math.Max(total, 1):F0}%), {seconds:F1} s elapsed{speed}";
        lock (Gate)
        {
            if (!Console.IsErrorRedirected)
            {
                int width = WindowWidth();
                _shown = line.Length < width ? line : line[..Math.Max(0, width - 1)];
                Console.Error.Write("\r\u001b[K" + _shown);
                if (done == total)
                {
                    Console.Error.Write(TerminalOnly ? "\r\u001b[K" : Environment.NewLine);
                    _shown = null;
                }
            }
            else if (TerminalOnly) { }
            else if (done == total || _lastPrinted < 0 || done - _lastPrinted >= Math.Max(1, total / 10))
            {
                Console.Error.WriteLine(line);
                _lastPrinted = done;
            }
        }
    }

    /// <summary>Takes the status line off the terminal without finishing it (the work stopped short: a row that ran out
    /// of memory prints itself in its place).</summary>
    public static void Erase()
    {
        lock (Gate)
        {
            if (_shown == null) return;
            Console.Error.Write("\r\u001b[K");
            _shown = null;
        }
    }

    static int WindowWidth()
    {
        try { return Console.WindowWidth > 0 ? Console.WindowWidth : 120; }
        catch (IOException) { return 120; }
    }
}
