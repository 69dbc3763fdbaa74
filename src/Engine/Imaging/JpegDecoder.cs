using Engine.IO;

namespace Engine.Imaging;

/// <summary>
/// Baseline and progressive Huffman JPEG decoding (8-bit, greyscale or three components, any sampling factors, restart
/// intervals), computing what libjpeg-turbo computes with its defaults: the accurate integer IDCT (jidctint.c) with its
/// range-limit table, fancy upsampling (jdsample.c, 4:2:0, 4:2:2 and 4:4:0; replication otherwise) and the fixed-point
/// YCbCr → RGB tables (jdcolor.c). Pillow decodes through libjpeg-turbo, so the pixels equal Pillow's. Anything the
/// decoder does not expect — a bad Huffman code, a missing restart marker, data that ends early — is an error, never
/// padding: a damaged training image is refused.
/// </summary>
static class JpegDecoder
{
    // Zigzag position → natural (row-major) position in the 8×8 block.
    internal static readonly byte[] NaturalOrder =
    [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
        28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
        54, 47, 55, 62, 63,
    ];

    sealed class Component
    {
        public int Id, H, V, QuantTable, DcTable, AcTable, Pred;
        public int Width, Height;           // samples of the component in the image (downsampled size)
        public int BlocksWide, BlocksHigh;  // blocks holding those samples
        public int GridWide, GridHigh;      // blocks covered by whole MCUs (interleaved scans)
        public short[] Coefficients = [];   // [GridHigh, GridWide, 64], natural order
    }

    sealed class Huffman
    {
        public readonly int[] MaxCode = new int[18];   // largest code of each length (−1: none)
        public readonly int[] ValueOffset = new int[17];
        public readonly byte[] Values = new byte[256];
        public readonly short[] Fast = new short[1 << FastBits]; // (length << 8 | value), 0 when longer than FastBits
        public const int FastBits = 9;
    }

    /// <summary>Decodes a whole JPEG file held in <paramref name="data"/>; <paramref name="source"/> names it in errors.</summary>
    public static RgbImage Decode(ReadOnlySpan<byte> data, string source) => new Decoder(data.ToArray(), source).Run();

    sealed class Decoder(byte[] data, string source)
    {
        readonly ushort[][] _quant = new ushort[4][];
        readonly Huffman?[] _dc = new Huffman?[4], _ac = new Huffman?[4];
        Component[] _components = [];
        int _width, _height, _maxH, _maxV, _restartInterval, _pos;
        bool _progressive, _frame, _adobe, _adobeTransform, _jfif;
        int _eobRun;

        // Entropy-coded segment reader: bits, the zero bits padded after a marker, and where the marker is.
        ulong _acc;
        int _bits, _padded;

        InvalidInputException Bad(string why) => new(source, $"corrupt or unsupported JPEG: {why}");

        public RgbImage Run()
        {
            if (data.Length < 4 || data[0] != 0xFF || data[1] != 0xD8) throw new InvalidInputException(source, "not a JPEG file (no start-of-image marker)");
            _pos = 2;
            bool scanned = false;
            while (true)
            {
                int marker = NextMarker();
                switch (marker)
                {
                    case 0xD9: // EOI
                        if (!scanned) throw Bad("no image data before the end-of-image marker");
                        return Output();
                    case 0xC0 or 0xC1 or 0xC2: ReadFrame(marker == 0xC2); break;
                    case 0xC3 or 0xC5 or 0xC6 or 0xC7 or 0xCB or 0xCD or 0xCE or 0xCF:
                        throw Bad($"lossless or hierarchical JPEG (marker 0x{marker:X2}) is not supported");
                    case 0xC9 or 0xCA: throw Bad("arithmetic-coded JPEG is not supported");
                    case 0xC4: ReadHuffmanTables(); break;
                    case 0xDB: ReadQuantTables(); break;
                    case 0xDD:
                        if (Length() != 4) throw Bad("DRI marker of the wrong length");
                        _restartInterval = data[_pos] << 8 | data[_pos + 1];
                        _pos += 2;
                        break;
                    case 0xDA: ReadScan(); scanned = true; break;
                    case 0xDC: throw Bad("DNL markers are not supported");
                    case 0xE0 or 0xEE: ReadApp(marker); break;
                    case >= 0xD0 and <= 0xD7: throw Bad($"restart marker RST{marker - 0xD0} outside a scan");
                    case 0xD8: throw Bad("a second start-of-image marker");
                    default:
                        if (marker is >= 0xE0 and <= 0xFE or 0x01) { Skip(); break; }
                        throw Bad($"unknown marker 0x{marker:X2} at byte {_pos - 2}");
                }
            }
        }

