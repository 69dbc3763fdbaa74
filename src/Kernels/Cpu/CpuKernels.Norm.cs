using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Numerics;

namespace Engine.Kernels.Cpu;

// Normalisations on the CPU (cuda/norm.cu): LayerNorm, per-channel scale-shift (SSF) and row L2 normalisation.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void LayerNormForward(float* y, ushort* yPacked, float* mean, float* rstd, float* x, float* weight, float* bias, int rows, int C, float eps)
    {
        var body = new LayerNormForwardBody
        {
            Y = y, YPacked = yPacked, Precision = yPacked == null ? Precision.FP32 : GemmPrecision.SixteenBitsFor("LayerNormForward"),
            Mean = mean, Rstd = rstd, X = x, W = weight, B = bias, C = C, Eps = eps,
        };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    /// <summary>Rows of the LayerNorm forward at the widest vector width: the row's mean, then the sum of squared
    /// deviations from it (two sweeps of a row in L1, each with two accumulators so the adds overlap), then
    /// y = (x − mean)·(rstd·w) + b; a 16-bit y is written from a float32 row in L1.</summary>
    struct LayerNormForwardBody : IRangeBody, IVectorRange
    {
        public float* Y, Mean, Rstd, X, W, B;
        public ushort* YPacked;
        public Precision Precision;
        public int C;
        public float Eps;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end) => Simd.Run(ref this, start, end);

        /// <inheritdoc/>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly long Run<TV, V>(long start, long end) where TV : struct where V : ISimd<TV>
        {
            int n = V.Count, C2 = C & -(2 * n), C1 = C & -n;
            float* row = YPacked != null ? (float*)ThreadScratch.Get(3, (long)C * sizeof(float)) : null;
            for (long r = start; r < end; r++)
            {
                float* x = X + r * C, y = row != null ? row : Y + r * C;
                TV s0 = V.Splat(0f), s1 = s0;
                int i = 0;
                for (; i < C2; i += 2 * n)
                {
                    s0 = V.Add(s0, V.Load(x + i));
                    s1 = V.Add(s1, V.Load(x + i + n));
                }
                if (i < C1) s0 = V.Add(s0, V.Load(x + i));
                float sum = V.Sum(V.Add(s0, s1));
                for (i = C1; i < C; i++) sum += x[i];
                float mu = sum / C;
                TV vmu = V.Splat(mu), q0 = V.Splat(0f), q1 = q0;
                for (i = 0; i < C2; i += 2 * n)
                {
                    var d0 = V.Sub(V.Load(x + i), vmu);
                    var d1 = V.Sub(V.Load(x + i + n), vmu);
                    q0 = V.Fma(d0, d0, q0);
                    q1 = V.Fma(d1, d1, q1);
                }
                if (i < C1)
                {
                    var d0 = V.Sub(V.Load(x + i), vmu);
                    q0 = V.Fma(d0, d0, q0);
                }
                float squares = V.Sum(V.Add(q0, q1));
                for (i = C1; i < C; i++) squares += (x[i] - mu) * (x[i] - mu);
                float rs = 1f / MathF.Sqrt(squares / C + Eps);
                if (Mean != null) Mean[r] = mu;
                if (Rstd != null) Rstd[r] = rs;
                TV vrs = V.Splat(rs), zero = V.Splat(0f);
                for (i = 0; i < C1; i += n)
                {
                    var scale = W == null ? vrs : V.Mul(vrs, V.Load(W + i));
                    V.Store(y + i, V.Fma(V.Sub(V.Load(x + i), vmu), scale, B == null ? zero : V.Load(B + i)));
                }
                for (; i < C; i++)
                    y[i] = (x[i] - mu) * (rs * (W == null ? 1f : W[i])) + (B == null ? 0f : B[i]);
                if (row != null) PackRow(YPacked + r * C, row, C, Precision);
            }
            return end;
        }
    }

    /// <inheritdoc/>
    public void LayerNormBackward(float* dx, ushort* dxCopy, float* dweight, float* dbias, float* dy, float* x, float* weight,
        float* mean, float* rstd, int rows, int C, bool accumulate)
    {
        bool paramGrads = dweight != null || dbias != null;
        var body = new LayerNormBackwardBody
        {
            Dx = dx, DxCopy = dxCopy, Dy = dy, X = x, W = weight, Mean = mean, Rstd = rstd, C = C, Rows = rows, Accumulate = accumulate,
            ParamGrads = paramGrads, Grain = ReductionGrain(rows),
            CopyPrecision = (Precision)GemmPrecision.GradientCopyFormat(dx, dxCopy, "LayerNormBackward"),
        };
        int chunks = CpuRange.Chunks(rows, body.Grain);
        if (paramGrads) body.Partials = Partials(chunks, 2L * C);
        CpuParallel.For(chunks, ref body);
        if (!paramGrads) return;
        SumPairPartials(dweight, dbias, body.Partials, chunks, C);
    }

    /// <summary>One chunk of rows of the LayerNorm backward at the widest vector width: per row g = dy·w, the sums of g
    /// and g·x̂ (and into the chunk's partials dw += dy·x̂, db += dy), then dx = rs·(g − mean(g) − x̂·mean(g·x̂)), and
    /// the row of dx in 16 bits when a copy is asked for.</summary>
    struct LayerNormBackwardBody : IParallelBody
    {
        public float* Dx, Dy, X, W, Mean, Rstd, Partials;
        public ushort* DxCopy;
        public Precision CopyPrecision;
        public int C, Rows, Grain;
        public bool Accumulate, ParamGrads;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int chunk)
        {
            float* dwAcc = ParamGrads ? Partials + (long)chunk * 2 * C : null;
            if (ParamGrads) new Span<float>(dwAcc, 2 * C).Clear();
            int end = Math.Min(Rows, (chunk + 1) * Grain);
            for (long r = (long)chunk * Grain; r < end; r++)
            {
                switch (Simd.Width)
                {
                    case SimdWidth.W512: Row<Vector512<float>, W512>(r, dwAcc); break;
                    case SimdWidth.W256: Row<Vector256<float>, W256>(r, dwAcc); break;
                    default: Row<Vector128<float>, W128>(r, dwAcc); break;
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        readonly void Row<TV, V>(long r, float* dwAcc) where TV : struct where V : ISimd<TV>
        {
            float* x = X + r * C, dy = Dy + r * C, dbAcc = dwAcc + C;
            float mu = Mean[r], rs = Rstd[r];
            TV vmu = V.Splat(mu), vrs = V.Splat(rs), one = V.Splat(1f), accG = V.Splat(0f), accGx = V.Splat(0f);
            int i = 0;
            for (; i + V.Count <= C; i += V.Count)
            {
                var d = V.Load(dy + i);
                var xh = V.Mul(V.Sub(V.Load(x + i), vmu), vrs);
                var g = V.Mul(d, W == null ? one : V.Load(W + i));
                accG = V.Add(accG, g);
                accGx = V.Add(accGx, V.Mul(g, xh));
                if (!ParamGrads) continue;
                V.Store(dwAcc + i, V.Add(V.Load(dwAcc + i), V.Mul(d, xh)));
                V.Store(dbAcc + i, V.Add(V.Load(dbAcc + i), d));
            }
            float sumG = V.Sum(accG), sumGx = V.Sum(accGx);
            for (int j = i; j < C; j++)
            {
                float xh = (x[j] - mu) * rs, g = dy[j] * (W == null ? 1f : W[j]);
                sumG += g;
                sumGx += g * xh;
                if (!ParamGrads) continue;
                dwAcc[j] += dy[j] * xh;
                dbAcc[j] += dy[j];
            }
            if (Dx == null) return;
            float mg = sumG / C, mgx = sumGx / C;
            float* dx = Dx + r * C;
            TV vmg = V.Splat(mg), vmgx = V.Splat(mgx);
            for (i = 0; i + V.Count <= C; i += V.Count)
            {
                var xh = V.Mul(V.Sub(V.Load(x + i), vmu), vrs);
                var g = V.Mul(V.Load(dy + i), W == null ? one : V.Load(W + i));
                var v = V.Mul(vrs, V.Sub(V.Sub(g, vmg), V.Mul(xh, vmgx)));
                V.Store(dx + i, Accumulate ? V.Add(V.Load(dx + i), v) : v);
            }
            for (; i < C; i++)
            {
                float xh = (x[i] - mu) * rs, g = dy[i] * (W == null ? 1f : W[i]);
                float v = rs * (g - mg - xh * mgx);
                dx[i] = Accumulate ? dx[i] + v : v;
            }
            if (DxCopy != null) PackRow(DxCopy + r * C, dx, C, CopyPrecision);
        }
    }

    /// <summary>d0[j] += Σ_c partials[c, j] and d1[j] += Σ_c partials[c, C + j] for partial rows [d0 | d1] of 2C
    /// floats, in chunk order; a null destination is skipped.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SumPairPartials(float* d0, float* d1, float* partials, int chunks, int C)
    {
        int j = 0, V = Vector<float>.Count;
        for (; j + V <= C; j += V)
        {
            Vector<float> s0 = Vector<float>.Zero, s1 = Vector<float>.Zero;
            for (int c = 0; c < chunks; c++)
            {
                s0 += Vec.Load(partials + (long)c * 2 * C + j);
                s1 += Vec.Load(partials + (long)c * 2 * C + C + j);
            }
            if (d0 != null) Vec.Store(d0 + j, Vec.Load(d0 + j) + s0);
            if (d1 != null) Vec.Store(d1 + j, Vec.Load(d1 + j) + s1);
        }
        for (; j < C; j++)
        {
            float s0 = 0f, s1 = 0f;
            for (int c = 0; c < chunks; c++)
            {
                s0 += partials[(long)c * 2 * C + j];
                s1 += partials[(long)c * 2 * C + C + j];
            }
            if (d0 != null) d0[j] += s0;
            if (d1 != null) d1[j] += s1;
        }
    }

    /// <inheritdoc/>
    public void ScaleShiftForward(float* y, float* x, float* scale, float* shift, int rows, int C)
    {
        var body = new ScaleShiftForwardBody { Y = y, X = x, Scale = scale, Shift = shift, C = C };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    struct ScaleShiftForwardBody : IRangeBody
    {
        public float* Y, X, Scale, Shift;
        public int C;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                float* x = X + r * C, y = Y + r * C;
                int i = 0;
                for (; i + Vector<float>.Count <= C; i += Vector<float>.Count)
                    Vec.Store(y + i, Vec.Load(x + i) * Vec.Load(Scale + i) + Vec.Load(Shift + i));
                for (; i < C; i++) y[i] = x[i] * Scale[i] + Shift[i];
            }
        }
    }

    /// <inheritdoc/>
    public void ScaleShiftBackward(float* dx, ushort* dxPacked, float* dscale, float* dshift, float* dy, GemmOperand x, float* scale, int rows, int C, bool accumulate) =>
        ScaleShiftBackward(dx, dxPacked, dscale, dshift, dy, x, scale, null, rows, C, accumulate);

    /// <inheritdoc/>
    public void ScaleShiftGeluBackward(float* dx, ushort* dxPacked, float* dscale, float* dshift, float* dy, GemmOperand x, float* scale, float* shift, int rows, int C,
        bool accumulate)
    {
        if (shift == null) throw new ArgumentNullException(nameof(shift));
        ScaleShiftBackward(dx, dxPacked, dscale, dshift, dy, x, scale, shift, rows, C, accumulate);
    }

    /// <inheritdoc/>
    /// <remarks>One vector after another on the calling thread: they are a few thousand values each.</remarks>
    public void ScaleShiftMany(ReadOnlySpan<ScaleShiftVector> vectors)
    {
        foreach (var v in vectors)
        {
            int i = 0, n = v.Count, V = Vector<float>.Count;
            // x·scale + shift, as ScaleShiftForward computes a row (a missing shift adds zeros, as a zero vector would).
            for (; i + V <= n; i += V)
                Vec.Store(v.Y + i, Vec.Load(v.X + i) * Vec.Load(v.Scale + i) + (v.Shift == null ? Vector<float>.Zero : Vec.Load(v.Shift + i)));
            for (; i < n; i++) v.Y[i] = v.X[i] * v.Scale[i] + (v.Shift == null ? 0f : v.Shift[i]);
        }
    }

    /// <inheritdoc/>
    public void ScaleShiftManyBackward(ReadOnlySpan<ScaleShiftVectorGrad> vectors)
    {
        foreach (var v in vectors)
        {
            int i = 0, n = v.Count, V = Vector<float>.Count;
            for (; i + V <= n; i += V)
            {
                var g = Vec.Load(v.Dy + i);
                if (v.DScale != null) Vec.Store(v.DScale + i, Vec.Load(v.DScale + i) + g * Vec.Load(v.X + i));
                if (v.DShift != null) Vec.Store(v.DShift + i, Vec.Load(v.DShift + i) + g);
                if (v.Dx == null) continue;
                var dx = g * Vec.Load(v.Scale + i);
                Vec.Store(v.Dx + i, v.AccumulateDx ? Vec.Load(v.Dx + i) + dx : dx);
            }
            for (; i < n; i++)
            {
                float g = v.Dy[i];
                if (v.DScale != null) v.DScale[i] += g * v.X[i];
                if (v.DShift != null) v.DShift[i] += g;
                if (v.Dx != null) v.Dx[i] = v.AccumulateDx ? v.Dx[i] + g * v.Scale[i] : g * v.Scale[i];
            }
        }
    }

    /// <summary>SSF's backward; with a shift, that of GELU after SSF (dy is first multiplied by GELU's slope at
    /// x·scale + shift).</summary>
    void ScaleShiftBackward(float* dx, ushort* dxPacked, float* dscale, float* dshift, float* dy, GemmOperand x, float* scale, float* shift, int rows, int C, bool accumulate)
    {
        string kernel = shift == null ? "ScaleShiftBackward" : "ScaleShiftGeluBackward";
        x.CheckFor(GemmPrecision, kernel);
        GemmPrecision.PackedOutputFormat(dx, dxPacked, accumulate, kernel);
        var body = new ScaleShiftBackwardBody
        {
            Dx = dx, DxPacked = dxPacked, Dy = dy, X = x.IsPacked ? null : x.Floats, XPacked = x.IsPacked ? x.Halves : null, Precision = GemmPrecision,
            Scale = scale, Shift = shift, C = C, Rows = rows, Accumulate = accumulate, Grain = ReductionGrain(rows),
            ParamGrads = dscale != null || dshift != null, ScaleGrad = dscale != null,
        };
        int chunks = CpuRange.Chunks(rows, body.Grain);
        if (body.ParamGrads) body.Partials = Partials(chunks, 2L * C);
        CpuParallel.For(chunks, ref body);
        if (!body.ParamGrads) return;
        SumPairPartials(dscale, dshift, body.Partials, chunks, C);
    }

    /// <summary>One chunk of rows of the SSF backward, each row read once: g = dy, or dy·GELU'(x·scale + shift) when
    /// GELU followed SSF (Shift set); dx = g ⊙ scale (added when accumulating), and into the chunk's partials
    /// dscale += g ⊙ x (when the scale trains), dshift += g. A 16-bit x (XPacked) is widened a row at a time into the
    /// thread's scratch; a 16-bit dx (DxPacked) is written from a float32 row there.</summary>
    struct ScaleShiftBackwardBody : IParallelBody
    {
        public float* Dx, Dy, X, Scale, Shift, Partials;
        public ushort* XPacked, DxPacked;
        public Precision Precision;
        public int C, Rows, Grain;
        public bool Accumulate, ParamGrads, ScaleGrad;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int chunk)
        {
            float* ds = ParamGrads ? Partials + (long)chunk * 2 * C : null, db = ds + C;
            if (ParamGrads) new Span<float>(ds, 2 * C).Clear();
            int end = Math.Min(Rows, (chunk + 1) * Grain);
            float* wide = XPacked != null ? (float*)ThreadScratch.Get(3, (long)C * sizeof(float)) : null;
            float* dxRow = DxPacked != null ? (float*)ThreadScratch.Get(4, (long)C * sizeof(float)) : null;
            for (long r = (long)chunk * Grain; r < end; r++)
            {
                // x is read (and was kept) only when the scale trains or GELU followed.
                bool readsX = ScaleGrad || Shift != null;
                if (readsX && wide != null) UnpackRow(wide, XPacked + r * C, C, Precision);
                float* x = !readsX ? null : wide != null ? wide : X + r * C, dy = Dy + r * C, dx = dxRow != null ? dxRow : Dx == null ? null : Dx + r * C;
                int i = Simd.Width switch
                {
                    SimdWidth.W512 => Row<Vector512<float>, W512>(dx, dy, x, ds, db),
                    SimdWidth.W256 => Row<Vector256<float>, W256>(dx, dy, x, ds, db),
                    _ => Row<Vector128<float>, W128>(dx, dy, x, ds, db),
                };
                for (; i < C; i++)
                {
                    float g = Shift == null ? dy[i] : dy[i] * GeluSlope(x[i] * Scale[i] + Shift[i]);
                    if (ScaleGrad) ds[i] += g * x[i];
                    if (ParamGrads) db[i] += g;
                    if (dx != null) dx[i] = Accumulate ? dx[i] + g * Scale[i] : g * Scale[i];
                }
                if (dxRow != null) PackRow(DxPacked + r * C, dxRow, C, Precision);
            }
        }

        /// <summary>The whole vectors of one row at width W; returns the first column of the scalar tail.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        readonly int Row<TV, W>(float* dx, float* dy, float* x, float* ds, float* db) where TV : struct where W : ISimd<TV>
        {
            int i = 0;
            for (; i + W.Count <= C; i += W.Count)
            {
                var g = W.Load(dy + i);
                if (Shift != null) g = W.Mul(g, GeluSlope<TV, W>(W.Add(W.Mul(W.Load(x + i), W.Load(Scale + i)), W.Load(Shift + i))));
                if (ScaleGrad) W.Store(ds + i, W.Add(W.Load(ds + i), W.Mul(g, W.Load(x + i))));
                if (ParamGrads) W.Store(db + i, W.Add(W.Load(db + i), g));
                if (dx == null) continue;
                var v = W.Mul(g, W.Load(Scale + i));
                W.Store(dx + i, Accumulate ? W.Add(W.Load(dx + i), v) : v);
            }
            return i;
        }
    }

    /// <inheritdoc/>
    public void L2NormalizeForward(float* y, float* x, int rows, int C, float eps)
    {
        var body = new L2NormalizeBody { Y = y, X = x, C = C, Eps = eps };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    /// <summary>max(‖x‖₂, eps) of one row, the norm summed in double.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float ClampedNorm(float* x, int C, float eps)
    {
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        return MathF.Max((float)Math.Sqrt(ss), eps);
    }

    struct L2NormalizeBody : IRangeBody
    {
        public float* Y, X;
        public int C;
        public float Eps;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                float* x = X + r * C, y = Y + r * C;
                float n = ClampedNorm(x, C, Eps);
                for (int i = 0; i < C; i++) y[i] = x[i] / n;
            }
        }
    }

    /// <inheritdoc/>
    public void L2NormalizeBackward(float* dx, float* dy, float* x, float* y, int rows, int C, float eps, bool accumulate)
    {
        var body = new L2NormalizeBackwardBody { Dx = dx, Dy = dy, X = x, Y = y, C = C, Eps = eps, Accumulate = accumulate };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    struct L2NormalizeBackwardBody : IRangeBody
    {
        public float* Dx, Dy, X, Y;
        public int C;
        public float Eps;
        public bool Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                float* x = X + r * C, y = Y + r * C, dy = Dy + r * C, dx = Dx + r * C;
                float n = ClampedNorm(x, C, Eps);
                // A clamped norm is a constant: then y = x / eps and dx = dy / eps.
                float dot = 0f;
                if (n > Eps)
                    for (int i = 0; i < C; i++) dot += y[i] * dy[i];
                for (int i = 0; i < C; i++)
                {
                    float g = (dy[i] - y[i] * dot) / n;
                    dx[i] = Accumulate ? dx[i] + g : g;
                }
            }
        }
    }
}
