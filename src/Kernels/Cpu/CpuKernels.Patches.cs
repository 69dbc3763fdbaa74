using System.Runtime.CompilerServices;
using System.Numerics;

namespace Engine.Kernels.Cpu;

// Patch layout kernels on the CPU (cuda/patches.cu): patchify (patch embedding and strided downsampling; NCHW or
// channels-last input) and Swin's 2×2 patch merging.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void Patchify(float* patches, float* x, int N, int C, int H, int W, int p, bool channelsLast)
    {
        var body = new PatchBody { Patches = patches, X = x, C = C, H = H, W = W, P = p, ChannelsLast = channelsLast };
        CpuParallel.For(N * (H / p), ref body);
    }

    /// <inheritdoc/>
    public void PatchifyBackward(float* dx, float* dpatches, int N, int C, int H, int W, int p, bool channelsLast, bool accumulate)
    {
        var body = new PatchBody
        {
            Patches = dpatches, X = dx, C = C, H = H, W = W, P = p, ChannelsLast = channelsLast, Scatter = true, Accumulate = accumulate,
        };
        CpuParallel.For(N * (H / p), ref body);
    }

    /// <summary>One row of patches (n, py). Gather: patches ← x; scatter: x ← patches (each pixel in one patch).</summary>
    struct PatchBody : IParallelBody
    {
        public float* Patches, X;
        public int C, H, W, P;
        public bool ChannelsLast, Scatter, Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int row)
        {
            int Hp = H / P, Wp = W / P, n = row / Hp, py = row % Hp, K = C * P * P;
            for (int px = 0; px < Wp; px++)
            {
                float* patch = Patches + ((long)n * Hp * Wp + (long)py * Wp + px) * K;
                if (!ChannelsLast)
                {
                    // NCHW: each (c, ky) of the patch is P contiguous pixels of one image row.
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < P; ky++)
                        {
                            float* patchRow = patch + (c * P + ky) * P, imageRow = X + (((long)n * C + c) * H + py * P + ky) * W + px * P;
                            MoveRow(Scatter ? imageRow : patchRow, Scatter ? patchRow : imageRow, P, Scatter && Accumulate);
                        }
                    continue;
                }
                // Channels-last: pixel (ky, kx)'s C contiguous channels go to every P²-th element of the patch.
                int pp = P * P;
                for (int ky = 0; ky < P; ky++)
                    for (int kx = 0; kx < P; kx++)
                    {
                        float* pixel = X + (((long)n * H + py * P + ky) * W + px * P + kx) * C, pv = patch + ky * P + kx;
                        if (!Scatter) for (int c = 0; c < C; c++) pv[c * pp] = pixel[c];
                        else if (Accumulate) for (int c = 0; c < C; c++) pixel[c] += pv[c * pp];
                        else for (int c = 0; c < C; c++) pixel[c] = pv[c * pp];
                    }
            }
        }
    }

    /// <inheritdoc/>
    public void PatchMerge(float* y, float* x, int B, int H, int W, int C)
    {
        var body = new PatchMergeBody { Y = y, X = x, H = H, W = W, C = C };
        CpuParallel.For(B * (H / 2), ref body);
    }

    /// <inheritdoc/>
    public void PatchMergeBackward(float* dx, float* dy, int B, int H, int W, int C, bool accumulate)
    {
        var body = new PatchMergeBody { Y = dy, X = dx, H = H, W = W, C = C, Scatter = true, Accumulate = accumulate };
        CpuParallel.For(B * (H / 2), ref body);
    }

    /// <summary>One output row (b, i): y[b,i,j, q·C..] ↔ x[b, 2i+dy_q, 2j+dx_q] with q = 0..3 ↦ (0,0),(1,0),(0,1),(1,1).</summary>
    struct PatchMergeBody : IParallelBody
    {
        public float* Y, X;
        public int H, W, C;
        public bool Scatter, Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int row)
        {
            int Ho = H / 2, Wo = W / 2, b = row / Ho, i = row % Ho;
            for (int j = 0; j < Wo; j++)
                for (int q = 0; q < 4; q++)
                {
                    int yy = 2 * i + (q & 1), xx = 2 * j + (q >> 1);
                    float* pix = X + (((long)b * H + yy) * W + xx) * C;
                    float* slot = Y + (((long)b * Ho + i) * Wo + j) * 4 * C + q * C;
                    MoveRow(Scatter ? pix : slot, Scatter ? slot : pix, C, Scatter && Accumulate);
                }
        }
    }
}
