namespace Engine.Imaging;

/// <summary>
/// Baseline JPEG encoding of RGB images with 4:2:0 chroma, the same bytes TurboJPEG's <c>tjCompress2</c> writes with
/// default flags: JFIF header, the standard tables scaled by <c>jpeg_set_quality</c> (baseline-clamped), libjpeg's
/// fixed-point RGB → YCbCr (jccolor.c), 2×2 chroma averaging with alternating bias (jcsample.c), edge replication to
/// whole blocks and MCUs, the fast forward DCT below quality 96 and the accurate one from 96 (TurboJPEG's rule) with
/// libjpeg-turbo's reciprocal quantizer (jcdctmgr.c), and the standard Huffman tables (no optimisation).
/// </summary>
static class JpegEncoder
{
    // The example tables of ITU T.81 K.1 in natural order (jcparam.c).
    static readonly ushort[] LuminanceQuant =
    [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ];

    static readonly ushort[] ChrominanceQuant =
    [
        17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    ];

    // The standard Huffman tables of ITU T.81 K.3 (jstdhuff.c): 16 code counts, then the values.
    static readonly byte[] DcLuminance = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    static readonly byte[] DcChrominance = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

    static readonly byte[] AcLuminance =
    [
        0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d,
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91,
        0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a,
        0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53,
        0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79,
        0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
        0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9,
        0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2,
        0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];

    static readonly byte[] AcChrominance =
    [
        0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77,
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14,
        0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17,
        0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
        0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78,
        0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3,
        0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2,
        0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];

    // AAN scale factors × 2¹⁴ (jcdctmgr.c), for the fast DCT's divisors.
    static readonly short[] AanScales =
    [
        16384, 22725, 21407, 19266, 16384, 12873, 8867, 4520, 22725, 31521, 29692, 26722, 22725, 17855, 12299, 6270,
        21407, 29692, 27969, 25172, 21407, 16819, 11585, 5906, 19266, 26722, 25172, 22654, 19266, 15137, 10426, 5315,
        16384, 22725, 21407, 19266, 16384, 12873, 8867, 4520, 12873, 17855, 16819, 15137, 12873, 10114, 6967, 3552,
        8867, 12299, 11585, 10426, 8867, 6967, 4799, 2446, 4520, 6270, 5906, 5315, 4520, 3552, 2446, 1247,
    ];

    /// <summary>Encodes <paramref name="image"/> at <paramref name="quality"/> (1–100).</summary>
    public static byte[] Encode(RgbImage image, int quality)
    {
        int w = image.Width, h = image.Height;
        var luminanceQuant = ScaleQuant(LuminanceQuant, quality);
        var chrominanceQuant = ScaleQuant(ChrominanceQuant, quality);

        // Colour conversion into planes padded to whole MCUs (16×16) by repeating the last column and row.
        int mcusWide = (w + 15) / 16, mcusHigh = (h + 15) / 16, pw = mcusWide * 16, ph = mcusHigh * 16;
        var y = new byte[pw * ph];
        var cb = new byte[pw * ph];
        var cr = new byte[pw * ph];
        for (int row = 0; row < ph; row++)
        {
            int sy = Math.Min(row, h - 1);
            for (int col = 0; col < pw; col++)
            {
                int p = (sy * w + Math.Min(col, w - 1)) * 3, o = row * pw + col;
                (y[o], cb[o], cr[o]) = RgbToYcc(image.Rgb[p], image.Rgb[p + 1], image.Rgb[p + 2]);
            }
        }
        // 2×2 averaging with bias 1, 2, 1, 2, ... along each output row, over the image's row pairs (the last pair
        // repeating the last row); chroma rows below those repeat the last one, as libjpeg pads after downsampling.
        int cw = pw / 2, ch = ph / 2, realRows = (h + 1) / 2;
        var cbSmall = new byte[cw * ch];
        var crSmall = new byte[cw * ch];
        foreach (var (full, small) in new[] { (cb, cbSmall), (cr, crSmall) })
            for (int row = 0; row < ch; row++)
                for (int col = 0, bias = 1; col < cw; col++, bias ^= 3)
                {
                    int a = 2 * Math.Min(row, realRows - 1) * pw + 2 * col;
                    small[row * cw + col] = (byte)((full[a] + full[a + 1] + full[a + pw] + full[a + pw + 1] + bias) >> 2);
                }

        var output = new MemoryStream();
        WriteHeaders(output, w, h, luminanceQuant, chrominanceQuant);
        var bits = new BitWriter(output);
        var divisorsY = Divisors(luminanceQuant);
        var divisorsC = Divisors(chrominanceQuant);
        var dcY = new HuffmanCodes(DcLuminance);
        var acY = new HuffmanCodes(AcLuminance);
        var dcC = new HuffmanCodes(DcChrominance);
        var acC = new HuffmanCodes(AcChrominance);
        int predY = 0, predCb = 0, predCr = 0;
        // Blocks past the components' sample areas are libjpeg's dummy blocks: DC repeated, AC zero.
        // (Chroma has exactly one block per MCU, so only luma has them.)
        int yBlocksWide = (w + 7) / 8, yBlocksHigh = (h + 7) / 8;
        Span<short> block = stackalloc short[64];
        for (int my = 0; my < mcusHigh; my++)
            for (int mx = 0; mx < mcusWide; mx++)
            {
                short lastDc = 0;
                for (int by = 0; by < 2; by++)
                    for (int bx = 0; bx < 2; bx++)
                    {
                        int gx = mx * 2 + bx, gy = my * 2 + by;
                        if (gy >= yBlocksHigh || gx >= yBlocksWide) { block.Clear(); block[0] = lastDc; } // the previous block's DC
                        else ForwardBlock(y, pw, gx * 8, gy * 8, divisorsY, block);
                        lastDc = block[0];
                        EncodeBlock(bits, block, ref predY, dcY, acY);
                    }
                foreach (var (plane, divisors, which) in new[] { (cbSmall, divisorsC, 0), (crSmall, divisorsC, 1) })
                {
                    ForwardBlock(plane, cw, mx * 8, my * 8, divisors, block);
                    if (which == 0) EncodeBlock(bits, block, ref predCb, dcC, acC);
                    else EncodeBlock(bits, block, ref predCr, dcC, acC);
                }
            }
        bits.Flush();
        output.WriteByte(0xFF);
        output.WriteByte(0xD9);
        return output.ToArray();
    }

