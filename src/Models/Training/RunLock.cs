using System.Diagnostics;
using System.Globalization;

namespace Engine.Models.Training;

/// <summary>
/// A run folder's <c>run.lock</c>: "pid host start-time" of the process writing the run, created exclusively, deleted
/// when the run ends. A second writer is refused with the owner named; a lock left by a process that no longer runs on
/// this host (killed, crashed) is stale and taken over.
/// </summary>
sealed class RunLock : IDisposable
{
    readonly string _path;

    RunLock(string path) => _path = path;

    /// <summary>Takes the lock of <paramref name="runDir"/>.</summary>
    /// <exception cref="InvalidOperationException">Another live process holds it; the message names it.</exception>
    public static RunLock Acquire(string runDir)
    {
        string path = Path.Combine(runDir, "run.lock");
        string owner = $"{Environment.ProcessId} {Environment.MachineName} {DateTime.UtcNow:O}";
        for (int attempt = 0; attempt < 2; attempt++)
        {
            try
            {
                using var f = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
                f.Write(System.Text.Encoding.UTF8.GetBytes(owner));
                return new RunLock(path);
            }
            catch (IOException) when (File.Exists(path))
            {
                var parts = File.ReadAllText(path).Split(' ');
                bool parsed = parts.Length == 3 && int.TryParse(parts[0], out _) &&
                              DateTime.TryParse(parts[2], CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out _);
                if (parsed && parts[1] == Environment.MachineName && !Alive(int.Parse(parts[0]), DateTime.Parse(parts[2], CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind)))
                {
                    File.Delete(path); // stale: its process is gone
                    continue;
                }
                string who = parsed ? $"process {parts[0]} on {parts[1]} since {parts[2]}" : "an unreadable owner";
                throw new InvalidOperationException($"{runDir} is being written by {who} ({path}); wait for it, or delete the lock if that process is gone");
            }
        }
        throw new InvalidOperationException($"{runDir}: could not take {path}");
    }

    // True when pid runs and started before the lock was written (a reused pid started later).
    static bool Alive(int pid, DateTime lockedUtc)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited && p.StartTime.ToUniversalTime() <= lockedUtc.AddSeconds(1);
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    /// <summary>Releases the lock.</summary>
    public void Dispose() => File.Delete(_path);
}
