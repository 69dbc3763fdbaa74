using Engine.Kernels;

namespace Engine.Imaging;

/// <summary>
/// A recipe's training augmentation on 8-bit pixels after the resize, in timm's <c>transforms_imagenet_train</c> order:
/// horizontal flip with probability 0.5, then <see cref="RandAugment"/>. Every draw comes from the image's seed, so a
/// resumed run augments each step as the uninterrupted run did.
/// </summary>
/// <param name="HorizontalFlip">Flip with probability 0.5.</param>
/// <param name="RandAugment">The RandAugment policy after the flip, or null.</param>
public sealed record TrainAugmentation(bool HorizontalFlip, RandAugment? RandAugment)
{
    /// <summary>True when it changes nothing.</summary>
    public bool IsIdentity => !HorizontalFlip && RandAugment == null;

    /// <summary>Augments <paramref name="rgb"/> [height, width, 3] in place with the draws of <paramref name="seed"/>.</summary>
    public void Apply(Span<byte> rgb, int height, int width, ulong seed)
    {
        if (HorizontalFlip && CounterRng.Uniform(seed, 0) < 0.5f)
            for (int y = 0; y < height; y++)
            {
                var row = rgb.Slice(y * width * 3, width * 3);
                for (int x = 0; x < width / 2; x++)
                    for (int c = 0; c < 3; c++)
                        (row[x * 3 + c], row[(width - 1 - x) * 3 + c]) = (row[(width - 1 - x) * 3 + c], row[x * 3 + c]);
            }
        RandAugment?.Apply(rgb, height, width, CounterRng.Hash(seed, 1));
    }
}