    // jpeg_set_quality: 1..49 → 5000/q %, 50..100 → 200 − 2q %; entries rounded, clamped to 1..255 (baseline).
    static ushort[] ScaleQuant(ushort[] table, int quality)
    {
        int scale = quality < 50 ? 5000 / quality : 200 - quality * 2;
        return [.. table.Select(v => (ushort)Math.Clamp((v * scale + 50) / 100, 1, 255))];
    }

    // jccolor.c: 16-bit fixed point; Cb and Cr round with 0.5 − ε so that they never exceed 255.
    static (byte, byte, byte) RgbToYcc(int r, int g, int b)
    {
        const int half = 1 << 15, offset = 128 << 16;
        static int Fix(double v) => (int)(v * 65536 + 0.5);
        int y = (Fix(0.29900) * r + Fix(0.58700) * g + Fix(0.11400) * b + half) >> 16;
        int cb = (-Fix(0.16874) * r - Fix(0.33126) * g + Fix(0.50000) * b + offset + half - 1) >> 16;
        int cr = (Fix(0.50000) * r - Fix(0.41869) * g - Fix(0.08131) * b + offset + half - 1) >> 16;
        return ((byte)y, (byte)cb, (byte)cr);
    }

    // libjpeg-turbo's quantizer: per coefficient a reciprocal, a correction (rounding) and a shift, from the fast DCT's
    // divisor quant · AAN scale / 2¹¹ (compute_reciprocal).
    static (int Reciprocal, int Correction, int Shift)[] Divisors(ushort[] quant)
    {
        var divisors = new (int, int, int)[64];
        for (int i = 0; i < 64; i++)
        {
            int divisor = (int)((quant[i] * AanScales[i] + (1 << 10)) >> 11);
            if (divisor == 1) { divisors[i] = (1, 0, 0); continue; }
            int b = 31 - System.Numerics.BitOperations.LeadingZeroCount((uint)divisor), r = 16 + b;
            long fq = (1L << r) / divisor, fr = (1L << r) % divisor;
            int c = divisor / 2;
            if (fr == 0) { fq >>= 1; r--; }
            else if (fr <= divisor / 2) c++;
            else fq++;
            divisors[i] = ((int)fq, c, r);
        }
        return divisors;
    }