        int NextMarker()
        {
            if (_pos >= data.Length) throw Bad("the file ends before its end-of-image marker (truncated)");
            if (data[_pos] != 0xFF) throw Bad($"expected a marker at byte {_pos}, found 0x{data[_pos]:X2}");
            while (_pos < data.Length && data[_pos] == 0xFF) _pos++; // fill bytes
            if (_pos >= data.Length) throw Bad("the file ends inside a marker (truncated)");
            return data[_pos++];
        }

        // Reads a segment's length and checks it fits; leaves _pos at its first byte after the length.
        int Length()
        {
            if (_pos + 2 > data.Length) throw Bad("the file ends inside a marker segment (truncated)");
            int length = data[_pos] << 8 | data[_pos + 1];
            if (length < 2 || _pos + length > data.Length) throw Bad($"a marker segment of length {length} at byte {_pos} runs past the end of the file");
            _pos += 2;
            return length;
        }

        void Skip() => _pos += Length() - 2;

        void ReadApp(int marker)
        {
            int length = Length(), start = _pos;
            var body = data.AsSpan(start, length - 2);
            if (marker == 0xE0 && body.Length >= 5 && body[..5].SequenceEqual("JFIF\0"u8)) _jfif = true;
            if (marker == 0xEE && body.Length >= 12 && body[..5].SequenceEqual("Adobe"u8)) (_adobe, _adobeTransform) = (true, body[11] != 0);
            _pos = start + length - 2;
        }

        void ReadQuantTables()
        {
            int end = _pos + Length(); // _pos is read before Length() moves it past the length bytes
            while (_pos < end)
            {
                int pq = data[_pos] >> 4, tq = data[_pos] & 15;
                _pos++;
                if (tq > 3 || pq > 1) throw Bad($"quantization table {tq} of precision {pq}");
                int bytes = pq == 0 ? 64 : 128;
                if (_pos + bytes > end) throw Bad("a quantization table runs past its segment");
                var table = new ushort[64];
                for (int i = 0; i < 64; i++)
                    table[NaturalOrder[i]] = pq == 0 ? data[_pos + i] : (ushort)(data[_pos + 2 * i] << 8 | data[_pos + 2 * i + 1]);
                _quant[tq] = table;
                _pos += bytes;
            }
            if (_pos != end) throw Bad("a quantization segment's length does not match its tables");
        }

        void ReadHuffmanTables()
        {
            int end = _pos + Length(); // _pos is read before Length() moves it past the length bytes
            while (_pos < end)
            {
                if (_pos + 17 > end) throw Bad("a Huffman table runs past its segment");
                int tc = data[_pos] >> 4, th = data[_pos] & 15;
                if (tc > 1 || th > 3) throw Bad($"Huffman table class {tc} index {th}");
                var counts = data.AsSpan(_pos + 1, 16);
                int total = 0;
                foreach (byte c in counts) total += c;
                if (total > 256 || _pos + 17 + total > end) throw Bad($"a Huffman table of {total} codes");
                var table = new Huffman();
                data.AsSpan(_pos + 17, total).CopyTo(table.Values);
                int code = 0, k = 0;
                for (int length = 1; length <= 16; length++)
                {
                    table.ValueOffset[length] = k - code;
                    int n = counts[length - 1];
                    if (n > 0)
                    {
                        for (int i = 0; i < n; i++, k++, code++)
                            if (length <= Huffman.FastBits)
                            {
                                int shift = Huffman.FastBits - length;
                                for (int fill = 0; fill < 1 << shift; fill++) table.Fast[(code << shift) | fill] = (short)(length << 8 | table.Values[k]);
                            }
                        table.MaxCode[length] = code - 1;
                    }
                    else table.MaxCode[length] = -1;
                    if (code > 1 << length) throw Bad("a Huffman table with more codes than its lengths allow");
                    code <<= 1;
                }
                table.MaxCode[17] = int.MaxValue;
                (tc == 0 ? _dc : _ac)[th] = table;
                _pos += 17 + total;
            }
            if (_pos != end) throw Bad("a Huffman segment's length does not match its tables");
        }

