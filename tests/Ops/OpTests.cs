using Engine.Conformance;

namespace Engine.Tests;

/// <summary>
/// Every op conformance case (<see cref="OpCases"/>: forward against a double-precision reference, every input
/// gradient against finite differences) on every backend. <c>peft selftest</c> runs the same cases.
/// </summary>
[TestFixture]
public class OpTests
{
    static IEnumerable<TestCaseData> Cases =>
        from backend in Backends.Names
        from op in OpCases.All
        select new TestCaseData(backend, op.Name).SetName($"{op.Name}(\"{backend}\")");

    [TestCaseSource(nameof(Cases))]
    public void Op(string backend, string name)
    {
        var device = Backends.Get(backend);
        OpCases.All.Single(c => c.Name == name).Run(device);
    }
}
