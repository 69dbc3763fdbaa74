namespace Engine.Imaging;

/// <summary>
/// libjpeg's 8×8 DCTs in its exact integer arithmetic: the accurate inverse (jidctint.c, the decoder's default, 13-bit
/// constants, 2 extra bits between passes, its range-limit table) and the fast forward (jfdctfst.c, AAN with 8-bit
/// constants and truncating multiplies, what TurboJPEG encodes with below quality 96). Blocks are 64 values in
/// natural (row-major) order.
/// </summary>
static class JpegDct
{
    // jidctint.c constants: FIX(x) = round(x · 2¹³).
    const int ConstBits = 13, Pass1Bits = 2;
    const long Fix0298631336 = 2446, Fix0390180644 = 3196, Fix0541196100 = 4433, Fix0765366865 = 6270, Fix0899976223 = 7373,
        Fix1175875602 = 9633, Fix1501321110 = 12299, Fix1847759065 = 15137, Fix1961570560 = 16069, Fix2053119869 = 16819,
        Fix2562915447 = 20995, Fix3072711026 = 25172;

    // The post-IDCT range limit (jdmaster.c): index (v & 1023) for an IDCT output v centred on 0: v + 128 clamped to
    // [0, 255] for v in [−512, 511]; beyond that the index wraps, as libjpeg's table does on damaged data.
    static readonly byte[] RangeLimit = BuildRangeLimit();

    static byte[] BuildRangeLimit()
    {
        var table = new byte[1024];
        for (int i = 0; i < 1024; i++) table[i] = (byte)(i < 128 ? i + 128 : i < 512 ? 255 : i < 896 ? 0 : i - 896);
        return table;
    }

    static long Descale(long x, int n) => (x + (1L << (n - 1))) >> n;

    /// <summary>jpeg_idct_islow: dequantizes <paramref name="coef"/> by <paramref name="quant"/> and writes 8×8 samples
    /// to <paramref name="output"/> (row stride <paramref name="stride"/>); <paramref name="work"/> holds 64 ints.</summary>
    public static void Islow(ReadOnlySpan<short> coef, ReadOnlySpan<short> quant, Span<int> work, Span<byte> output, int stride)
    {
        // Pass 1: columns, into work (scaled up by 2^Pass1Bits).
        for (int col = 0; col < 8; col++)
        {
            if (coef[8 + col] == 0 && coef[16 + col] == 0 && coef[24 + col] == 0 && coef[32 + col] == 0 &&
                coef[40 + col] == 0 && coef[48 + col] == 0 && coef[56 + col] == 0)
            {
                int dc = coef[col] * quant[col] << Pass1Bits;
                for (int row = 0; row < 8; row++) work[row * 8 + col] = dc;
                continue;
            }
            long z2 = coef[16 + col] * quant[16 + col], z3 = coef[48 + col] * quant[48 + col];
            long z1 = (z2 + z3) * Fix0541196100;
            long tmp2 = z1 + z3 * -Fix1847759065, tmp3 = z1 + z2 * Fix0765366865;
            z2 = coef[col] * quant[col];
            z3 = coef[32 + col] * quant[32 + col];
            long tmp0 = (z2 + z3) << ConstBits, tmp1 = (z2 - z3) << ConstBits;
            long tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
            (tmp0, tmp1, tmp2, tmp3) = (coef[56 + col] * quant[56 + col], coef[40 + col] * quant[40 + col], coef[24 + col] * quant[24 + col], coef[8 + col] * quant[8 + col]);
            Odd(ref tmp0, ref tmp1, ref tmp2, ref tmp3);
            const int shift = ConstBits - Pass1Bits;
            work[col] = (int)Descale(tmp10 + tmp3, shift);
            work[56 + col] = (int)Descale(tmp10 - tmp3, shift);
            work[8 + col] = (int)Descale(tmp11 + tmp2, shift);
            work[48 + col] = (int)Descale(tmp11 - tmp2, shift);
            work[16 + col] = (int)Descale(tmp12 + tmp1, shift);
            work[40 + col] = (int)Descale(tmp12 - tmp1, shift);
            work[24 + col] = (int)Descale(tmp13 + tmp0, shift);
            work[32 + col] = (int)Descale(tmp13 - tmp0, shift);
        }
        // Pass 2: rows, to samples (removing the 2^Pass1Bits and the 8 of the DCT's scale).
        for (int row = 0; row < 8; row++)
        {
            var w = work.Slice(row * 8, 8);
            var outRow = output.Slice(row * stride, 8);
            if (w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0 && w[5] == 0 && w[6] == 0 && w[7] == 0)
            {
                outRow.Fill(RangeLimit[(int)Descale(w[0], Pass1Bits + 3) & 1023]);
                continue;
            }
            long z2 = w[2], z3 = w[6];
            long z1 = (z2 + z3) * Fix0541196100;
            long tmp2 = z1 + z3 * -Fix1847759065, tmp3 = z1 + z2 * Fix0765366865;
            long tmp0 = ((long)w[0] + w[4]) << ConstBits, tmp1 = ((long)w[0] - w[4]) << ConstBits;
            long tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
            (tmp0, tmp1, tmp2, tmp3) = (w[7], w[5], w[3], w[1]);
            Odd(ref tmp0, ref tmp1, ref tmp2, ref tmp3);
            const int shift = ConstBits + Pass1Bits + 3;
            outRow[0] = RangeLimit[(int)Descale(tmp10 + tmp3, shift) & 1023];
            outRow[7] = RangeLimit[(int)Descale(tmp10 - tmp3, shift) & 1023];
            outRow[1] = RangeLimit[(int)Descale(tmp11 + tmp2, shift) & 1023];
            outRow[6] = RangeLimit[(int)Descale(tmp11 - tmp2, shift) & 1023];
            outRow[2] = RangeLimit[(int)Descale(tmp12 + tmp1, shift) & 1023];
            outRow[5] = RangeLimit[(int)Descale(tmp12 - tmp1, shift) & 1023];
            outRow[3] = RangeLimit[(int)Descale(tmp13 + tmp0, shift) & 1023];
            outRow[4] = RangeLimit[(int)Descale(tmp13 - tmp0, shift) & 1023];
        }
    }

