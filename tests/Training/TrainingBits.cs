using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>Two training runs compared bit for bit (<see cref="GraphCheck.Result"/>: the losses of the six steps and
/// every parameter after them).</summary>
static class TrainingBits
{
    /// <summary>Every loss and parameter of <paramref name="run"/> bit for bit <paramref name="reference"/>'s, which moved
    /// the parameters; <paramref name="what"/> names the two runs in a failure.</summary>
    public static void AssertSame(GraphCheck.Result run, GraphCheck.Result reference, string what = "")
    {
        string runs = what.Length > 0 ? $" ({what})" : "";
        Assert.That(run.Losses.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(reference.Losses.Select(BitConverter.SingleToInt32Bits)),
            $"losses {string.Join(", ", run.Losses)} against {string.Join(", ", reference.Losses)}{runs}");
        for (int p = 0; p < reference.Parameters.Length; p++)
            Assert.That(run.Parameters[p].Select(BitConverter.SingleToInt32Bits), Is.EqualTo(reference.Parameters[p].Select(BitConverter.SingleToInt32Bits)),
                $"parameter {p} after six steps{runs}");
        Assert.That(reference.Parameters.Zip(reference.Initial).Any(p => !p.First.SequenceEqual(p.Second)), "training moved the parameters");
    }
}
