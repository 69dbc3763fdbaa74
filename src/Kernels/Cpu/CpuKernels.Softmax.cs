using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Cpu;

// Softmax on the CPU (cuda/softmax.cu): row softmax and its backward, and attention's biased, masked softmax.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void SoftmaxForward(float* y, float* x, int rows, int cols)
    {
        var body = new SoftmaxRowsBody { Y = y, X = x, Cols = cols, HeadRows = rows, Heads = 1, Windows = 1 };
        CpuRange.For(rows, Math.Max(1, ElementGrain / cols), ref body);
    }

    /// <summary>Rows of softmax(x + bias[h, i] + mask[w, i]), where global row r = ((b·Heads + h)·HeadRows + i)
    /// and w = b mod Windows. Plain softmax has no bias or mask.</summary>
    struct SoftmaxRowsBody : IRangeBody, IVectorRange
    {
        public float* Y, X, Bias, Mask;
        public ushort* YCopy; // y in 16 bits too (Precision), or null
        public Precision Precision;
        public int Cols, HeadRows, Heads, Windows;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end) => Simd.Run(ref this, start, end);

        /// <inheritdoc/>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly long Run<TV, W>(long start, long end) where TV : struct where W : ISimd<TV>
        {
            for (long r = start; r < end; r++)
            {
                long i = r % HeadRows, bh = r / HeadRows, h = bh % Heads, w = bh / Heads % Windows;
                SoftmaxRow<TV, W>(Y + r * Cols, X + r * Cols,
                    Bias == null ? null : Bias + (h * HeadRows + i) * Cols,
                    Mask == null ? null : Mask + (w * HeadRows + i) * Cols, Cols);
                if (YCopy != null) PackRow(YCopy + r * Cols, Y + r * Cols, Cols, Precision);
            }
            return end;
        }
    }

    /// <summary>Shared row softmax at width W: y = softmax(x + a + b) with optional additive rows a, b (both [cols]);
    /// returns the row's log-sum-exp, log Σ exp(x + a + b).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float SoftmaxRow<TV, W>(float* y, float* x, float* a, float* b, int cols) where TV : struct where W : ISimd<TV>
    {
        float sum = ExpRow<TV, W>(y, x, a, b, cols, out float max);
        var inv = W.Splat(1f / sum);
        int i = 0;
        for (; i + W.Count <= cols; i += W.Count) W.Store(y + i, W.Mul(W.Load(y + i), inv));
        for (; i < cols; i++) y[i] *= 1f / sum;
        return max + MathF.Log(sum);
    }

    /// <summary>The softmax's numerators at width W: y = exp(z − max) for z = x + a + b (a, b optional rows, [cols]),
    /// <paramref name="max"/> the row's largest z; returns their sum, the denominator. A row of at least one vector that
    /// leaves 4 or more elements past its whole vectors (197 tokens: 12 vectors of 16 and 5 left) ends with one more
    /// vector over its last W.Count elements, overlapping the one before: its z and exponentials are computed before the
    /// loops write over them (y may be x), stored after them (the overlap gets the same values again) and summed in its
    /// new lanes only. (`bash bench/ab.sh 23d3c29 9 attention,attention-forward`: ViT-B's attention forward 1.04× the
    /// speed of the scalar tail of library exponentials; Swin's 49-token rows, 1 left, keep the scalar tail.)</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float ExpRow<TV, W>(float* y, float* x, float* a, float* b, int cols, out float max) where TV : struct where W : ISimd<TV>
    {
        int i = 0, whole = cols - cols % W.Count, last = cols - W.Count; // the overlapping vector starts at last
        bool copy = y != x || a != null || b != null; // else z is already in y
        bool overlap = cols - whole >= 4 && last >= 0;
        TV zLast = default;
        if (overlap)
        {
            zLast = W.Load(x + last);
            if (a != null) zLast = W.Add(zLast, W.Load(a + last));
            if (b != null) zLast = W.Add(zLast, W.Load(b + last));
        }
        var vmax = overlap ? zLast : W.Splat(float.NegativeInfinity);
        for (; i < whole; i += W.Count)
        {
            var z = W.Load(x + i);
            if (a != null) z = W.Add(z, W.Load(a + i));
            if (b != null) z = W.Add(z, W.Load(b + i));
            if (copy) W.Store(y + i, z);
            vmax = W.Max(vmax, z);
        }
        if (overlap && copy) W.Store(y + last, zLast);
        max = W.Max(vmax);
        for (; !overlap && i < cols; i++)
        {
            float z = x[i] + (a == null ? 0f : a[i]) + (b == null ? 0f : b[i]);
            y[i] = z;
            if (z > max) max = z;
        }
        vmax = W.Splat(max);
        var acc = W.Splat(0f);
        TV eLast = overlap ? Simd.Exp<TV, W>(W.Sub(zLast, vmax)) : default;
        for (i = 0; i < whole; i += W.Count)
        {
            var e = Simd.Exp<TV, W>(W.Sub(W.Load(y + i), vmax));
            W.Store(y + i, e);
            acc = W.Add(acc, e);
        }
        if (overlap)
        {
            W.Store(y + last, eLast);
            var counted = W.LessThan(W.Load(Simd.LaneIndices), W.Splat(whole - last)); // lanes the loop already summed
            acc = W.Add(acc, W.Select(counted, W.Splat(0f), eLast));
        }
        float sum = W.Sum(acc);
        for (; !overlap && i < cols; i++)
        {
            y[i] = MathF.Exp(y[i] - max);
            sum += y[i];
        }
        return sum;
    }

    /// <inheritdoc/>
    public void SoftmaxBackward(float* dx, ushort* dxPacked, float* dy, GemmOperand y, int rows, int cols, bool accumulate)
    {
        y.CheckFor(GemmPrecision, "SoftmaxBackward");
        var body = new SoftmaxBackwardBody
        {
            Dx = dx, DxPacked = dxPacked, Dy = dy, Y = y.IsPacked ? null : y.Floats, YPacked = y.IsPacked ? y.Halves : null, Cols = cols,
            Accumulate = accumulate, YPrecision = GemmPrecision,
            Precision = (Precision)GemmPrecision.PackedOutputFormat(dx, dxPacked, accumulate, "SoftmaxBackward"),
        };
        CpuRange.For(rows, Math.Max(1, ElementGrain / cols), ref body);
    }

    /// <summary>Rows of the softmax backward; a 16-bit dx (DxPacked) is written from a float32 row in the thread's scratch,
    /// and a 16-bit y (YPacked) is widened into another.</summary>
    struct SoftmaxBackwardBody : IRangeBody, IVectorRange
    {
        public float* Dx, Dy, Y;
        public ushort* DxPacked, YPacked;
        public Precision Precision, YPrecision;
        public int Cols;
        public bool Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end) => Simd.Run(ref this, start, end);

        /// <summary>dx = y ⊙ (dy − ⟨dy, y⟩) per row, at width W.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly long Run<TV, W>(long start, long end) where TV : struct where W : ISimd<TV>
        {
            float* row = DxPacked != null ? (float*)ThreadScratch.Get(3, (long)Cols * sizeof(float)) : null;
            float* wide = YPacked != null ? (float*)ThreadScratch.Get(4, (long)Cols * sizeof(float)) : null;
            for (long r = start; r < end; r++)
            {
                if (wide != null) UnpackRow(wide, YPacked + r * Cols, Cols, YPrecision);
                float* dy = Dy + r * Cols, y = wide != null ? wide : Y + r * Cols;
                SoftmaxBackwardRow<TV, W>(row != null ? row : Dx + r * Cols, dy, y, Dot<TV, W>(dy, y, Cols), Cols, Accumulate);
                if (row != null) PackRow(DxPacked + r * Cols, row, Cols, Precision);
            }
            return end;
        }
    }

    /// <summary>Σ a·b over n entries at width W.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float Dot<TV, W>(float* a, float* b, int n) where TV : struct where W : ISimd<TV>
    {
        var acc = W.Splat(0f);
        int j = 0;
        for (; j + W.Count <= n; j += W.Count) acc = W.Fma(W.Load(a + j), W.Load(b + j), acc);
        float dot = W.Sum(acc);
        for (; j < n; j++) dot += a[j] * b[j];
        return dot;
    }

    /// <summary>dx = y ⊙ (dy − dot) over one row (dx may alias dy), at width W: the softmax backward, with dot = ⟨dy, y⟩.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SoftmaxBackwardRow<TV, W>(float* dx, float* dy, float* y, float dot, int cols, bool accumulate)
        where TV : struct where W : ISimd<TV>
    {
        var vdot = W.Splat(dot);
        int j = 0;
        for (; j + W.Count <= cols; j += W.Count)
        {
            var v = W.Mul(W.Load(y + j), W.Sub(W.Load(dy + j), vdot));
            W.Store(dx + j, accumulate ? W.Add(W.Load(dx + j), v) : v);
        }
        for (; j < cols; j++)
        {
            float v = y[j] * (dy[j] - dot);
            dx[j] = accumulate ? dx[j] + v : v;
        }
    }

    /// <inheritdoc/>
    public void AttentionSoftmaxForward(float* p, ushort* pCopy, float* s, float* bias, float* mask, int B, int NH, int T, int nW)
    {
        // Without p the rows are computed in s, in place.
        var body = new SoftmaxRowsBody
        {
            Y = p != null ? p : s, YCopy = pCopy, Precision = (Precision)GemmPrecision.OutputOrCopyFormat(p, pCopy, false, "AttentionSoftmaxForward"),
            X = s, Bias = bias, Mask = mask, Cols = T, HeadRows = T, Heads = NH, Windows = nW,
        };
        CpuRange.For((long)B * NH * T, Math.Max(1, ElementGrain / T), ref body);
    }
}