    // The odd part of both passes: inputs tmp0..3 = x7, x5, x3, x1; outputs the four odd terms.
    static void Odd(ref long tmp0, ref long tmp1, ref long tmp2, ref long tmp3)
    {
        long z1 = tmp0 + tmp3, z2 = tmp1 + tmp2, z3 = tmp0 + tmp2, z4 = tmp1 + tmp3;
        long z5 = (z3 + z4) * Fix1175875602;
        tmp0 *= Fix0298631336;
        tmp1 *= Fix2053119869;
        tmp2 *= Fix3072711026;
        tmp3 *= Fix1501321110;
        z1 *= -Fix0899976223;
        z2 *= -Fix2562915447;
        z3 = z3 * -Fix1961570560 + z5;
        z4 = z4 * -Fix0390180644 + z5;
        tmp0 += z1 + z3;
        tmp1 += z2 + z4;
        tmp2 += z2 + z3;
        tmp3 += z1 + z4;
    }

    // jfdctfst.c: 8-bit constants, multiplies truncated (no rounding), 16-bit elements as TurboJPEG's SIMD build keeps them.
    const int FastBits = 8;
    const int Fix0382683433 = 98, Fast0541196100 = 139, Fix0707106781 = 181, Fix1306562965 = 334;

    static short Mul(int v, int c) => (short)((v * c) >> FastBits);

    /// <summary>jpeg_fdct_ifast in place on level-shifted samples (−128..127); the result carries AAN's scale factors,
    /// which the quantizer's divisors include.</summary>
    public static void ForwardIfast(Span<short> data)
    {
        for (int pass = 0; pass < 2; pass++)
        {
            int step = pass == 0 ? 1 : 8, next = pass == 0 ? 8 : 1; // rows first, then columns
            for (int line = 0; line < 8; line++)
            {
                int o = line * next;
                short d0 = data[o], d1 = data[o + step], d2 = data[o + 2 * step], d3 = data[o + 3 * step],
                    d4 = data[o + 4 * step], d5 = data[o + 5 * step], d6 = data[o + 6 * step], d7 = data[o + 7 * step];
                short tmp0 = (short)(d0 + d7), tmp7 = (short)(d0 - d7), tmp1 = (short)(d1 + d6), tmp6 = (short)(d1 - d6),
                    tmp2 = (short)(d2 + d5), tmp5 = (short)(d2 - d5), tmp3 = (short)(d3 + d4), tmp4 = (short)(d3 - d4);
                // Even part.
                short tmp10 = (short)(tmp0 + tmp3), tmp13 = (short)(tmp0 - tmp3), tmp11 = (short)(tmp1 + tmp2), tmp12 = (short)(tmp1 - tmp2);
                data[o] = (short)(tmp10 + tmp11);
                data[o + 4 * step] = (short)(tmp10 - tmp11);
                short z1 = Mul(tmp12 + tmp13, Fix0707106781);
                data[o + 2 * step] = (short)(tmp13 + z1);
                data[o + 6 * step] = (short)(tmp13 - z1);
                // Odd part.
                tmp10 = (short)(tmp4 + tmp5);
                tmp11 = (short)(tmp5 + tmp6);
                tmp12 = (short)(tmp6 + tmp7);
                short z5 = Mul(tmp10 - tmp12, Fix0382683433);
                short z2 = (short)(Mul(tmp10, Fast0541196100) + z5), z4 = (short)(Mul(tmp12, Fix1306562965) + z5), z3 = Mul(tmp11, Fix0707106781);
                short z11 = (short)(tmp7 + z3), z13 = (short)(tmp7 - z3);
                data[o + 5 * step] = (short)(z13 + z2);
                data[o + 3 * step] = (short)(z13 - z2);
                data[o + step] = (short)(z11 + z4);
                data[o + 7 * step] = (short)(z11 - z4);
            }
        }
    }
}
