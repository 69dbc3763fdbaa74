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

    /// <summary>Resizes an image directly to size×size, exactly as Pillow's 8-bit bicubic (the reference loaders'
    /// <c>Resize((size, size), BICUBIC)</c>), and normalises it into <paramref name="chw"/> [3, size, size].</summary>
    public void ResizeInto(RgbImage image, int size, Span<float> chw) => Normalize(Resize(image, size), chw);

    /// <summary>The image resized directly to size×size (aspect ratio ignored) by Pillow's 8-bit antialiased bicubic,
    /// [size, size, 3] bytes; the pixels themselves when the size already matches.</summary>
    public static byte[] Resize(RgbImage image, int size) =>
        image.Width == size && image.Height == size ? image.Rgb : Resample.BicubicBytes(image.Rgb, image.Height, image.Width, 3, size, size);

    /// <summary>
    /// 8-bit pixels [H, W, 3] → <paramref name="chw"/> [3, H, W] as torchvision computes it in float32: ToTensor's
    /// v/255, then Normalize's (v − mean)/std.
    /// </summary>
    public void Normalize(ReadOnlySpan<byte> hwc, Span<float> chw)
    {
        int pixels = hwc.Length / 3;
        if (hwc.Length != pixels * 3 || chw.Length != hwc.Length)
            throw new ArgumentException($"normalize: {hwc.Length} bytes of RGB into {chw.Length} floats");
        for (int c = 0; c < 3; c++)
        {
            float mean = Mean[c], std = Std[c];
            var plane = chw.Slice(c * pixels, pixels);
            for (int p = 0; p < pixels; p++) plane[p] = (hwc[p * 3 + c] / 255f - mean) / std;
        }
    }
}
