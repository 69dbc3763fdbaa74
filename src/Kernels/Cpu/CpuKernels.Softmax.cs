using System.Runtime.CompilerServices;
using System.Numerics;

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
    struct SoftmaxRowsBody : IRangeBody
    {
        public float* Y, X, Bias, Mask;
        public int Cols, HeadRows, Heads, Windows;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SoftmaxRow(float* y, float* x, float* a, float* b, int cols)
    {
        int i = 0;
        var vmax = new Vector<float>(float.NegativeInfinity);
        for (; i + Vector<float>.Count <= cols; i += Vector<float>.Count)
        {
            var z = Vec.Load(x + i);
            if (a != null) z += Vec.Load(a + i);
            if (b != null) z += Vec.Load(b + i);
            Vec.Store(y + i, z);
            vmax = Vector.MaxNative(vmax, z);
        }
        float max = float.NegativeInfinity;
        for (int j = 0; j < Vector<float>.Count; j++) max = MathF.Max(max, vmax[j]);
        for (; i < cols; i++)
        {
            float z = x[i] + (a == null ? 0f : a[i]) + (b == null ? 0f : b[i]);
            y[i] = z;
            if (z > max) max = z;
        }
        vmax = new Vector<float>(max);
        var acc = Vector<float>.Zero;
        i = 0;
        for (; i + Vector<float>.Count <= cols; i += Vector<float>.Count)
        {
            var e = Vec.Exp(Vec.Load(y + i) - vmax);
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
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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

    /// <inheritdoc/>
    public void AttentionSoftmaxForward(float* p, float* s, float* bias, float* mask, int B, int NH, int T, int nW)
    {
        var body = new SoftmaxRowsBody { Y = p, X = s, Bias = bias, Mask = mask, Cols = T, HeadRows = T, Heads = NH, Windows = nW };
        CpuRange.For((long)B * NH * T, Math.Max(1, ElementGrain / T), ref body);
    }
}
