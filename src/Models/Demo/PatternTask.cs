using Engine.Kernels;

namespace Engine.Models.Demo;

/// <summary>
/// A generated image-classification task for the demo and the engine tests: each image [channels, size, size] is
/// Gaussian noise with one class-specific pattern (a fixed random patch per class) added at a random patch-aligned
/// position. Chance accuracy is 1/classes; a model must find the patch and recognise the pattern.
/// </summary>
public sealed class PatternTask(int channels, int imageSize, int patch, int classes, ulong seed)
{
    readonly float[][] _patterns = Enumerable.Range(0, classes)
        .Select(c => Init.NormalValues(channels * patch * patch, 0f, 1.5f, CounterRng.Hash(seed, (ulong)c))).ToArray();

    /// <summary>Images [count, channels, size, size] (NCHW) and labels [count] for batch index <paramref name="batch"/>.</summary>
    public (float[] X, int[] Y) Batch(int count, ulong batch)
    {
        int side = imageSize / patch, pixels = channels * imageSize * imageSize;
        var x = new float[count * pixels];
        var y = new int[count];
        for (int i = 0; i < count; i++)
        {
            ulong s = CounterRng.Hash(seed ^ 0x5EED, batch * 100_003 + (ulong)i);
            var image = Init.NormalValues(pixels, 0f, 1f, s);
            int label = (int)(CounterRng.Hash(s, 1) % (ulong)classes), at = (int)(CounterRng.Hash(s, 2) % (ulong)(side * side));
            int top = at / side * patch, left = at % side * patch;
            for (int c = 0; c < channels; c++)
                for (int ky = 0; ky < patch; ky++)
                    for (int kx = 0; kx < patch; kx++)
                        image[(c * imageSize + top + ky) * imageSize + left + kx] += _patterns[label][(c * patch + ky) * patch + kx];
            image.CopyTo(x, i * pixels);
            y[i] = label;
        }
        return (x, y);
    }
}
