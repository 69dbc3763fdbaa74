using System.Runtime.CompilerServices;
using System.Numerics;

namespace Engine.Kernels.Cpu;

// Swin's window kernels on the CPU (cuda/windows.cu): window partition/reverse with the cyclic shift, and the
// relative position bias gathered from its table (and its backward).
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void WindowPartition(float* windows, float* x, int B, int H, int W, int C, int ws, int shift, bool accumulate)
    {
        var body = new WindowBody { Windows = windows, X = x, H = H, W = W, C = C, Ws = ws, Shift = shift, ToWindows = true, Accumulate = accumulate };
        CpuParallel.For(B * (H / ws) * (W / ws), ref body);
    }

    /// <inheritdoc/>
    public void WindowReverse(float* x, float* windows, int B, int H, int W, int C, int ws, int shift, bool accumulate)
    {
        var body = new WindowBody { Windows = windows, X = x, H = H, W = W, C = C, Ws = ws, Shift = shift, Accumulate = accumulate };
        CpuParallel.For(B * (H / ws) * (W / ws), ref body);
    }

    /// <summary>One window: token (ty,tx) of window (b,wr,wc) ↔ pixel (b, (wr·ws+ty+shift) mod H, (wc·ws+tx+shift) mod W).</summary>
    struct WindowBody : IParallelBody
    {
        public float* Windows, X;
        public int H, W, C, Ws, Shift;
        public bool ToWindows, Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int window)
        {
            int nWw = W / Ws, nW = H / Ws * nWw, b = window / nW, wr = window % nW / nWw, wc = window % nWw;
            for (int ty = 0; ty < Ws; ty++)
                for (int tx = 0; tx < Ws; tx++)
                {
                    int y = (wr * Ws + ty + Shift) % H, xx = (wc * Ws + tx + Shift) % W;
                    float* pix = X + (((long)b * H + y) * W + xx) * C;
                    float* tok = Windows + ((long)window * Ws * Ws + ty * Ws + tx) * C;
                    MoveRow(ToWindows ? tok : pix, ToWindows ? pix : tok, C, Accumulate);
                }
        }
    }

    /// <inheritdoc/>
    public void RelativePositionBias(float* bias, float* table, int NH, int ws)
    {
        var body = new RelativeBiasBody { Bias = bias, Table = table, NH = NH, Ws = ws };
        CpuParallel.For(NH, ref body);
    }

    /// <inheritdoc/>
    public void RelativePositionBiasBackward(float* dtable, float* dbias, int NH, int ws, bool accumulate)
    {
        var body = new RelativeBiasBody { Bias = dbias, Table = dtable, NH = NH, Ws = ws, Scatter = true, Accumulate = accumulate };
        CpuParallel.For(NH, ref body);
    }

    /// <summary>One head h: gathers bias[h] [T,T] from column h of the table, or sums dbias[h] into it per entry
    /// (each entry (dy,dx) receives the token pairs with yi−yj = dy, xi−xj = dx).</summary>
    struct RelativeBiasBody : IParallelBody
    {
        public float* Bias, Table;
        public int NH, Ws;
        public bool Scatter, Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int h)
        {
            int T = Ws * Ws, side = 2 * Ws - 1;
            float* bias = Bias + (long)h * T * T;
            if (!Scatter)
            {
                // Token i = (yi, xi), j = (yj, xj): entry (yi − yj + Ws − 1, xi − xj + Ws − 1), walked without divisions.
                for (int yi = 0, i = 0; yi < Ws; yi++)
                    for (int xi = 0; xi < Ws; xi++, i++)
                    {
                        float* row = bias + (long)i * T;
                        for (int yj = 0, j = 0; yj < Ws; yj++)
                        {
                            float* entry = Table + ((long)(yi - yj + Ws - 1) * side + xi + Ws - 1) * NH + h; // at xj = 0
                            for (int xj = 0; xj < Ws; xj++, j++) row[j] = entry[-(long)xj * NH];
                        }
                    }
                return;
            }
            for (int dy = 1 - Ws; dy < Ws; dy++)
                for (int dx = 1 - Ws; dx < Ws; dx++)
                {
                    float sum = 0f;
                    for (int yi = Math.Max(0, dy); yi < Math.Min(Ws, Ws + dy); yi++)
                        for (int xi = Math.Max(0, dx); xi < Math.Min(Ws, Ws + dx); xi++)
                            sum += bias[(yi * Ws + xi) * T + (yi - dy) * Ws + xi - dx];
                    float* entry = Table + ((dy + Ws - 1) * side + dx + Ws - 1) * NH + h;
                    *entry = Accumulate ? *entry + sum : sum;
                }
        }
    }
}
