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
        Separable(src, h, w, c, outH, outW, (inSize, outSize) =>
        {
            var (first, weights) = Weights(inSize, outSize);
            return (first, [.. weights.Select(wk => wk.Select(v => (float)v).ToArray())]);
        });

    /// <summary>Pillow's fixed-point precision for 8-bit images: 32 − 8 − 2 fraction bits.</summary>
    const int PrecisionBits = 22;

    /// <summary>
    /// Antialiased bicubic resize of an 8-bit image [h, w, c] to [outH, outW, c], exactly as Pillow's
    /// <c>Image.resize(BICUBIC)</c> on an "RGB" or "L" image: the normalised weights rounded to 22-bit fixed point,
    /// sums started at one half, clipped to 0..255; the horizontal pass first, its result stored as 8 bits, and a
    /// pass skipped when that dimension keeps its size.
    /// </summary>
    public static byte[] BicubicBytes(ReadOnlySpan<byte> src, int h, int w, int c, int outH, int outW)
    {
        if (h <= 0 || w <= 0 || c <= 0 || outH <= 0 || outW <= 0 || src.Length != (long)h * w * c)
            throw new ArgumentException($"resample: source of {src.Length} bytes is not [{h}, {w}, {c}], or the target [{outH}, {outW}] is empty");
        byte[] current = src.ToArray();
        if (outW != w)
        {
            var (first, weights) = FixedWeights(w, outW);
            var next = new byte[(long)h * outW * c];
            for (int y = 0; y < h; y++)
                for (int x = 0; x < outW; x++)
                {
                    var k = weights[x];
                    int from = (y * w + first[x]) * c;
                    for (int ch = 0; ch < c; ch++)
                    {
                        int sum = 1 << (PrecisionBits - 1);
                        for (int i = 0; i < k.Length; i++) sum += current[from + i * c + ch] * k[i];
                        next[(y * outW + x) * c + ch] = Clip8(sum);
                    }
                }
            (current, w) = (next, outW);
        }
        if (outH != h)
        {
            var (first, weights) = FixedWeights(h, outH);
            var next = new byte[(long)outH * w * c];
            int row = w * c;
            for (int y = 0; y < outH; y++)
            {
                var k = weights[y];
                int from = first[y] * row;
                for (int j = 0; j < row; j++)
                {
                    int sum = 1 << (PrecisionBits - 1);
                    for (int i = 0; i < k.Length; i++) sum += current[from + i * row + j] * k[i];
                    next[y * row + j] = Clip8(sum);
                }
            }
            current = next;
        }
        return current;
    }

    static byte Clip8(int sum) => sum >= 1 << PrecisionBits << 8 ? (byte)255 : sum <= 0 ? (byte)0 : (byte)(sum >> PrecisionBits);

    /// <summary>The bicubic weights in Pillow's fixed point (rounded half away from zero).</summary>
    static (int[] First, int[][] Weights) FixedWeights(int inSize, int outSize)
    {
        var (first, weights) = Weights(inSize, outSize);
        return (first, [.. weights.Select(wk => wk.Select(v => (int)(v < 0 ? v * (1 << PrecisionBits) - 0.5 : v * (1 << PrecisionBits) + 0.5)).ToArray())]);
    }

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

    /// <summary>Pillow's bicubic weights in double: per output index, the first input and the normalised weights.</summary>
    static (int[], double[][]) Weights(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize, filterScale = Math.Max(scale, 1.0), support = 2.0 * filterScale;
        var first = new int[outSize];
        var weights = new double[outSize][];
        for (int i = 0; i < outSize; i++)
        {
            double center = (i + 0.5) * scale;
            int lo = Math.Max((int)(center - support + 0.5), 0), hi = Math.Min((int)(center + support + 0.5), inSize);
            var wk = new double[hi - lo];
            double total = 0;
            for (int k = 0; k < wk.Length; k++) total += wk[k] = Cubic((k + lo - center + 0.5) / filterScale);
            first[i] = lo;
            weights[i] = [.. wk.Select(v => total == 0 ? 0 : v / total)];
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