        void ReadFrame(bool progressive)
        {
            if (_frame) throw Bad("a second frame header");
            int length = Length();
            if (length < 8) throw Bad("a frame header too short");
            int precision = data[_pos];
            _height = data[_pos + 1] << 8 | data[_pos + 2];
            _width = data[_pos + 3] << 8 | data[_pos + 4];
            int count = data[_pos + 5];
            if (precision != 8) throw Bad($"{precision}-bit samples are not supported (only 8-bit)");
            if (_width == 0 || _height == 0) throw Bad($"an image of {_width}×{_height} pixels (a height of 0 needs DNL, not supported)");
            if ((long)_width * _height > InputLimits.MaxImagePixels)
                throw new InvalidInputException(source, $"JPEG of {_width}×{_height} pixels is larger than {InputLimits.MaxImagePixels} pixels");
            if (count is not (1 or 3)) throw Bad(count == 4 ? "CMYK JPEG images are not supported (convert it to RGB)" : $"{count} components");
            if (length != 8 + 3 * count) throw Bad("a frame header of the wrong length");
            _components = new Component[count];
            for (int i = 0; i < count; i++)
            {
                int at = _pos + 6 + 3 * i;
                var c = new Component { Id = data[at], H = data[at + 1] >> 4, V = data[at + 1] & 15, QuantTable = data[at + 2] };
                if (c.H is < 1 or > 4 || c.V is < 1 or > 4 || c.QuantTable > 3) throw Bad($"component {c.Id}: sampling {c.H}×{c.V}, table {c.QuantTable}");
                _components[i] = c;
            }
            if (count == 1) _components[0].H = _components[0].V = 1; // a lone component is never subsampled (libjpeg's rule)
            _maxH = _components.Max(c => c.H);
            _maxV = _components.Max(c => c.V);
            int mcusWide = Ceil(_width, 8 * _maxH), mcusHigh = Ceil(_height, 8 * _maxV);
            foreach (var c in _components)
            {
                c.Width = Ceil(_width * c.H, _maxH);
                c.Height = Ceil(_height * c.V, _maxV);
                c.BlocksWide = Ceil(c.Width, 8);
                c.BlocksHigh = Ceil(c.Height, 8);
                c.GridWide = count == 1 ? c.BlocksWide : mcusWide * c.H;
                c.GridHigh = count == 1 ? c.BlocksHigh : mcusHigh * c.V;
                c.Coefficients = new short[(long)c.GridWide * c.GridHigh * 64];
            }
            _pos += length - 2;
            _progressive = progressive;
            _frame = true;
        }

        static int Ceil(int a, int b) => (a + b - 1) / b;

