using Engine.Kernels;

namespace Engine.Models.Demo;

/// <summary>
/// A generated sequence-classification task for the demo: each sample is Gaussian noise over
/// [tokens, features] with one class-specific pattern (a fixed random vector per class) planted at a random token.
/// Chance accuracy is 1/classes; a model must find the token and recognise the pattern.
/// </summary>
public sealed class PatternTask(int tokens, int features, int classes, ulong seed)
{
    readonly float[][] _patterns = Enumerable.Range(0, classes)
        .Select(c => Init.NormalValues(features, 0f, 1.5f, CounterRng.Hash(seed, (ulong)c))).ToArray();

    /// <summary>Samples [count, tokens, features] and labels [count] for batch index <paramref name="batch"/>.</summary>
    public (float[] X, int[] Y) Batch(int count, ulong batch)
    {
        var x = new float[count * tokens * features];
        var y = new int[count];
        for (int i = 0; i < count; i++)
        {
            ulong s = CounterRng.Hash(seed ^ 0x5EED, batch * 100_003 + (ulong)i);
            var noise = Init.NormalValues(tokens * features, 0f, 1f, s);
            int label = (int)(CounterRng.Hash(s, 1) % (ulong)classes), at = (int)(CounterRng.Hash(s, 2) % (ulong)tokens);
            for (int f = 0; f < features; f++) noise[at * features + f] += _patterns[label][f];
            noise.CopyTo(x, i * tokens * features);
            y[i] = label;
        }
        return (x, y);
    }
}
