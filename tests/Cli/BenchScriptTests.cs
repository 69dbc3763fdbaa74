using System.Diagnostics;

namespace Engine.Tests;

/// <summary><c>bench/run.sh</c> as users call it: its own help, the peft step benchmark's help and its refusal of
/// unknown options (never a whole benchmark run by mistake).</summary>
[TestFixture]
public class BenchScriptTests
{
    static string Repository => Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", ".."));

    static (int Code, string Out, string Err) Bench(params string[] args)
    {
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Repository };
        info.ArgumentList.Add(Path.Combine(Repository, "bench", "run.sh"));
        foreach (var a in args) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Test]
    public void HelpIsTheScriptsOwnAndRunsNothing()
    {
        if (!File.Exists(Path.Combine(Repository, "bench", "run.sh"))) Assert.Ignore($"no bench/run.sh under {Repository}");
        var (code, stdout, _) = Bench("--help");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("bash bench/run.sh peft").And.Contain("bash bench/run.sh cuda").And.Not.Contain("BenchmarkDotNet v"));
        (code, stdout, _) = Bench("peft", "--help");
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("step / full").And.Not.Contain("| method |"), "help, not a benchmark run");
        var (bad, _, stderr) = Bench("peft", "--bogus");
        Assert.That(bad, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("error: unknown option --bogus"));
    }
}
