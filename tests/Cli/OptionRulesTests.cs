namespace Engine.Tests;

/// <summary>The command line's one validation layer, through the real executable: a bad number or an unknown value is
/// one error line naming the option, then where the help is, and nothing runs.</summary>
[TestFixture]
public class OptionRulesTests
{
    static readonly string[] VtabRun = ["vtab", "run", "--data", "/nonexistent-data", "--task", "dtd", "--method", "ssf"];

    [TestCase("--epochs", "0", "--epochs must be at least 1 (got 0)")]
    [TestCase("--epochs", "-3", "--epochs must be at least 1 (got -3)")]
    [TestCase("--batch-size", "0", "--batch-size must be at least 1 (got 0)")]
    [TestCase("--eval-every", "0", "--eval-every must be at least 1 (got 0)")]
    [TestCase("--warmup-epochs", "-1", "--warmup-epochs must be at least 0")]
    [TestCase("--cooldown-epochs", "-1", "--cooldown-epochs must be at least 0")]
    [TestCase("--lr", "-0.1", "--lr must be a finite number above 0")]
    [TestCase("--lr", "nan", "--lr must be a finite number above 0 (got nan)")]
    [TestCase("--weight-decay", "-1", "--weight-decay must be a finite number ≥ 0")]
    [TestCase("--label-smoothing", "1.5", "--label-smoothing must lie in [0, 1) (got 1.5)")]
    [TestCase("--drop-path", "1", "--drop-path must lie in [0, 1)")]
    [TestCase("--k", "0", "--k: '0': the value must be an integer ≥ 1")]
    [TestCase("--threads", "0", "--threads must be at least 1 (got 0)")]
    [TestCase("--epochs", "abc", "Cannot parse argument 'abc' for option '--epochs' as an integer")]
    [TestCase("--method", "dora", "--method: Argument 'dora' not recognized. Must be one of: 'full', 'linear', 'bias', 'ssf', 'sct', 'gps', 'lora', 'adapter', 'adaptformer', 'vpt'")]
    public void ABadValueIsOneLineNamingTheOption(string option, string value, string expected)
    {
        var args = option == "--method" ? [.. VtabRun[..^2], option, value] : VtabRun.Append(option).Append(value).ToArray();
        var (code, stdout, stderr) = CliTests.Peft(args);
        Assert.That(code, Is.EqualTo(1));
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(2), "one error line, then where the help is; no help text");
        Assert.That(lines[0], Does.StartWith($"error: {expected}"));
        Assert.That(lines[1], Is.EqualTo("see 'peft vtab run --help'"));
        Assert.That(stdout, Is.Empty, "nothing ran (no device line, no output)");
        Assert.That(stderr, Does.Not.Contain("System.").And.Not.Contain("Description:"));
    }

    [Test]
    public void MissingOptionsAndUnknownArgumentsAreListedOncePerLine()
    {
        var (code, _, stderr) = CliTests.Peft("vtab", "run", "--bogus");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("error: Unrecognized command or argument '--bogus'.").And.Contain("error: Option '--task' is required.")
            .And.EndWith("see 'peft vtab run --help'\n"));
        Assert.That(CliTests.Peft().Err, Does.Contain("error: Required command was not provided.").And.Contain("see 'peft --help'"));
    }
}
