namespace Engine.Imaging;

/// <summary>Per-channel input normalisation x' = (x/255 − mean) / std, with timm's presets.</summary>
/// <param name="Mean">RGB means in [0, 1].</param>
/// <param name="Std">RGB standard deviations.</param>
public sealed record Normalization(float[] Mean, float[] Std)
{
    /// <summary>mean = std = 0.5 (timm's IMAGENET_INCEPTION_*; Google ViT and AugReg checkpoints).</summary>
    public static Normalization Inception { get; } = new([0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);

    /// <summary>ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) (Swin, ConvNeXt).</summary>
    public static Normalization ImageNet { get; } = new([0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);

    /// <summary>"inception" or "imagenet".</summary>
    public static Normalization FromName(string name) => name switch
    {
        "inception" => Inception,
        "imagenet" => ImageNet,
        _ => throw new ArgumentException($"unknown normalisation '{name}' (use inception or imagenet)"),
    };

    /// <summary>Resizes an image directly to size×size (antialiased bicubic, on floats) and normalises it into
    /// <paramref name="chw"/> [3, size, size].</summary>
    public void ResizeInto(RgbImage image, int size, Span<float> chw)
    {
        var hwc = new float[image.Rgb.Length];
        for (int i = 0; i < hwc.Length; i++) hwc[i] = image.Rgb[i];
        var resized = image.Width == size && image.Height == size ? hwc : Resample.Bicubic(hwc, image.Height, image.Width, 3, size, size);
        for (int c = 0; c < 3; c++)
        {
            float scale = 1f / (255f * Std[c]), shift = Mean[c] / Std[c];
            for (int p = 0; p < size * size; p++) chw[c * size * size + p] = resized[p * 3 + c] * scale - shift;
        }
    }
}
