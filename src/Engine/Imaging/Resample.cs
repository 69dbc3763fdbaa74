namespace Engine.Imaging;

/// <summary>
/// Separable resampling of channels-last float images [H, W, C] (also position-embedding grids).
/// <see cref="Bicubic"/> is Pillow's antialiased bicubic (Keys a = −0.5, support widened by the scale when
/// shrinking, weights renormalised at the borders), which is also PyTorch's <c>interpolate(bicubic,
/// antialias=True)</c> used by timm's checkpoint filter. <see cref="Bilinear"/> is PyTorch's bilinear with
/// align_corners=False and no antialias (timm's npz loader).
/// </summary>
public static class Resample
{
    /// <summary>Antialiased bicubic resize of src [h, w, c] to [outH, outW, c].</summary>
    public static float[] Bicubic(ReadOnlySpan<float> src, int h, int w, int c, int outH, int outW) =>
        Separable(src, h, w, c, outH, outW, Weights);

    /// <summary>Bilinear resize (align_corners=False, no antialias) of src [h, w, c] to [outH, outW, c].</summary>
    public static float[] Bilinear(ReadOnlySpan<float> src, int h, int w, int c, int outH, int outW) =>
        Separable(src, h, w, c, outH, outW, BilinearWeights);

    /// <summary>Per output index: the first input index and the weights of the inputs it reads.</summary>
    delegate (int[] First, float[][] Weights) WeightFunction(int inSize, int outSize);

    static float[] Separable(ReadOnlySpan<float> src, int h, int w, int c, int outH, int outW, WeightFunction weights)
    {
        if (h <= 0 || w <= 0 || c <= 0 || outH <= 0 || outW <= 0 || src.Length != (long)h * w * c)
            throw new ArgumentException($"resample: source of {src.Length} values is not [{h}, {w}, {c}], or the target [{outH}, {outW}] is empty");
        // Horizontal pass [h, w, c] → [h, outW, c], then vertical [h, outW, c] → [outH, outW, c] (Pillow's order).
        var (xFirst, xWeights) = weights(w, outW);
        var mid = new float[(long)h * outW * c];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < outW; x++)
            {
                var wk = xWeights[x];
                for (int ch = 0; ch < c; ch++)
                {
                    double sum = 0;
                    for (int k = 0; k < wk.Length; k++) sum += wk[k] * src[(y * w + xFirst[x] + k) * c + ch];
                    mid[(y * outW + x) * c + ch] = (float)sum;
                }
            }
        var (yFirst, yWeights) = weights(h, outH);
        var dst = new float[(long)outH * outW * c];
        for (int y = 0; y < outH; y++)
        {
            var wk = yWeights[y];
            for (int i = 0; i < outW * c; i++)
            {
                double sum = 0;
                for (int k = 0; k < wk.Length; k++) sum += wk[k] * mid[(yFirst[y] + k) * outW * c + i];
                dst[y * outW * c + i] = (float)sum;
            }
        }
        return dst;
    }

    /// <summary>Keys' cubic with a = −0.5 (Pillow's bicubic filter, support 2).</summary>
    static double Cubic(double x)
    {
        const double a = -0.5;
        x = Math.Abs(x);
        if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
        return 0;
    }

    static (int[], float[][]) Weights(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize, filterScale = Math.Max(scale, 1.0), support = 2.0 * filterScale;
        var first = new int[outSize];
        var weights = new float[outSize][];
        for (int i = 0; i < outSize; i++)
        {
            double center = (i + 0.5) * scale;
            int lo = Math.Max((int)(center - support + 0.5), 0), hi = Math.Min((int)(center + support + 0.5), inSize);
            var wk = new double[hi - lo];
            double total = 0;
            for (int k = 0; k < wk.Length; k++) total += wk[k] = Cubic((k + lo - center + 0.5) / filterScale);
            first[i] = lo;
            weights[i] = wk.Select(v => (float)(total == 0 ? 0 : v / total)).ToArray();
        }
        return (first, weights);
    }

    static (int[], float[][]) BilinearWeights(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        var first = new int[outSize];
        var weights = new float[outSize][];
        for (int i = 0; i < outSize; i++)
        {
            double s = Math.Max((i + 0.5) * scale - 0.5, 0);
            int i0 = Math.Min((int)s, inSize - 1);
            float t = (float)(s - i0);
            first[i] = i0;
            weights[i] = i0 + 1 < inSize ? [1 - t, t] : [1f];
        }
        return (first, weights);
    }
}
