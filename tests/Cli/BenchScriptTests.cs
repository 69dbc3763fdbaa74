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
        // The benchmark program as the solution's build left it (dotnet's build check would take ~10 s a call); built
        // first where only the tests were.
        string[] build = File.Exists(Path.Combine(Repository, "bench", "bin", "Release", "net10.0", "Engine.Bench.dll")) ? ["--no-build"] : [];
        (code, stdout, _) = Bench([.. build, "peft", "--help"]);
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("step / full").And.Not.Contain("| method |"), "help, not a benchmark run");
        var (bad, _, stderr) = Bench([.. build, "peft", "--bogus"]);
        Assert.That(bad, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("error: unknown option --bogus"));
    }
}

/// <summary>The PyTorch peer's table made again from rows on disk (<c>timm_step.py --peer-rows</c>, as the GPU kit does
/// after its last runs): no GPU or PyTorch needed, our images/s over the peer's per row, with the graphed and
/// other-attention columns; a row we did not run is left out, a side that ran out of device memory is said so; then
/// each of the issue's goals, met or not.</summary>
[TestFixture]
public class PeerTableTests
{
    /// <summary>python3 with <paramref name="args"/> in <paramref name="directory"/>: its stdout, once it exited 0 (the
    /// test is skipped without python3).</summary>
    static string Python(string directory, params string[] args)
    {
        var info = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = directory };
        foreach (var a in args) info.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(info)!; }
        catch (System.ComponentModel.Win32Exception) { Assert.Ignore("python3 not found"); throw; }
        using (p)
        {
            var stderr = p.StandardError.ReadToEndAsync();
            string stdout = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.That(p.ExitCode, Is.Zero, stderr.Result);
            return stdout;
        }
    }

    [Test]
    public void TheTableIsMadeAgainFromRowsOnDisk()
    {
        string repo = Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", ".."));
        string dir = Files.TempDir();
        static string Row(string method, int batch, double imagesPerSecond, double peak, string extra = "", string precision = "bf16") =>
            $"{{\"method\": \"{method}\", \"precision\": \"{precision}\", \"batch\": {batch}, \"images_per_second\": {imagesPerSecond}, \"peak_memory_mib\": {peak}{extra}}}";
        static string OutOfMemory(string method, int batch, string precision = "bf16") =>
            $"{{\"method\": \"{method}\", \"precision\": \"{precision}\", \"batch\": {batch}, \"out_of_memory\": true, \"error\": \"out of memory\"}}";
        static string Failed(string method, int batch) =>
            $"{{\"method\": \"{method}\", \"precision\": \"bf16\", \"batch\": {batch}, \"failed\": true, \"context_lost\": true, \"error\": \"illegal address\"}}";
        File.WriteAllLines(Path.Combine(dir, "peer.json"), [Row("full", 32, 100, 4000, ", \"reserved_memory_mib\": 4500"), Row("gps", 32, 200, 3600), Row("ssf", 32, 80, 3000),
            Row("full", 32, 150, 4000, precision: "fp16"), Row("gps", 32, 60, 3400, precision: "fp16"), Row("ssf", 32, 90, 3000, precision: "fp16"),
            Row("full", 128, 300, 8000), Row("full", 128, 320, 8000, precision: "fp16"), OutOfMemory("gps", 128), OutOfMemory("gps", 128, "fp16"),
            Row("ssf", 128, 100, 9000), Row("ssf", 128, 110, 9000, precision: "fp16")]);
        File.WriteAllLines(Path.Combine(dir, "ours.json"), [Row("full", 32, 150, 3900, ", \"attention\": \"fused\", \"device_memory_mib\": 4300"), Row("gps", 32, 100, 3500, ", \"attention\": \"fused\""),
            OutOfMemory("full", 128), Row("gps", 128, 250, 7000, ", \"attention\": \"fused\""), Failed("ssf", 128)]);
        File.WriteAllLines(Path.Combine(dir, "ours-graph.json"), [Row("full", 32, 160, 3900, ", \"cuda_graph\": true")]);
        File.WriteAllLines(Path.Combine(dir, "other.json"), [Row("full", 32, 120, 4100, ", \"attention\": \"unfused\"")]);
        string stdout = Python(dir, Path.Combine(repo, "bench", "peers", "timm_step.py"), "--peer-rows", "peer.json", "--ours", "ours.json", "ours-graph.json",
            "--ours-other", "other.json");
        Assert.That(stdout, Does.Contain("| full | bf16 | 32 | 150.0 | 100.0 | **1.50** | 1.60 | fused | 1.20 (unfused) | 3900 | 4100 | 4000 | 4300 | 4500 |"));
        Assert.That(stdout, Does.Contain("| gps | bf16 | 32 | 100.0 | 200.0 | **0.50** | – | fused | – | 3500 | – | 3600 | – | – |"));
        Assert.That(stdout, Does.Not.Contain("| ssf | bf16 | 32 |"), "a row we did not run");
        // The goals: our bf16 rows without a graph over the peer's fp16 AMP rows; ssf not run on our side.
        Assert.That(stdout, Does.Contain("| 32 | – | 1.67 met | 1.00 met | 3500 / 3400 MiB not met |"));
        // A side that ran out of device memory: its row says so, its ratios are "–", and the goals say who ran out.
        Assert.That(stdout, Does.Contain("| full | bf16 | 128 | out of memory | 300.0 | **–** | – | – | – | – | – | 8000 | – | – |"));
        Assert.That(stdout, Does.Contain("| gps | bf16 | 128 | 250.0 | out of memory | **–** | – | fused | – | 7000 | – | – | – | – |"));
        // A step of ours that failed (a kernel that lost the GPU context, a loss that diverged): the same, and its goal not met.
        Assert.That(stdout, Does.Contain("| ssf | bf16 | 128 | failed | 100.0 | **–** | – | – | – | – | – | 9000 | – | – |"));
        Assert.That(stdout, Does.Contain("| 128 | not met: ours failed | peer out of memory | not met: ours out of memory | peer out of memory |"));
    }

    /// <summary>A batch too large for the GPU gives the peer a row that says so, with PyTorch's first line of the error,
    /// after the cache is emptied, instead of ending the run (a stand-in for torch raises its out-of-memory error as
    /// the step starts; no GPU or PyTorch needed).</summary>
    [Test]
    public void APeerStepThatRunsOutOfMemoryGivesARowThatSaysSo()
    {
        string peers = Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "..", "..", "..", "..", "bench", "peers"));
        const string script = """
            import json, sys, types
            sys.path.insert(0, sys.argv[1])
            import timm_step
            class OutOfMemory(Exception): pass
            class Backends:
                def __getattr__(self, name): raise OutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB.\nmore lines")
            emptied = []
            torch = types.SimpleNamespace(backends=Backends(),
                cuda=types.SimpleNamespace(OutOfMemoryError=OutOfMemory, empty_cache=lambda: emptied.append(True)))
            row = timm_step.time_one("full", "bf16", 512, types.SimpleNamespace(model="vit_base_patch16_224"), torch, None, None)
            print(json.dumps(row, sort_keys=True), len(emptied))
            """;
        string stdout = Python(Path.GetTempPath(), "-c", script, peers);
        Assert.That(stdout.Trim(), Is.EqualTo("{\"batch\": 512, \"engine\": \"pytorch-timm\", \"error\": \"CUDA out of memory. Tried to allocate 2.00 GiB.\", " +
            "\"method\": \"full\", \"model\": \"vit_base_patch16_224\", \"out_of_memory\": true, \"precision\": \"bf16\"} 1"));
    }
}