    // Level shift, fast DCT, quantization of the 8×8 block at (x, y) of a plane; the result in zigzag order.
    static void ForwardBlock(byte[] plane, int stride, int x, int y, (int Reciprocal, int Correction, int Shift)[] divisors, Span<short> zigzag)
    {
        Span<short> data = stackalloc short[64];
        for (int row = 0; row < 8; row++)
            for (int col = 0; col < 8; col++) data[row * 8 + col] = (short)(plane[(y + row) * stride + x + col] - 128);
        JpegDct.ForwardIfast(data);
        for (int k = 0; k < 64; k++)
        {
            int natural = JpegDecoder.NaturalOrder[k];
            int temp = data[natural];
            var (reciprocal, correction, shift) = divisors[natural];
            int magnitude = shift == 0 ? Math.Abs(temp) : (int)(((uint)((ushort)Math.Abs(temp) + correction) * (uint)reciprocal) >> shift);
            zigzag[k] = (short)(temp < 0 ? -magnitude : magnitude);
        }
    }

    static void EncodeBlock(BitWriter bits, ReadOnlySpan<short> zigzag, ref int pred, HuffmanCodes dc, HuffmanCodes ac)
    {
        int diff = zigzag[0] - pred;
        pred = zigzag[0];
        bits.WriteValue(dc, 0, diff);
        int run = 0;
        for (int k = 1; k < 64; k++)
        {
            int v = zigzag[k];
            if (v == 0) { run++; continue; }
            for (; run > 15; run -= 16) bits.Write(ac.Code[0xF0], ac.Length[0xF0]);
            bits.WriteValue(ac, run, v);
            run = 0;
        }
        if (run > 0) bits.Write(ac.Code[0], ac.Length[0]);
    }

    sealed class HuffmanCodes
    {
        public readonly int[] Code = new int[256], Length = new int[256];
        public readonly byte[] Spec;

        public HuffmanCodes(byte[] spec)
        {
            Spec = spec;
            int code = 0, k = 16;
            for (int length = 1; length <= 16; length++, code <<= 1)
                for (int i = 0; i < spec[length - 1]; i++, code++, k++) (Code[spec[k]], Length[spec[k]]) = (code, length);
        }
    }

    sealed class BitWriter(Stream output)
    {
        uint _buffer;
        int _count;

        public void Write(int code, int length)
        {
            for (int i = length - 1; i >= 0; i--)
            {
                _buffer = (_buffer << 1) | (uint)((code >> i) & 1);
                if (++_count == 8)
                {
                    output.WriteByte((byte)_buffer);
                    if ((byte)_buffer == 0xFF) output.WriteByte(0); // byte stuffing
                    (_buffer, _count) = (0, 0);
                }
            }
        }

        // The Huffman code of (run, size of v), then v's size low bits (one's complement for negatives).
        public void WriteValue(HuffmanCodes table, int run, int v)
        {
            int magnitude = Math.Abs(v), size = magnitude == 0 ? 0 : 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)magnitude);
            int symbol = run << 4 | size;
            Write(table.Code[symbol], table.Length[symbol]);
            if (size > 0) Write(v < 0 ? v - 1 : v, size);
        }

        public void Flush() => Write(0x7F, (8 - _count) % 8); // pad the last byte with 1-bits
    }

    static void WriteHeaders(Stream o, int w, int h, ushort[] luminanceQuant, ushort[] chrominanceQuant)
    {
        void Marker(int marker, ReadOnlySpan<byte> body)
        {
            o.WriteByte(0xFF);
            o.WriteByte((byte)marker);
            o.WriteByte((byte)((body.Length + 2) >> 8));
            o.WriteByte((byte)(body.Length + 2));
            o.Write(body);
        }
        o.WriteByte(0xFF);
        o.WriteByte(0xD8);
        Marker(0xE0, [(byte)'J', (byte)'F', (byte)'I', (byte)'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]); // JFIF 1.01, no units, 1:1
        foreach (var (index, table) in new[] { (0, luminanceQuant), (1, chrominanceQuant) })
            Marker(0xDB, [(byte)index, .. JpegDecoder.NaturalOrder.Select(n => (byte)table[n])]);
        Marker(0xC0, [8, (byte)(h >> 8), (byte)h, (byte)(w >> 8), (byte)w, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        foreach (var (cls, spec) in new[] { (0x00, DcLuminance), (0x10, AcLuminance), (0x01, DcChrominance), (0x11, AcChrominance) })
            Marker(0xC4, [(byte)cls, .. spec]);
        Marker(0xDA, [3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
    }
}
