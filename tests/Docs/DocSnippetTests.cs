using System.Text.RegularExpressions;

namespace Engine.Tests.Docs;

/// <summary>The code in README.md and docs/ cannot rot: every C# block there is a region of <see cref="DocSnippets"/>
/// (compiled with the tests), word for word, and the README's blocks run.</summary>
[TestFixture]
public partial class DocSnippetTests
{
    static string Root => Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "../../../.."));

    static string SnippetFile => File.ReadAllText(Path.Combine(Root, "tests", "Docs", "DocSnippets.cs"));

    [GeneratedRegex(@"```csharp\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CodeBlock();

    [GeneratedRegex(@"^ *#region (\w+)\n(.*?)^ *#endregion", RegexOptions.Singleline | RegexOptions.Multiline)]
    private static partial Regex Region();

    [GeneratedRegex(@"^using [A-Za-z.]+;$")]
    private static partial Regex UsingDirective();

    static IEnumerable<string> Documents() =>
        [Path.Combine(Root, "README.md"), .. Directory.GetFiles(Path.Combine(Root, "docs"), "*.md").Order(StringComparer.Ordinal)];

    /// <summary>Lines with their common indentation removed and trailing blanks dropped.</summary>
    static string Dedent(IEnumerable<string> lines)
    {
        var list = lines.Select(l => l.TrimEnd()).ToList();
        while (list.Count > 0 && list[^1].Length == 0) list.RemoveAt(list.Count - 1);
        int indent = list.Where(l => l.Length > 0).Select(l => l.Length - l.TrimStart().Length).DefaultIfEmpty(0).Min();
        return string.Join("\n", list.Select(l => l.Length == 0 ? "" : l[indent..]));
    }

    [Test]
    public void EveryCodeBlockOfTheDocsIsACompiledSnippet()
    {
        string source = SnippetFile;
        var regions = Region().Matches(source).ToDictionary(m => m.Groups[1].Value, m => Dedent(m.Groups[2].Value.Split('\n')));
        var fileUsings = source.Split('\n').Where(l => UsingDirective().IsMatch(l)).ToHashSet();
        var used = new HashSet<string>();
        int blocks = 0;
        foreach (var doc in Documents())
            foreach (Match block in CodeBlock().Matches(File.ReadAllText(doc)))
            {
                blocks++;
                var lines = block.Groups[1].Value.Split('\n').ToList();
                var usings = lines.TakeWhile(l => UsingDirective().IsMatch(l) || l.Length == 0).ToList();
                foreach (var u in usings.Where(u => u.Length > 0))
                    Assert.That(fileUsings, Does.Contain(u), $"{Path.GetFileName(doc)}: '{u}' is not among DocSnippets.cs's usings");
                string body = Dedent(lines.Skip(usings.Count));
                var match = regions.FirstOrDefault(r => r.Value == body);
                Assert.That(match.Key, Is.Not.Null,
                    $"{Path.GetFileName(doc)}: a C# block is not a region of tests/Docs/DocSnippets.cs (copy it there, or fix it):\n{body}");
                used.Add(match.Key!);
            }
        Assert.That(blocks, Is.GreaterThan(0));
        Assert.That(regions.Keys.Except(used), Is.Empty, "regions no document shows");
    }

    [Test]
    public void TheReadmeQuickStartTrains()
    {
        var inputs = Init.NormalValues(32 * 64, 0, 1, 3);
        var labels = Enumerable.Range(0, 32).Select(i => i % 10).ToArray();
        DocSnippets.ReadmeQuickStart(inputs, labels);
    }

    [Test]
    public void TheReadmeFineTuningWithAMethodRuns()
    {
        string run = Path.Combine(Path.GetTempPath(), "engine-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(run);
        string previous = Environment.CurrentDirectory;
        try
        {
            Environment.CurrentDirectory = Root; // the snippet reads models/synthetic-vit as the README's commands do
            using var images = Tensor.FromArray(Device.Cpu, Init.NormalValues(4 * 3 * 32 * 32, 0, 1, 5), 4, 3, 32, 32);
            using var targets = Tensor.FromArray(Device.Cpu, [0, 1, 2, 3], 4);
            DocSnippets.ReadmeFineTuneWithAMethod(images, targets, run);
            using var method = Engine.Models.Peft.PeftMethod.ForTrainedFile(Path.Combine(run, "ssf.safetensors"));
            Assert.That(method.Name, Is.EqualTo("ssf"));
        }
        finally
        {
            Environment.CurrentDirectory = previous;
            Directory.Delete(run, recursive: true);
        }
    }
}
