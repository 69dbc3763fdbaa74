using MathNet.Numerics;

namespace Engine.Conformance;

/// <summary>Straightforward double-precision reference implementations, written from the math, not from the kernels.</summary>
public static class Reference
{
    /// <summary>LoRA on a slice of a Linear output: y [rows, N] with scale·(x·Aᵀ)·Bᵀ added at columns
    /// [column, column + n); x [rows, K], A [r, K], B [n, r].</summary>
    public static double[] Lora(double[] y, double[] x, double[] a, double[] b, double scale, int column, int rows, int N, int K, int r)
    {
        int n = b.Length / r;
        var z = (double[])y.Clone();
        for (int t = 0; t < rows; t++)
            for (int q = 0; q < r; q++)
            {
                double h = 0;
                for (int k = 0; k < K; k++) h += x[t * K + k] * a[q * K + k];
                for (int j = 0; j < n; j++) z[t * N + column + j] += scale * b[j * r + q] * h;
            }
        return z;
    }

    /// <summary>y [rows,N] = x [rows,K] · Wᵀ + b.</summary>
    public static double[] Linear(double[] x, double[] w, double[]? b, int rows, int N, int K)
    {
        var y = new double[rows * N];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < N; o++)
            {
                double s = b?[o] ?? 0;
                for (int k = 0; k < K; k++) s += x[r * K + k] * w[o * K + k];
                y[r * N + o] = s;
            }
        return y;
    }

    /// <summary>LayerNorm over rows of C with biased variance.</summary>
    public static double[] LayerNorm(double[] x, double[]? w, double[]? b, int rows, int C, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double mean = 0, var = 0;
            for (int c = 0; c < C; c++) mean += x[r * C + c];
            mean /= C;
            for (int c = 0; c < C; c++) var += (x[r * C + c] - mean) * (x[r * C + c] - mean);
            var /= C;
            for (int c = 0; c < C; c++)
                y[r * C + c] = (x[r * C + c] - mean) / Math.Sqrt(var + eps) * (w?[c] ?? 1) + (b?[c] ?? 0);
        }
        return y;
    }

    /// <summary>Exact GELU 0.5·x·(1 + erf(x/√2)).</summary>
    public static double[] Gelu(double[] x) => x.Select(v => 0.5 * v * (1 + SpecialFunctions.Erf(v / Math.Sqrt(2)))).ToArray();

    /// <summary>Row softmax of (x + add), add indexed by (row, column) or null.</summary>
    public static double[] Softmax(double[] x, int rows, int cols, Func<int, int, double>? add = null)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double max = double.NegativeInfinity;
            for (int j = 0; j < cols; j++) max = Math.Max(max, x[r * cols + j] + (add?.Invoke(r, j) ?? 0));
            double sum = 0;
            for (int j = 0; j < cols; j++) sum += y[r * cols + j] = Math.Exp(x[r * cols + j] + (add?.Invoke(r, j) ?? 0) - max);
            for (int j = 0; j < cols; j++) y[r * cols + j] /= sum;
        }
        return y;
    }

    /// <summary>timm attention from qkv [B,T,3,NH,HD]: per head softmax(scale·q·kᵀ + bias[h] + mask[b mod nW])·v.</summary>
    public static double[] Attention(double[] qkv, int B, int T, int NH, int HD, double[]? bias, double[]? mask, int nW)
    {
        int C = NH * HD;
        double scale = 1 / Math.Sqrt(HD);
        var y = new double[B * T * C];
        double Q(int b, int t, int s, int h, int d) => qkv[((b * T + t) * 3 + s) * C + h * HD + d];
        var p = new double[T];
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < T; i++)
                {
                    double max = double.NegativeInfinity;
                    for (int j = 0; j < T; j++)
                    {
                        double s = 0;
                        for (int d = 0; d < HD; d++) s += Q(b, i, 0, h, d) * Q(b, j, 1, h, d);
                        s = s * scale + (bias?[(h * T + i) * T + j] ?? 0) + (mask?[(b % nW * T + i) * T + j] ?? 0);
                        p[j] = s;
                        max = Math.Max(max, s);
                    }
                    double sum = 0;
                    for (int j = 0; j < T; j++) sum += p[j] = Math.Exp(p[j] - max);
                    for (int d = 0; d < HD; d++)
                    {
                        double o = 0;
                        for (int j = 0; j < T; j++) o += p[j] / sum * Q(b, j, 2, h, d);
                        y[(b * T + i) * C + h * HD + d] = o;
                    }
                }
        return y;
    }

    /// <summary>Mean label-smoothed cross-entropy: −Σ_j q_j·log softmax(x)_j, q = (1−ε)·onehot + ε/V.</summary>
    public static double CrossEntropy(double[] logits, int[] targets, int B, int V, double eps)
    {
        double total = 0;
        for (int b = 0; b < B; b++)
        {
            double max = logits.Skip(b * V).Take(V).Max(), sum = 0;
            for (int j = 0; j < V; j++) sum += Math.Exp(logits[b * V + j] - max);
            double lse = max + Math.Log(sum);
            for (int j = 0; j < V; j++)
            {
                double q = eps / V + (j == targets[b] ? 1 - eps : 0);
                total -= q * (logits[b * V + j] - lse);
            }
        }
        return total / B;
    }

    /// <summary>Depthwise conv, stride 1, zero padding; x [N,H,W,C], w [C,k,k], b [C].</summary>
    public static double[] DepthwiseConv(double[] x, double[] w, double[]? b, int N, int H, int W, int C, int k, int pad)
    {
        int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
        var y = new double[N * Ho * Wo * C];
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++)
                    for (int c = 0; c < C; c++)
                    {
                        double s = b?[c] ?? 0;
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++)
                            {
                                int iy = oy + ky - pad, ix = ox + kx - pad;
                                if (iy >= 0 && iy < H && ix >= 0 && ix < W) s += w[(c * k + ky) * k + kx] * x[((n * H + iy) * W + ix) * C + c];
                            }
                        y[((n * Ho + oy) * Wo + ox) * C + c] = s;
                    }
        return y;
    }

    /// <summary>Conv with kernel = stride = p written as a direct convolution: x NCHW or NHWC, w [O,C,p,p] →
    /// [N, (H/p)·(W/p), O] (bias optional).</summary>
    public static double[] PatchConv(double[] x, double[] w, double[]? b, int N, int C, int H, int W, int p, int O, bool channelsLast)
    {
        int Hp = H / p, Wp = W / p;
        var y = new double[N * Hp * Wp * O];
        for (int n = 0; n < N; n++)
            for (int py = 0; py < Hp; py++)
                for (int px = 0; px < Wp; px++)
                    for (int o = 0; o < O; o++)
                    {
                        double s = b?[o] ?? 0;
                        for (int c = 0; c < C; c++)
                            for (int ky = 0; ky < p; ky++)
                                for (int kx = 0; kx < p; kx++)
                                {
                                    int iy = py * p + ky, ix = px * p + kx;
                                    double xv = channelsLast ? x[((n * H + iy) * W + ix) * C + c] : x[((n * C + c) * H + iy) * W + ix];
                                    s += w[((o * C + c) * p + ky) * p + kx] * xv;
                                }
                        y[((n * Hp + py) * Wp + px) * O + o] = s;
                    }
        return y;
    }

    /// <summary>torch.roll(x, (−shift, −shift), (1, 2)) then timm's window_partition: x [B,H,W,C] → [B·nW, ws², C].</summary>
    public static double[] WindowPartition(double[] x, int B, int H, int W, int C, int ws, int shift)
    {
        var rolled = new double[x.Length];
        for (int b = 0; b < B; b++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++)
                    for (int c = 0; c < C; c++)
                        rolled[((b * H + i) * W + j) * C + c] = x[((b * H + (i + shift) % H) * W + (j + shift) % W) * C + c];
        // view [B, H/ws, ws, W/ws, ws, C] → permute (0,1,3,2,4,5)
        var y = new double[x.Length];
        int idx = 0;
        for (int b = 0; b < B; b++)
            for (int wr = 0; wr < H / ws; wr++)
                for (int wc = 0; wc < W / ws; wc++)
                    for (int ty = 0; ty < ws; ty++)
                        for (int tx = 0; tx < ws; tx++)
                            for (int c = 0; c < C; c++)
                                y[idx++] = rolled[((b * H + wr * ws + ty) * W + wc * ws + tx) * C + c];
        return y;
    }

    /// <summary>Patch merging: x [B,H,W,C] → [B,H/2,W/2,4C] with x0 = x[0::2,0::2], x1 = x[1::2,0::2],
    /// x2 = x[0::2,1::2], x3 = x[1::2,1::2] concatenated (the original Swin code).</summary>
    public static double[] PatchMerge(double[] x, int B, int H, int W, int C)
    {
        var y = new double[x.Length];
        int[][] offsets = [[0, 0], [1, 0], [0, 1], [1, 1]];
        for (int b = 0; b < B; b++)
            for (int i = 0; i < H / 2; i++)
                for (int j = 0; j < W / 2; j++)
                    for (int q = 0; q < 4; q++)
                        for (int c = 0; c < C; c++)
                            y[(((b * (H / 2) + i) * (W / 2) + j) * 4 + q) * C + c] =
                                x[((b * H + 2 * i + offsets[q][0]) * W + 2 * j + offsets[q][1]) * C + c];
        return y;
    }

    /// <summary>Swin's relative position bias the way timm builds it: coords [2, T], relative = coords[:, :, None] −
    /// coords[:, None, :], shifted by ws−1, row offset times 2ws−1, summed into an index [T, T]; bias[h,i,j] =
    /// table[index[i,j], h].</summary>
    public static double[] RelativePositionBias(double[] table, int NH, int ws)
    {
        int T = ws * ws;
        var ys = Enumerable.Range(0, T).Select(t => t / ws).ToArray();
        var xs = Enumerable.Range(0, T).Select(t => t % ws).ToArray();
        var bias = new double[NH * T * T];
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++)
            {
                int index = (ys[i] - ys[j] + ws - 1) * (2 * ws - 1) + (xs[i] - xs[j] + ws - 1);
                for (int h = 0; h < NH; h++) bias[(h * T + i) * T + j] = table[index * NH + h];
            }
        return bias;
    }

    /// <summary>SCT's module: y = x, then y[r, index[j]] += Σ_i W[j,i]·x[r, index[i]] + b[j].</summary>
    public static double[] ChannelAdapter(double[] x, int[] index, double[] w, double[]? b, int rows, int C)
    {
        int K = index.Length;
        var y = (double[])x.Clone();
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < K; j++)
            {
                double s = b?[j] ?? 0;
                for (int i = 0; i < K; i++) s += w[j * K + i] * x[r * C + index[i]];
                y[r * C + index[j]] += s;
            }
        return y;
    }

    /// <summary>Rows divided by max(‖row‖₂, eps).</summary>
    public static double[] L2Normalize(double[] x, int rows, int C, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double n = Math.Max(Math.Sqrt(Enumerable.Range(0, C).Sum(c => x[r * C + c] * x[r * C + c])), eps);
            for (int c = 0; c < C; c++) y[r * C + c] = x[r * C + c] / n;
        }
        return y;
    }

    /// <summary>Supervised contrastive loss from similarities s [N,N] (the definition, in double): the mean over anchors
    /// i of −mean_{p≠i, same label} log(exp(s_ip/τ) / Σ_{a≠i} exp(s_ia/τ)); anchors without positives add 0.</summary>
    public static double SupCon(double[] s, int[] labels, double temperature)
    {
        int N = labels.Length;
        double total = 0;
        for (int i = 0; i < N; i++)
        {
            double denominator = 0, sum = 0;
            int positives = 0;
            for (int a = 0; a < N; a++)
                if (a != i) denominator += Math.Exp(s[i * N + a] / temperature);
            for (int p = 0; p < N; p++)
                if (p != i && labels[p] == labels[i])
                {
                    sum += Math.Log(Math.Exp(s[i * N + p] / temperature) / denominator);
                    positives++;
                }
            if (positives > 0) total -= sum / positives;
        }
        return total / N;
    }
}
