using Engine.Kernels;

namespace Engine.Imaging;

/// <summary>
/// GPS's contrastive view (torchvision semantics, seeded): RandomResizedCrop to size×size (area scale 0.08–1, aspect
/// 3/4–4/3 log-uniform, ten tries then a centre crop, antialiased bicubic), horizontal flip with p 0.5, ColorJitter
/// (brightness, contrast, saturation 0.4, hue 0.1, in a random order) with p 0.8, grayscale with p 0.2, then the
/// normalisation. Every draw comes from a counter RNG keyed by (seed, image), so a view is reproducible alone.
/// Works on floats in [0, 1], not on 8-bit pixels as PIL does, so values differ from torchvision's in the last bits.
/// </summary>
public static class ContrastiveViews
{
    /// <summary>Writes one augmented view of <paramref name="image"/> into <paramref name="chw"/> [3, size, size].</summary>
    public static void Write(RgbImage image, int size, Normalization normalization, ulong seed, Span<float> chw)
    {
        ulong draw = 0;
        float Uniform(float low, float high) => low + (high - low) * CounterRng.Uniform(seed, draw++);
        var (top, left, h, w) = CropBox(image.Width, image.Height, Uniform);
        var crop = new float[h * w * 3];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w * 3; x++) crop[y * w * 3 + x] = image.Rgb[((top + y) * image.Width + left) * 3 + x] / 255f;
        var rgb = Resample.Bicubic(crop, h, w, 3, size, size);
        int pixels = size * size;
        for (int i = 0; i < rgb.Length; i++) rgb[i] = Math.Clamp(rgb[i], 0f, 1f);
        if (Uniform(0, 1) < 0.5f) FlipHorizontally(rgb, size);
        if (Uniform(0, 1) < 0.8f)
        {
            float brightness = Uniform(0.6f, 1.4f), contrast = Uniform(0.6f, 1.4f), saturation = Uniform(0.6f, 1.4f), hue = Uniform(-0.1f, 0.1f);
            int[] order = [0, 1, 2, 3];
            for (int i = 3; i > 0; i--) // Fisher–Yates: torchvision applies the four in a random order
            {
                int j = (int)(Uniform(0, 1) * (i + 1));
                (order[i], order[j]) = (order[j], order[i]);
            }
            foreach (int op in order)
                switch (op)
                {
                    case 0: Blend(rgb, brightness, _ => 0f); break;
                    case 1:
                        double mean = 0;
                        for (int p = 0; p < pixels; p++) mean += Gray(rgb, p);
                        Blend(rgb, contrast, _ => (float)(mean / pixels));
                        break;
                    case 2: Blend(rgb, saturation, p => Gray(rgb, p)); break;
                    default: ShiftHue(rgb, hue); break;
                }
        }
        if (Uniform(0, 1) < 0.2f)
            for (int p = 0; p < pixels; p++) rgb[p * 3] = rgb[p * 3 + 1] = rgb[p * 3 + 2] = Gray(rgb, p);
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < pixels; p++) chw[c * pixels + p] = (rgb[p * 3 + c] - normalization.Mean[c]) / normalization.Std[c];
    }

    /// <summary>torchvision's RandomResizedCrop.get_params: (top, left, height, width).</summary>
    static (int, int, int, int) CropBox(int width, int height, Func<float, float, float> uniform)
    {
        double area = (double)width * height;
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double target = area * uniform(0.08f, 1f), aspect = Math.Exp(uniform(MathF.Log(3f / 4), MathF.Log(4f / 3)));
            int w = (int)Math.Round(Math.Sqrt(target * aspect)), h = (int)Math.Round(Math.Sqrt(target / aspect));
            if (w > 0 && w <= width && h > 0 && h <= height)
                return ((int)(uniform(0, 1) * (height - h + 1)), (int)(uniform(0, 1) * (width - w + 1)), h, w);
        }
        // Fallback: the whole image cropped to the allowed aspect range, centred.
        double ratio = (double)width / height;
        int cw = width, ch = height;
        if (ratio < 3.0 / 4) ch = (int)Math.Round(width / (3.0 / 4));
        else if (ratio > 4.0 / 3) cw = (int)Math.Round(height * (4.0 / 3));
        return ((height - ch) / 2, (width - cw) / 2, ch, cw);
    }

    static void FlipHorizontally(float[] rgb, int size)
    {
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size / 2; x++)
                for (int c = 0; c < 3; c++)
                {
                    int a = (y * size + x) * 3 + c, b = (y * size + size - 1 - x) * 3 + c;
                    (rgb[a], rgb[b]) = (rgb[b], rgb[a]);
                }
    }

    /// <summary>ITU-R 601 luma, as PIL's convert("L").</summary>
    static float Gray(float[] rgb, int p) => 0.299f * rgb[p * 3] + 0.587f * rgb[p * 3 + 1] + 0.114f * rgb[p * 3 + 2];

    /// <summary>torchvision's _blend: factor·x + (1 − factor)·other(pixel), clamped to [0, 1].</summary>
    static void Blend(float[] rgb, float factor, Func<int, float> other)
    {
        for (int p = 0; p < rgb.Length / 3; p++)
        {
            float o = other(p);
            for (int c = 0; c < 3; c++) rgb[p * 3 + c] = Math.Clamp(factor * rgb[p * 3 + c] + (1 - factor) * o, 0f, 1f);
        }
    }

    /// <summary>Adds <paramref name="shift"/> (in turns) to every pixel's hue, through HSV.</summary>
    static void ShiftHue(float[] rgb, float shift)
    {
        for (int p = 0; p < rgb.Length / 3; p++)
        {
            float r = rgb[p * 3], g = rgb[p * 3 + 1], b = rgb[p * 3 + 2];
            float max = MathF.Max(r, MathF.Max(g, b)), min = MathF.Min(r, MathF.Min(g, b)), delta = max - min;
            if (delta == 0) continue; // grey: no hue
            float h = max == r ? (g - b) / delta : max == g ? 2 + (b - r) / delta : 4 + (r - g) / delta;
            h = (h / 6 + shift) % 1f;
            if (h < 0) h += 1;
            float s = delta / max, v = max, sector = h * 6;
            int i = (int)sector % 6;
            float f = sector - MathF.Floor(sector), pv = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
            (rgb[p * 3], rgb[p * 3 + 1], rgb[p * 3 + 2]) = i switch
            {
                0 => (v, t, pv),
                1 => (q, v, pv),
                2 => (pv, v, t),
                3 => (pv, q, v),
                4 => (t, pv, v),
                _ => (v, pv, q),
            };
        }
    }
}
