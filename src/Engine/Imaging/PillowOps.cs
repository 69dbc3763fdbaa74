using System.Globalization;

namespace Engine.Imaging;

/// <summary>
/// Pillow's 8-bit RGB operations that timm's RandAugment calls, reproduced to the byte (Pillow 9.4; fixtures from Pillow
/// check every one): ImageOps (autocontrast, equalize, invert, posterize, solarize), a 256-entry lookup table
/// (<c>Image.point</c>), ImageEnhance (color, contrast, brightness, sharpness: a float32 blend with a degenerate image),
/// <c>Image.rotate</c> and the affine <c>Image.transform</c> with bicubic resampling and a fill colour. Images are
/// [height, width, 3] bytes, changed in place.
/// </summary>
public static class PillowOps
{
    /// <summary>Maps every byte through <paramref name="table"/> (256 entries, the same for the three bands).</summary>
    public static void Lookup(Span<byte> rgb, ReadOnlySpan<byte> table)
    {
        if (table.Length != 256) throw new ArgumentException($"a lookup table has 256 entries, not {table.Length}", nameof(table));
        for (int i = 0; i < rgb.Length; i++) rgb[i] = table[rgb[i]];
    }

    /// <summary><c>ImageOps.invert</c>: 255 − v.</summary>
    public static void Invert(Span<byte> rgb) => Lookup(rgb, Table(i => 255 - i));

    /// <summary><c>ImageOps.posterize</c>: keeps the top <paramref name="bits"/> bits (0 gives black; 8 or more: unchanged,
    /// as timm's wrapper).</summary>
    public static void Posterize(Span<byte> rgb, int bits)
    {
        if (bits >= 8) return;
        int mask = ~((1 << (8 - Math.Max(bits, 0))) - 1);
        Lookup(rgb, Table(i => i & mask));
    }

    /// <summary><c>ImageOps.solarize</c>: inverts every value at or above <paramref name="threshold"/>.</summary>
    public static void Solarize(Span<byte> rgb, int threshold) => Lookup(rgb, Table(i => i < threshold ? i : 255 - i));

    /// <summary>timm's <c>solarize_add</c>: adds <paramref name="add"/> (saturating) to values below <paramref name="threshold"/>.</summary>
    public static void SolarizeAdd(Span<byte> rgb, int add, int threshold = 128) => Lookup(rgb, Table(i => i < threshold ? Math.Min(255, i + add) : i));

    /// <summary><c>ImageOps.autocontrast</c> (no cutoff): each band's darkest value maps to 0 and its brightest to 255,
    /// by a table truncated toward zero; a band of one value is left as it is.</summary>
    public static void AutoContrast(Span<byte> rgb)
    {
        var tables = new byte[3][];
        for (int band = 0; band < 3; band++)
        {
            var h = Histogram(rgb, band);
            int lo = 0, hi = 255;
            while (lo < 255 && h[lo] == 0) lo++;
            while (hi > 0 && h[hi] == 0) hi--;
            if (hi <= lo) { tables[band] = Table(i => i); continue; }
            double scale = 255.0 / (hi - lo), offset = -lo * scale;
            tables[band] = Table(i => Math.Clamp((int)(i * scale + offset), 0, 255));
        }
        LookupPerBand(rgb, tables);
    }

    /// <summary><c>ImageOps.equalize</c>: each band through its cumulative histogram (step = (pixels − count of the
    /// brightest value) / 255, integer arithmetic, clipped at 255); a band of one value is left as it is.</summary>
    public static void Equalize(Span<byte> rgb)
    {
        var tables = new byte[3][];
        for (int band = 0; band < 3; band++)
        {
            var h = Histogram(rgb, band);
            long total = 0, last = 0;
            int used = 0;
            foreach (int count in h)
                if (count != 0) { total += count; last = count; used++; }
            long step = (total - last) / 255;
            if (used <= 1 || step == 0) { tables[band] = Table(i => i); continue; }
            var table = new byte[256];
            long n = step / 2;
            for (int i = 0; i < 256; i++)
            {
                table[i] = (byte)Math.Min(255, n / step);
                n += h[i];
            }
            tables[band] = table;
        }
        LookupPerBand(rgb, tables);
    }