        void ReadScan()
        {
            if (!_frame) throw Bad("a scan before the frame header");
            int length = Length();
            int count = data[_pos];
            if (count is < 1 or > 4 || length != 6 + 2 * count) throw Bad("a scan header of the wrong length");
            var scan = new Component[count];
            for (int i = 0; i < count; i++)
            {
                int id = data[_pos + 1 + 2 * i], tables = data[_pos + 2 + 2 * i];
                var c = _components.FirstOrDefault(c => c.Id == id) ?? throw Bad($"a scan names component {id}, which the frame does not have");
                if (scan.Contains(c)) throw Bad($"a scan names component {id} twice");
                (c.DcTable, c.AcTable) = (tables >> 4, tables & 15);
                if (c.DcTable > 3 || c.AcTable > 3) throw Bad("a scan names a Huffman table above 3");
                scan[i] = c;
            }
            int at = _pos + 1 + 2 * count;
            int ss = data[at], se = data[at + 1], ah = data[at + 2] >> 4, al = data[at + 2] & 15;
            _pos += length - 2;
            if (_progressive)
            {
                if (ss > se || se > 63 || (ss == 0 && se != 0) || (ss > 0 && count != 1) || al > 13 || (ah != 0 && ah != al + 1))
                    throw Bad($"a progressive scan with Ss {ss}, Se {se}, Ah {ah}, Al {al} over {count} component(s)");
            }
            else if (ss != 0 || se != 63 || ah != 0 || al != 0) throw Bad("a baseline scan with spectral selection or successive approximation");
            foreach (var c in scan)
            {
                if (_quant[c.QuantTable] == null) throw Bad($"component {c.Id} uses quantization table {c.QuantTable}, never defined");
                if (ss == 0 && ah == 0 && _dc[c.DcTable] == null) throw Bad($"component {c.Id} uses DC Huffman table {c.DcTable}, never defined");
                if ((se > 0 || !_progressive) && _ac[c.AcTable] == null) throw Bad($"component {c.Id} uses AC Huffman table {c.AcTable}, never defined");
            }
            DecodeScan(scan, ss, se, ah, al);
        }

        void DecodeScan(Component[] scan, int ss, int se, int ah, int al)
        {
            foreach (var c in scan) c.Pred = 0;
            _eobRun = 0;
            (_acc, _bits, _padded) = (0, 0, 0);
            bool single = scan.Length == 1;
            int mcusWide = single ? scan[0].BlocksWide : Ceil(_width, 8 * _maxH);
            int mcusHigh = single ? scan[0].BlocksHigh : Ceil(_height, 8 * _maxV);
            int total = mcusWide * mcusHigh, restartsSeen = 0;
            for (int mcu = 0; mcu < total; mcu++)
            {
                if (_restartInterval > 0 && mcu > 0 && mcu % _restartInterval == 0)
                {
                    ReadRestart(restartsSeen++ & 7);
                    foreach (var c in scan) c.Pred = 0;
                    _eobRun = 0;
                }
                int mx = mcu % mcusWide, my = mcu / mcusWide;
                if (single)
                    DecodeBlock(scan[0], my * scan[0].GridWide + mx, ss, se, ah, al);
                else
                    foreach (var c in scan)
                        for (int by = 0; by < c.V; by++)
                            for (int bx = 0; bx < c.H; bx++)
                                DecodeBlock(c, (my * c.V + by) * c.GridWide + mx * c.H + bx, ss, se, ah, al);
            }
            SkipToMarker();
        }

        // After a scan or a restart interval the buffered bits are dropped (a sound file has only the last byte's padding
        // there) and reading resumes at the next marker; stray bytes before it are skipped, as libjpeg does (it warns).
        void SkipToMarker()
        {
            (_acc, _bits, _padded) = (0, 0, 0);
            while (_pos < data.Length && !(data[_pos] == 0xFF && _pos + 1 < data.Length && data[_pos + 1] is not (0x00 or 0xFF))) _pos++;
        }

        void ReadRestart(int expected)
        {
            SkipToMarker();
            if (_pos + 1 >= data.Length || data[_pos + 1] != 0xD0 + expected)
                throw Bad($"restart marker RST{expected} missing at byte {_pos}");
            _pos += 2;
        }

