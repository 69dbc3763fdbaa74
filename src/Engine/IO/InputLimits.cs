namespace Engine.IO;

/// <summary>
/// The bounds every reader of outside files enforces before it sizes anything by a declared number, so a small hostile
/// file cannot make the process allocate, read or loop without end (docs/limits.md says why each is where it is).
/// </summary>
public static class InputLimits
{
    /// <summary>Elements of one tensor in a checkpoint (2²⁸: 1 GiB as float32; the largest tensor of the models here,
    /// a 21k-class ViT-H head, has 2.8·10⁷).</summary>
    public const long MaxTensorElements = 1L << 28;

    /// <summary>Dimensions of one tensor.</summary>
    public const int MaxRank = 8;

    /// <summary>Tensors in one checkpoint (ViT-B has 152, Swin-B 329).</summary>
    public const int MaxTensors = 1 << 16;

    /// <summary>A zip member's declared size may exceed its compressed size by this factor at most (deflate's own
    /// ceiling is about 1032:1); beyond it the archive is a decompression bomb.</summary>
    public const long MaxCompressionRatio = 1100;

    /// <summary>Bytes of one image file (VTAB-1k's are kilobytes; a 8192² PNG is far below this).</summary>
    public const long MaxImageFileBytes = 64L << 20;

    /// <summary>Pixels of one decoded image (8192 × 8192).</summary>
    public const long MaxImagePixels = 1L << 26;

    /// <summary>The element count of <paramref name="shape"/>, checked: at most <see cref="MaxRank"/> dimensions, none
    /// negative, at most <see cref="MaxTensorElements"/> elements (checked before each multiplication, so nothing overflows).</summary>
    /// <exception cref="InvalidInputException">The shape is out of bounds; the message names <paramref name="where"/>.</exception>
    public static long Elements(IReadOnlyList<long> shape, string where, string what)
    {
        if (shape.Count > MaxRank) throw new InvalidInputException(where, $"{what} has {shape.Count} dimensions, more than the {MaxRank} allowed");
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new InvalidInputException(where, $"{what} has a negative dimension ({d})");
            if (d != 0 && count > MaxTensorElements / d)
                throw new InvalidInputException(where, $"{what} of shape [{string.Join(", ", shape)}] has more than {MaxTensorElements} elements");
            count *= d;
        }
        return shape.Contains(0) ? 0 : count;
    }

    /// <inheritdoc cref="Elements(IReadOnlyList{long}, string, string)"/>
    public static long Elements(int[] shape, string where, string what) => Elements([.. shape.Select(d => (long)d)], where, what);
}