    /// <summary><c>ImageEnhance.Color(img).enhance(factor)</c>: a blend with the image's grey (Pillow's L = (19595 R +
    /// 38470 G + 7471 B + 2¹⁵) ≫ 16).</summary>
    public static void Color(Span<byte> rgb, float factor)
    {
        var grey = new byte[rgb.Length];
        for (int p = 0; p < rgb.Length; p += 3) grey[p] = grey[p + 1] = grey[p + 2] = Luma(rgb, p);
        Blend(grey, rgb, factor);
    }

    /// <summary><c>ImageEnhance.Contrast(img).enhance(factor)</c>: a blend with the grey image's mean, rounded to an integer.</summary>
    public static void Contrast(Span<byte> rgb, float factor)
    {
        long sum = 0;
        for (int p = 0; p < rgb.Length; p += 3) sum += Luma(rgb, p);
        int mean = (int)((double)sum / (rgb.Length / 3) + 0.5);
        var flat = new byte[rgb.Length];
        flat.AsSpan().Fill((byte)mean);
        Blend(flat, rgb, factor);
    }

    /// <summary><c>ImageEnhance.Brightness(img).enhance(factor)</c>: a blend with black.</summary>
    public static void Brightness(Span<byte> rgb, float factor) => Blend(new byte[rgb.Length], rgb, factor);

    /// <summary><c>ImageEnhance.Sharpness(img).enhance(factor)</c>: a blend with <c>ImageFilter.SMOOTH</c> (3×3 kernel
    /// 1 1 1 / 1 5 1 / 1 1 1 over 13 in float32, rounded; the border rows and columns are copied).</summary>
    public static void Sharpness(Span<byte> rgb, int height, int width, float factor)
    {
        CheckSize(rgb, height, width);
        var smooth = rgb.ToArray();
        if (height >= 3 && width >= 3)
        {
            // Pillow divides the kernel by its scale in float32 and starts each sum at offset + 0.5 (the rounding).
            float side = 1f / 13f, centre = 5f / 13f;
            int row = width * 3;
            for (int y = 1; y < height - 1; y++)
                for (int x = 1; x < width - 1; x++)
                    for (int c = 0; c < 3; c++)
                    {
                        int at = y * row + x * 3 + c;
                        float ss = 0.5f;
                        ss += rgb[at + row - 3] * side + rgb[at + row] * side + rgb[at + row + 3] * side;
                        ss += rgb[at - 3] * side + rgb[at] * centre + rgb[at + 3] * side;
                        ss += rgb[at - row - 3] * side + rgb[at - row] * side + rgb[at - row + 3] * side;
                        smooth[at] = ClipToByte(ss);
                    }
        }
        Blend(smooth, rgb, factor);
    }

    /// <summary>
    /// <c>img.rotate(degrees, resample=BICUBIC, fillcolor=fill)</c>: counter-clockwise about the image centre, same size,
    /// uncovered pixels <paramref name="fill"/>. Pillow's matrix (cos and sin rounded to 15 decimals), then
    /// <see cref="Affine"/>. (Pillow transposes at exact multiples of 90°; the affine path gives the same bytes there.)
    /// </summary>
    public static void Rotate(Span<byte> rgb, int height, int width, double degrees, ReadOnlySpan<byte> fill)
    {
        double angle = degrees % 360.0;
        if (angle < 0) angle += 360.0; // Python's float modulo takes the divisor's sign
        if (angle == 0) return;
        double radians = -(angle * (Math.PI / 180.0));
        double cos = RoundTo15Decimals(Math.Cos(radians)), sin = RoundTo15Decimals(Math.Sin(radians));
        double cx = width / 2.0, cy = height / 2.0;
        Span<double> m = [cos, sin, 0.0, RoundTo15Decimals(-Math.Sin(radians)), cos, 0.0];
        m[2] = m[0] * -cx + m[1] * -cy + 0.0 + cx;
        m[5] = m[3] * -cx + m[4] * -cy + 0.0 + cy;
        Affine(rgb, height, width, m, fill);
    }

