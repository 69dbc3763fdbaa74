namespace Engine.Bench;

/// <summary>Summaries of timings taken in alternating rounds (each round runs every side once, back to back).</summary>
static class Rounds
{
    /// <summary>The median of <paramref name="values"/> (the upper one of an even count).</summary>
    public static double Median(IReadOnlyList<double> values) => values.Order().ElementAt(values.Count / 2);

    /// <summary>The median of a[r] / b[r] over rounds r. The sides of a round ran back to back, so a slow spell of a
    /// shared VM (up to 1.5× for seconds to minutes) slows both and cancels in that round's ratio; a ratio of the two
    /// medians can pair a fast round of one side with a slow round of the other.</summary>
    public static double PairedRatio(IReadOnlyList<double> a, IReadOnlyList<double> b) =>
        a.Count == b.Count ? Median([.. a.Zip(b, (x, y) => x / y)])
            : throw new ArgumentException($"{a.Count} rounds against {b.Count}: ratios need the same rounds");
}