        void DecodeBlock(Component c, int block, int ss, int se, int ah, int al)
        {
            var coef = c.Coefficients.AsSpan(block * 64, 64);
            if (!_progressive)
            {
                int s = Decode(_dc[c.DcTable]!);
                c.Pred += s == 0 ? 0 : Extend(Bits(s), s);
                coef[0] = (short)c.Pred;
                var ac = _ac[c.AcTable]!;
                for (int k = 1; k < 64; k++)
                {
                    int rs = Decode(ac), r = rs >> 4;
                    s = rs & 15;
                    if (s == 0)
                    {
                        if (r != 15) break;
                        k += 15;
                        continue;
                    }
                    k += r;
                    if (k > 63) throw Bad("an AC run past the end of a block");
                    coef[NaturalOrder[k]] = (short)Extend(Bits(s), s);
                }
                return;
            }
            if (ss == 0)
            {
                if (ah == 0)
                {
                    int s = Decode(_dc[c.DcTable]!);
                    c.Pred += s == 0 ? 0 : Extend(Bits(s), s);
                    coef[0] = (short)(c.Pred << al);
                }
                else if (Bits(1) != 0) coef[0] |= (short)(1 << al);
                return;
            }
            if (ah == 0) DecodeAcFirst(coef, _ac[c.AcTable]!, ss, se, al);
            else DecodeAcRefine(coef, _ac[c.AcTable]!, ss, se, al);
        }

        void DecodeAcFirst(Span<short> coef, Huffman table, int ss, int se, int al)
        {
            if (_eobRun > 0) { _eobRun--; return; }
            for (int k = ss; k <= se; k++)
            {
                int rs = Decode(table), r = rs >> 4, s = rs & 15;
                if (s == 0)
                {
                    if (r < 15)
                    {
                        _eobRun = (1 << r) - 1;
                        if (r > 0) _eobRun += Bits(r);
                        return;
                    }
                    k += 15;
                    continue;
                }
                k += r;
                if (k > se) throw Bad("an AC run past the end of the band");
                coef[NaturalOrder[k]] = (short)(Extend(Bits(s), s) * (1 << al));
            }
        }

        // Successive approximation of AC coefficients (ITU T.81 G.1.2.3): new ±1 coefficients at zero positions, a
        // correction bit for every coefficient already non-zero that the run passes.
        void DecodeAcRefine(Span<short> coef, Huffman table, int ss, int se, int al)
        {
            int p1 = 1 << al, m1 = -1 << al, k = ss;
            if (_eobRun == 0)
            {
                for (; k <= se; k++)
                {
                    int rs = Decode(table), r = rs >> 4, s = rs & 15, value = 0;
                    if (s != 0)
                    {
                        if (s != 1) throw Bad("a refinement coefficient other than ±1");
                        value = Bits(1) != 0 ? p1 : m1;
                    }
                    else if (r != 15)
                    {
                        _eobRun = 1 << r;
                        if (r > 0) _eobRun += Bits(r);
                        break;
                    }
                    for (; k <= se; k++)
                    {
                        ref short c = ref coef[NaturalOrder[k]];
                        if (c != 0) Refine(ref c, p1, m1);
                        else if (--r < 0) break;
                    }
                    if (value != 0)
                    {
                        if (k > se) throw Bad("a refinement run past the end of the band");
                        coef[NaturalOrder[k]] = (short)value;
                    }
                }
            }
            if (_eobRun > 0)
            {
                for (; k <= se; k++)
                {
                    ref short c = ref coef[NaturalOrder[k]];
                    if (c != 0) Refine(ref c, p1, m1);
                }
                _eobRun--;
            }
        }

        void Refine(ref short c, int p1, int m1)
        {
            if (Bits(1) != 0 && (c & p1) == 0) c = (short)(c >= 0 ? c + p1 : c + m1);
        }

        static int Extend(int v, int s) => v < 1 << (s - 1) ? v - (1 << s) + 1 : v;

        // Keeps at least 25 bits in the accumulator; past a marker the bits are zeros, counted in _padded.
        void Fill()
        {
            while (_bits <= 56)
            {
                int b = 0;
                if (_padded == 0 && _pos < data.Length)
                {
                    b = data[_pos];
                    if (b == 0xFF)
                    {
                        int next = _pos + 1 < data.Length ? data[_pos + 1] : -1;
                        if (next == 0x00) _pos += 2;
                        else { b = 0; _padded += 8; } // a marker (or the end): stay before it
                    }
                    else _pos++;
                }
                else _padded += 8;
                _acc |= (ulong)b << (56 - _bits);
                _bits += 8;
            }
        }