    /// <summary>
    /// <c>img.transform(img.size, AFFINE, matrix, resample=BICUBIC, fillcolor=fill)</c>: output pixel (x, y) samples the
    /// input at (a·x′ + b·y′ + c, d·x′ + e·y′ + f) with x′ = x + ½, y′ = y + ½; a point outside the input keeps
    /// <paramref name="fill"/>. Pillow's transform cubic (a = −1, not resize's −0.5), edge pixels repeated, each band
    /// truncated to a byte.
    /// </summary>
    /// <param name="rgb">[height, width, 3], replaced by the result.</param>
    /// <param name="height">Rows.</param>
    /// <param name="width">Columns.</param>
    /// <param name="matrix">(a, b, c, d, e, f).</param>
    /// <param name="fill">The RGB fill colour.</param>
    public static void Affine(Span<byte> rgb, int height, int width, ReadOnlySpan<double> matrix, ReadOnlySpan<byte> fill)
    {
        CheckSize(rgb, height, width);
        if (matrix.Length != 6) throw new ArgumentException($"an affine matrix has 6 entries, not {matrix.Length}", nameof(matrix));
        if (fill.Length != 3) throw new ArgumentException($"the fill colour has 3 bands, not {fill.Length}", nameof(fill));
        var source = rgb.ToArray();
        double a = matrix[0], b = matrix[1], c = matrix[2], d = matrix[3], e = matrix[4], f = matrix[5];
        Span<int> rows = stackalloc int[4], columns = stackalloc int[4];
        Span<double> v = stackalloc double[4];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                var pixel = rgb.Slice((y * width + x) * 3, 3);
                double xin = a * (x + 0.5) + b * (y + 0.5) + c, yin = d * (x + 0.5) + e * (y + 0.5) + f;
                if (xin < 0.0 || xin >= width || yin < 0.0 || yin >= height) { fill.CopyTo(pixel); continue; }
                xin -= 0.5;
                yin -= 0.5;
                int x0 = (int)Math.Floor(xin), y0 = (int)Math.Floor(yin);
                double dx = xin - x0, dy = yin - y0;
                for (int k = 0; k < 4; k++)
                {
                    columns[k] = Math.Clamp(x0 - 1 + k, 0, width - 1) * 3;
                    rows[k] = Math.Clamp(y0 - 1 + k, 0, height - 1) * width * 3;
                }
                for (int band = 0; band < 3; band++)
                {
                    for (int k = 0; k < 4; k++)
                    {
                        int at = rows[k] + band;
                        v[k] = Cubic(source[at + columns[0]], source[at + columns[1]], source[at + columns[2]], source[at + columns[3]], dx);
                    }
                    double value = Cubic(v[0], v[1], v[2], v[3], dy);
                    pixel[band] = value <= 0.0 ? (byte)0 : value >= 255.0 ? (byte)255 : (byte)value;
                }
            }
    }

    // Pillow's transform cubic through v1..v4 at d ∈ [0, 1) between v2 and v3, in its operation order.
    static double Cubic(double v1, double v2, double v3, double v4, double d)
    {
        double p1 = v2, p2 = -v1 + v3, p3 = 2 * (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4;
        return p1 + d * (p2 + d * (p3 + d * p4));
    }

    /// <summary>Python's round(v, 15): the double nearest to v's correctly rounded 15-decimal form.</summary>
    static double RoundTo15Decimals(double v) =>
        double.Parse(v.ToString("F15", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

    // Image.blend(degenerate, image, factor) in float32: degenerate + factor·(image − degenerate), clipped and truncated.
    static void Blend(ReadOnlySpan<byte> degenerate, Span<byte> image, float factor)
    {
        for (int i = 0; i < image.Length; i++)
            image[i] = ClipToByte(degenerate[i] + factor * (image[i] - degenerate[i]));
    }

    static byte ClipToByte(float v) => v <= 0f ? (byte)0 : v >= 255f ? (byte)255 : (byte)v;

    static byte Luma(ReadOnlySpan<byte> rgb, int p) => (byte)((rgb[p] * 19595 + rgb[p + 1] * 38470 + rgb[p + 2] * 7471 + 0x8000) >> 16);

    static int[] Histogram(ReadOnlySpan<byte> rgb, int band)
    {
        var h = new int[256];
        for (int p = band; p < rgb.Length; p += 3) h[rgb[p]]++;
        return h;
    }

    static void LookupPerBand(Span<byte> rgb, byte[][] tables)
    {
        for (int p = 0; p < rgb.Length; p += 3)
            for (int band = 0; band < 3; band++) rgb[p + band] = tables[band][rgb[p + band]];
    }

    static byte[] Table(Func<int, int> map)
    {
        var table = new byte[256];
        for (int i = 0; i < 256; i++) table[i] = (byte)Math.Clamp(map(i), 0, 255);
        return table;
    }

    static void CheckSize(ReadOnlySpan<byte> rgb, int height, int width)
    {
        if (height <= 0 || width <= 0 || rgb.Length != (long)height * width * 3)
            throw new ArgumentException($"{rgb.Length} bytes is not an RGB image of {height}×{width}");
    }
}
