using System.Numerics;

namespace Engine.Kernels.Cpu;

// LayerNorm, softmax, GELU and per-channel scale-shift (SSF) on the CPU.
public sealed unsafe partial class CpuKernels
{
    // ---------------------------------------------------------------- LayerNorm

    /// <inheritdoc/>
    public void LayerNormForward(float* y, float* mean, float* rstd, float* x, float* weight, float* bias, int rows, int C, float eps)
    {
        var body = new LayerNormForwardBody { Y = y, Mean = mean, Rstd = rstd, X = x, W = weight, B = bias, C = C, Eps = eps };
        CpuRange.For(rows, Math.Max(1, ElementGrain / C), ref body);
    }

    struct LayerNormForwardBody : IRangeBody
    {
        public float* Y, Mean, Rstd, X, W, B;
        public int C;
        public float Eps;
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                float* x = X + r * C, y = Y + r * C;
                float mu = Sum(x, C) / C;
                float var = SumSquaredDeviation(x, mu, C) / C;
                float rs = 1f / MathF.Sqrt(var + Eps);
                if (Mean != null) Mean[r] = mu;
                if (Rstd != null) Rstd[r] = rs;
                int i = 0;
                if (W != null && B != null)
                {
                    for (; i + Vector<float>.Count <= C; i += Vector<float>.Count)
                        Vec.Store(y + i, (Vec.Load(x + i) - new Vector<float>(mu)) * rs * Vec.Load(W + i) + Vec.Load(B + i));
                }
                for (; i < C; i++)
                    y[i] = (x[i] - mu) * rs * (W == null ? 1f : W[i]) + (B == null ? 0f : B[i]);
            }
        }
    }

    /// <inheritdoc/>
    public void LayerNormBackward(float* dx, float* dweight, float* dbias, float* dy, float* x, float* weight,
        float* mean, float* rstd, int rows, int C, bool accumulate)
    {
        bool paramGrads = dweight != null || dbias != null;
        var body = new LayerNormBackwardBody
        {
            Dx = dx, Dy = dy, X = x, W = weight, Mean = mean, Rstd = rstd, C = C, Rows = rows, Accumulate = accumulate,
            ParamGrads = paramGrads, Grain = ReductionGrain(rows),
        };
        int chunks = CpuRange.Chunks(rows, body.Grain);
        if (paramGrads) body.Partials = Partials(chunks, 2L * C);
        CpuParallel.For(chunks, ref body);
        if (!paramGrads) return;
        SumPairPartials(dweight, dbias, body.Partials, chunks, C);
    }

    struct LayerNormBackwardBody : IParallelBody
    {
        public float* Dx, Dy, X, W, Mean, Rstd, Partials;
        public int C, Rows, Grain;
        public bool Accumulate, ParamGrads;
        public void Run(int chunk)
        {
            float* dwAcc = ParamGrads ? Partials + (long)chunk * 2 * C : null, dbAcc = dwAcc + C;
            if (ParamGrads) new Span<float>(dwAcc, 2 * C).Clear();
            int end = Math.Min(Rows, (chunk + 1) * Grain);
            for (long r = (long)chunk * Grain; r < end; r++)
            {
                float* x = X + r * C, dy = Dy + r * C;
                float mu = Mean[r], rs = Rstd[r];
                // g = dy·w; dx = rs·(g − mean(g) − x̂·mean(g·x̂))
                float sumG = 0f, sumGx = 0f;
                for (int i = 0; i < C; i++)
                {
                    float xh = (x[i] - mu) * rs, g = dy[i] * (W == null ? 1f : W[i]);
                    sumG += g;
                    sumGx += g * xh;
                    if (ParamGrads)
                    {
                        dwAcc[i] += dy[i] * xh;
                        dbAcc[i] += dy[i];
                    }
                }
                if (Dx == null) continue;
                float mg = sumG / C, mgx = sumGx / C;
                float* dx = Dx + r * C;
                for (int i = 0; i < C; i++)
                {
                    float xh = (x[i] - mu) * rs, g = dy[i] * (W == null ? 1f : W[i]);
                    float v = rs * (g - mg - xh * mgx);
                    dx[i] = Accumulate ? dx[i] + v : v;
                }
            }
        }
    }

    /// <summary>d0[j] += Σ_c partials[c, j] and d1[j] += Σ_c partials[c, C + j] for partial rows [d0 | d1] of 2C
    /// floats, in chunk order; a null destination is skipped.</summary>
    static void SumPairPartials(float* d0, float* d1, float* partials, int chunks, int C)
    {
        for (int j = 0; j < C; j++)
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

    static float Sum(float* x, int n)
    {
        var acc = Vector<float>.Zero;
        int i = 0;
        for (; i + Vector<float>.Count <= n; i += Vector<float>.Count) acc += Vec.Load(x + i);
        float s = Vector.Sum(acc);
        for (; i < n; i++) s += x[i];
        return s;
    }

    static float SumSquaredDeviation(float* x, float mu, int n)
    {
        var acc = Vector<float>.Zero;
        var m = new Vector<float>(mu);
        int i = 0;
        for (; i + Vector<float>.Count <= n; i += Vector<float>.Count)
        {
            var d = Vec.Load(x + i) - m;
            acc += d * d;
        }
        float s = Vector.Sum(acc);
        for (; i < n; i++) s += (x[i] - mu) * (x[i] - mu);
        return s;
    }

    // ---------------------------------------------------------------- softmax

    /// <inheritdoc/>
    public void SoftmaxForward(float* y, float* x, int rows, int cols)
    {
        var body = new SoftmaxRowsBody { Y = y, X = x, Cols = cols, HeadRows = rows, Heads = 1, Windows = 1 };
        CpuRange.For(rows, Math.Max(1, ElementGrain / cols), ref body);
    }

    /// <summary>Rows of softmax(x + bias[h, i] + mask[w, i]), where global row r = ((b·Heads + h)·HeadRows + i)
    /// and w = b mod Windows. Plain softmax has no bias or mask.</summary>
    struct SoftmaxRowsBody : IRangeBody
    {
        public float* Y, X, Bias, Mask;
        public int Cols, HeadRows, Heads, Windows;
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                long i = r % HeadRows, bh = r / HeadRows, h = bh % Heads, w = bh / Heads % Windows;
                SoftmaxRow(Y + r * Cols, X + r * Cols,
                    Bias == null ? null : Bias + (h * HeadRows + i) * Cols,
                    Mask == null ? null : Mask + (w * HeadRows + i) * Cols, Cols);
            }
        }
    }

    /// <summary>Shared row softmax: y = softmax(x + a + b) with optional additive rows a, b (both [cols]).</summary>
    static void SoftmaxRow(float* y, float* x, float* a, float* b, int cols)
    {
        float max = float.NegativeInfinity;
        for (int j = 0; j < cols; j++)
        {
            float z = x[j] + (a == null ? 0f : a[j]) + (b == null ? 0f : b[j]);
            y[j] = z;
            if (z > max) max = z;
        }
        var vmax = new Vector<float>(max);
        var acc = Vector<float>.Zero;
        int i = 0;
        for (; i + Vector<float>.Count <= cols; i += Vector<float>.Count)
        {
            var e = Vector.Exp(Vec.Load(y + i) - vmax);
            Vec.Store(y + i, e);
            acc += e;
        }
        float sum = Vector.Sum(acc);
        for (; i < cols; i++)
        {
            y[i] = MathF.Exp(y[i] - max);
            sum += y[i];
        }
        float inv = 1f / sum;
        i = 0;
        for (; i + Vector<float>.Count <= cols; i += Vector<float>.Count) Vec.Store(y + i, Vec.Load(y + i) * inv);
        for (; i < cols; i++) y[i] *= inv;
    }

    /// <inheritdoc/>
    public void SoftmaxBackward(float* dx, float* dy, float* y, int rows, int cols, bool accumulate)
    {
        var body = new SoftmaxBackwardBody { Dx = dx, Dy = dy, Y = y, Cols = cols, Accumulate = accumulate };
        CpuRange.For(rows, Math.Max(1, ElementGrain / cols), ref body);
    }

    struct SoftmaxBackwardBody : IRangeBody
    {
        public float* Dx, Dy, Y;
        public int Cols;
        public bool Accumulate;
        public void Run(long start, long end)
        {
            for (long r = start; r < end; r++)
            {
                float* dx = Dx + r * Cols, dy = Dy + r * Cols, y = Y + r * Cols;
                float dot = 0f;
                for (int j = 0; j < Cols; j++) dot += dy[j] * y[j];
                for (int j = 0; j < Cols; j++)
                {
                    float v = y[j] * (dy[j] - dot);
                    dx[j] = Accumulate ? dx[j] + v : v;
                }
            }
        }
    }

    // ---------------------------------------------------------------- GELU (exact erf)

    /// <inheritdoc/>
    public void GeluForward(float* y, float* x, long n)
    {
        var body = new GeluBody { Y = y, X = x };
        CpuRange.For(n, ElementGrain, ref body);
    }

    /// <inheritdoc/>
    public void GeluBackward(float* dx, float* dy, float* x, long n, bool accumulate)
    {
        var body = new GeluBody { Y = dx, Dy = dy, X = x, Backward = true, Accumulate = accumulate };
        CpuRange.For(n, ElementGrain, ref body);
    }

    struct GeluBody : IRangeBody
    {
        public float* Y, X, Dy;
        public bool Backward, Accumulate;
        public void Run(long start, long end)
        {
            long i = start;
            var half = new Vector<float>(0.5f);
            var invSqrt2 = new Vector<float>(0.70710678118654752f);
            var invSqrt2Pi = new Vector<float>(0.39894228040143268f);
            for (; i + Vector<float>.Count <= end; i += Vector<float>.Count)
            {
                var x = Vec.Load(X + i);
                var cdf = half * (Vector<float>.One + Erf(x * invSqrt2));
                Vector<float> v;
                if (!Backward) v = x * cdf;
                else
                {
                    var pdf = invSqrt2Pi * Vector.Exp(-half * x * x);
                    v = Vec.Load(Dy + i) * (cdf + x * pdf);
                    if (Accumulate) v += Vec.Load(Y + i);
                }
                Vec.Store(Y + i, v);
            }
            for (; i < end; i++)
            {
                float x = X[i], cdf = 0.5f * (1f + Erf(x * 0.70710678118654752f));
                if (!Backward) Y[i] = x * cdf;
                else
                {
                    float v = Dy[i] * (cdf + x * 0.39894228040143268f * MathF.Exp(-0.5f * x * x));
                    Y[i] = Accumulate ? Y[i] + v : v;
                }
            }
        }
    }

    /// <summary>erf with |error| ≤ 1.5e-7 (Abramowitz and Stegun 7.1.26), odd-symmetric.</summary>
    static Vector<float> Erf(Vector<float> x)
    {
        var ax = Vector.Abs(x);
        var t = Vector<float>.One / (Vector<float>.One + new Vector<float>(0.3275911f) * ax);
        var poly = new Vector<float>(1.061405429f);
        poly = poly * t + new Vector<float>(-1.453152027f);
        poly = poly * t + new Vector<float>(1.421413741f);
        poly = poly * t + new Vector<float>(-0.284496736f);
        poly = poly * t + new Vector<float>(0.254829592f);
        var r = Vector<float>.One - poly * t * Vector.Exp(-ax * ax);
        return Vector.ConditionalSelect(Vector.LessThan(x, Vector<float>.Zero), -r, r);
    }

    static float Erf(float x)
    {
        float ax = MathF.Abs(x), t = 1f / (1f + 0.3275911f * ax);
        float poly = (((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f;
        float r = 1f - poly * t * MathF.Exp(-ax * ax);
        return x < 0 ? -r : r;
    }

    // ---------------------------------------------------------------- scale-shift (SSF)

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
    public void ScaleShiftBackward(float* dx, float* dscale, float* dshift, float* dy, float* x, float* scale, int rows, int C, bool accumulate)
    {
        var body = new ScaleShiftBackwardBody
        {
            Dx = dx, Dy = dy, X = x, Scale = scale, C = C, Rows = rows, Accumulate = accumulate, Grain = ReductionGrain(rows),
            ParamGrads = dscale != null || dshift != null,
        };
        int chunks = CpuRange.Chunks(rows, body.Grain);
        if (body.ParamGrads) body.Partials = Partials(chunks, 2L * C);
        CpuParallel.For(chunks, ref body);
        if (!body.ParamGrads) return;
        SumPairPartials(dscale, dshift, body.Partials, chunks, C);
    }

    struct ScaleShiftBackwardBody : IParallelBody
    {
        public float* Dx, Dy, X, Scale, Partials;
        public int C, Rows, Grain;
        public bool Accumulate, ParamGrads;
        public void Run(int chunk)
        {
            float* ds = ParamGrads ? Partials + (long)chunk * 2 * C : null, db = ds + C;
            if (ParamGrads) new Span<float>(ds, 2 * C).Clear();
            int end = Math.Min(Rows, (chunk + 1) * Grain);
            int vectorEnd = C - C % Vector<float>.Count;
            for (long r = (long)chunk * Grain; r < end; r++)
            {
                float* x = X + r * C, dy = Dy + r * C, dx = Dx == null ? null : Dx + r * C;
                if (ParamGrads)
                {
                    for (int i = 0; i < vectorEnd; i += Vector<float>.Count)
                    {
                        var g = Vec.Load(dy + i);
                        Vec.Store(ds + i, Vec.Load(ds + i) + g * Vec.Load(x + i));
                        Vec.Store(db + i, Vec.Load(db + i) + g);
                    }
                    for (int i = vectorEnd; i < C; i++)
                    {
                        ds[i] += dy[i] * x[i];
                        db[i] += dy[i];
                    }
                }
                if (dx == null) continue;
                for (int i = 0; i < vectorEnd; i += Vector<float>.Count)
                {
                    var g = Vec.Load(dy + i) * Vec.Load(Scale + i);
                    Vec.Store(dx + i, Accumulate ? Vec.Load(dx + i) + g : g);
                }
                for (int i = vectorEnd; i < C; i++) dx[i] = Accumulate ? dx[i] + dy[i] * Scale[i] : dy[i] * Scale[i];
            }
        }
    }
}