        void Consume(int n)
        {
            if (_bits - n < _padded) throw Bad("the entropy-coded data ends early (truncated or damaged)");
            _acc <<= n;
            _bits -= n;
        }

        int Bits(int n)
        {
            if (_bits < n) Fill();
            int v = (int)(_acc >> (64 - n));
            Consume(n);
            return v;
        }

        int Decode(Huffman table)
        {
            if (_bits < 16) Fill();
            int fast = table.Fast[(int)(_acc >> (64 - Huffman.FastBits))];
            if (fast != 0)
            {
                Consume(fast >> 8);
                return fast & 0xFF;
            }
            int code = (int)(_acc >> (64 - Huffman.FastBits)), length = Huffman.FastBits;
            while (code > table.MaxCode[length])
            {
                length++;
                if (length > 16) throw Bad("an invalid Huffman code");
                code = (int)(_acc >> (64 - length));
            }
            Consume(length);
            return table.Values[(table.ValueOffset[length] + code) & 0xFF];
        }

        RgbImage Output()
        {
            // The components' samples, then each upsampled to the image size, then the colour conversion.
            var planes = new byte[_components.Length][];
            for (int i = 0; i < _components.Length; i++) planes[i] = Upsample(_components[i], Idct(_components[i]));
            var rgb = new byte[(long)_width * _height * 3];
            int pixels = _width * _height;
            if (planes.Length == 1)
                for (int p = 0; p < pixels; p++) rgb[3 * p] = rgb[3 * p + 1] = rgb[3 * p + 2] = planes[0][p];
            else if (IsRgb())
                for (int p = 0; p < pixels; p++) (rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2]) = (planes[0][p], planes[1][p], planes[2][p]);
            else
                YccToRgb(planes[0], planes[1], planes[2], rgb);
            return new RgbImage(_width, _height, rgb);
        }

        // libjpeg-turbo's colour-space guess for three components (jdapimin.c): JFIF means YCbCr; an Adobe marker says;
        // else component ids 'R','G','B' mean RGB.
        bool IsRgb() => !_jfif && (_adobe ? !_adobeTransform : _components[0].Id == 'R' && _components[1].Id == 'G' && _components[2].Id == 'B');

        // The accurate integer IDCT of every block that holds samples, into a plane of BlocksWide·8 × BlocksHigh·8.
        byte[] Idct(Component c)
        {
            int stride = c.BlocksWide * 8;
            var plane = new byte[(long)stride * c.BlocksHigh * 8];
            var quant = _quant[c.QuantTable];
            Span<short> q = stackalloc short[64];
            for (int i = 0; i < 64; i++) q[i] = (short)quant[i]; // ISLOW_MULT_TYPE is a short
            Span<int> work = stackalloc int[64];
            for (int by = 0; by < c.BlocksHigh; by++)
                for (int bx = 0; bx < c.BlocksWide; bx++)
                    JpegDct.Islow(c.Coefficients.AsSpan((by * c.GridWide + bx) * 64, 64), q, work, plane.AsSpan(by * 8 * stride + bx * 8), stride);
            return plane;
        }

