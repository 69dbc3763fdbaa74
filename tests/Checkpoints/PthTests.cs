using Engine.IO;
using System.Text.Json;
using Engine.Checkpoints;

namespace Engine.Tests;

/// <summary>The PyTorch .pth reader against files written by Python's own pickle module in torch.save's layout
/// (tests/Fixtures/make-pth.py), and the malformed or malicious files it must refuse.</summary>
[TestFixture]
public class PthTests
{
    static string Dir => VitFixtureTests.FixtureDir("pth");

    [Test]
    public void ReadsEveryTensorOfTheFixtureWithItsViewAndDtype()
    {
        using var checkpoint = Checkpoint.Open(Path.Combine(Dir, "checkpoint.pth"));
        Assert.That(checkpoint.Format, Is.EqualTo("pth"));
        using var expected = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "expected.json")));
        var names = expected.RootElement.EnumerateObject().Select(p => p.Name).ToArray();
        Assert.That(checkpoint.Entries.Select(e => e.Name), Is.EqualTo(names), "every tensor, in the state dict's order");
        var dtypes = new Dictionary<string, string> { ["float32"] = "F32", ["float16"] = "F16", ["int64"] = "I64", ["float64"] = "F64" };
        foreach (var p in expected.RootElement.EnumerateObject())
        {
            var entry = checkpoint.Find(p.Name)!;
            Assert.That(entry.Shape, Is.EqualTo(p.Value.GetProperty("shape").EnumerateArray().Select(v => v.GetInt32()).ToArray()), p.Name);
            Assert.That(entry.DType, Is.EqualTo(dtypes[p.Value.GetProperty("dtype").GetString()!]), p.Name);
            var want = p.Value.GetProperty("values").EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();
            Assert.That(entry.Read(), Is.EqualTo(want), $"{p.Name}: values (offsets, strides and shared storages honoured)");
        }
    }

    [Test]
    public void ReadsABareStateDictUnderAnyRootFolder()
    {
        using var checkpoint = Checkpoint.Open(Path.Combine(Dir, "bare.pth"));
        Assert.That(checkpoint.Entries.Select(e => e.Name), Is.EqualTo(new[] { "w" }));
        Assert.That(checkpoint.Find("w")!.Shape, Is.EqualTo(new[] { 2, 2 }));
    }

    [TestCase("unknown-global.pth", "refused global 'posix.system'")]
    [TestCase("missing-storage.pth", "tensor 'layers.0.blocks.0.attn.relative_position_index': its storage 'archive/data/2' is missing")]
    [TestCase("truncated-pickle.pth", "truncated")]
    [TestCase("bad-opcode.pth", "unsupported opcode 0xff")]
    [TestCase("out-of-range.pth", "tensor 'w': the view (offset 38, shape [2, 2], stride [2, 1]) runs past its storage of 40 elements")]
    [TestCase("truncated-zip.pth", "not a valid zip archive")]
    [TestCase("legacy.pth", "before PyTorch 1.6")]
    public void RefusesMalformedFilesNamingTheProblem(string file, string expect)
    {
        string path = Path.Combine(Dir, "bad", file);
        var e = Assert.Throws<InvalidInputException>(() => Checkpoint.Open(path).Dispose())!;
        Assert.That(e.Message, Does.StartWith(path).And.Contain(expect), e.Message);
    }
}