        // The component's samples brought to the image size as libjpeg-turbo's upsampler does (jdsample.c).
        byte[] Upsample(Component c, byte[] plane)
        {
            int stride = c.BlocksWide * 8, w = c.Width, h = c.Height;
            var output = new byte[(long)_width * _height];
            int hx = _maxH / c.H, vx = _maxV / c.V;
            if (_maxH % c.H != 0 || _maxV % c.V != 0) throw Bad($"component {c.Id}'s sampling {c.H}×{c.V} does not divide {_maxH}×{_maxV}");
            if (hx == 1 && vx == 1)
            {
                for (int y = 0; y < _height; y++) plane.AsSpan(y * stride, _width).CopyTo(output.AsSpan(y * _width));
                return output;
            }
            var row = new byte[w * hx + 2];
            var sums = new int[w];
            for (int y = 0; y < _height; y++)
            {
                int inRow = y / vx;
                var samples = plane.AsSpan(inRow * stride, w);
                if (vx == 2 && (hx == 1 || (hx == 2 && w > 2)))
                {
                    // Fancy vertical: 3/4 of the nearer input row and 1/4 of the next nearest (the edge row repeats).
                    bool above = y % 2 == 0;
                    int near = Math.Clamp(above ? inRow - 1 : inRow + 1, 0, h - 1);
                    var other = plane.AsSpan(near * stride, w);
                    for (int x = 0; x < w; x++) sums[x] = samples[x] * 3 + other[x];
                    if (hx == 1)
                    {
                        int bias = above ? 1 : 2;
                        for (int x = 0; x < w; x++) row[x] = (byte)((sums[x] + bias) >> 2);
                    }
                    else
                    {
                        row[0] = (byte)((sums[0] * 4 + 8) >> 4);
                        row[1] = (byte)((sums[0] * 3 + sums[1] + 7) >> 4);
                        for (int x = 1; x < w - 1; x++)
                        {
                            row[2 * x] = (byte)((sums[x] * 3 + sums[x - 1] + 8) >> 4);
                            row[2 * x + 1] = (byte)((sums[x] * 3 + sums[x + 1] + 7) >> 4);
                        }
                        row[2 * w - 2] = (byte)((sums[w - 1] * 3 + sums[w - 2] + 8) >> 4);
                        row[2 * w - 1] = (byte)((sums[w - 1] * 4 + 7) >> 4);
                    }
                }
                else if (hx == 2 && vx == 1 && w > 2)
                {
                    // Fancy horizontal: 3/4 of the nearer sample and 1/4 of the next; the edge samples are kept.
                    row[0] = samples[0];
                    row[1] = (byte)((samples[0] * 3 + samples[1] + 2) >> 2);
                    for (int x = 1; x < w - 1; x++)
                    {
                        row[2 * x] = (byte)((samples[x] * 3 + samples[x - 1] + 1) >> 2);
                        row[2 * x + 1] = (byte)((samples[x] * 3 + samples[x + 1] + 2) >> 2);
                    }
                    row[2 * w - 2] = (byte)((samples[w - 1] * 3 + samples[w - 2] + 1) >> 2);
                    row[2 * w - 1] = samples[w - 1];
                }
                else
                    for (int x = 0; x < w * hx; x++) row[x] = samples[x / hx]; // replication (libjpeg's int_upsample)
                row.AsSpan(0, _width).CopyTo(output.AsSpan(y * _width));
            }
            return output;
        }
    }

    // jdcolor.c's tables: R = Y + 1.402·Cr, G = Y − 0.34414·Cb − 0.71414·Cr, B = Y + 1.772·Cb in 16-bit fixed point.
    static readonly int[] CrR = new int[256], CbB = new int[256];
    static readonly long[] CrG = new long[256], CbG = new long[256];

    static JpegDecoder()
    {
        static long Fix(double v) => (long)(v * 65536 + 0.5);
        for (int i = 0, x = -128; i < 256; i++, x++)
        {
            CrR[i] = (int)((Fix(1.40200) * x + 32768) >> 16);
            CbB[i] = (int)((Fix(1.77200) * x + 32768) >> 16);
            CrG[i] = -Fix(0.71414) * x;
            CbG[i] = -Fix(0.34414) * x + 32768;
        }
    }

    static void YccToRgb(byte[] y, byte[] cb, byte[] cr, byte[] rgb)
    {
        for (int p = 0; p < y.Length; p++)
        {
            int luma = y[p], b = cb[p], r = cr[p];
            rgb[3 * p] = (byte)Math.Clamp(luma + CrR[r], 0, 255);
            rgb[3 * p + 1] = (byte)Math.Clamp(luma + (int)((CbG[b] + CrG[r]) >> 16), 0, 255);
            rgb[3 * p + 2] = (byte)Math.Clamp(luma + CbB[b], 0, 255);
        }
    }
}
