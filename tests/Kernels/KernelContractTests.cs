using Engine.Kernels;

namespace Engine.Tests;

/// <summary>
/// The kernel interface's contract on every backend, called directly: activation gradients are written
/// (whatever the buffer held) or, with accumulate, added onto what it held; parameter gradients always add; and
/// the host-returning reductions agree with double-precision sums over many blocks. Values are checked by the
/// per-op gradchecks; this checks the write/accumulate semantics the engine relies on for the residual stream.
/// </summary>
[TestFixture]
public unsafe class KernelContractTests
{
    static IEnumerable<string> All => Backends.Names;

    delegate void WriteKernel(float* output, bool accumulate);
    delegate void AddKernel(float* gradient);

    /// <summary>Random device tensor of the given shape, values in [low, high).</summary>
    static Tensor Random(Device dev, ulong seed, int n, double low = -1, double high = 1) =>
        Tensor.FromArray(dev, Enumerable.Range(0, n).Select(i => (float)(low + (high - low) * CounterRng.Uniform(seed, (ulong)i))).ToArray(), n);

    /// <summary>run(output, accumulate) must overwrite garbage when not accumulating, and give prior + written when it is.</summary>
    static void AssertWritesOrAccumulates(Device dev, string kernel, int n, WriteKernel run)
    {
        using var first = Random(dev, 11, n, -50, 50);
        using var second = Random(dev, 12, n, -50, 50);
        using var accumulated = Random(dev, 13, n);
        var prior = accumulated.ToArray();
        run(first.Data, false);
        run(second.Data, false);
        run(accumulated.Data, true);
        var written = first.ToArray();
        Assert.That(second.ToArray(), Is.EqualTo(written), $"{kernel}: the written gradient depends on what the buffer held");
        var sum = accumulated.ToArray();
        for (int i = 0; i < n; i++)
            Assert.That(sum[i], Is.EqualTo(prior[i] + written[i]).Within(1e-6 * (1 + Math.Abs(written[i]))), $"{kernel}: accumulate, element {i}");
    }

    /// <summary>run(gradient) must add onto the gradient (parameter gradients accumulate across micro-batches).</summary>
    static void AssertAddsInto(Device dev, string kernel, int n, AddKernel run)
    {
        using var zero = Tensor.Zeros(dev, n);
        using var accumulated = Random(dev, 14, n);
        var prior = accumulated.ToArray();
        run(zero.Data);
        run(accumulated.Data);
        var delta = zero.ToArray();
        var sum = accumulated.ToArray();
        for (int i = 0; i < n; i++)
            Assert.That(sum[i], Is.EqualTo(prior[i] + delta[i]).Within(1e-5 * (1 + Math.Abs(delta[i]))), $"{kernel}: element {i}");
    }

    [TestCaseSource(nameof(All))]
    public void ActivationGradientsAreWrittenOrAccumulated(string backend)
    {
        var dev = Backends.Get(backend);
        var k = dev.Kernels;
        const int B = 2, T = 5, NH = 2, HD = 3, C = NH * HD, rows = B * T;
        using var a = Random(dev, 1, 4 * B * T * 3 * C);
        using var b = Random(dev, 2, 4 * B * T * 3 * C);
        using var positive = Random(dev, 3, 4 * B * T * 3 * C, 0.5, 2);
        float* x = a.Data, dy = b.Data, w = positive.Data;
        using var targets = Tensor.FromArray(dev, [1, 0, 4, 2, 3, 3, 0, 1, 2, 4], rows);

        AssertWritesOrAccumulates(dev, "Copy", 37, (o, acc) => k.Copy(o, x, 37, acc));
        AssertWritesOrAccumulates(dev, "GeluBackward", 37, (o, acc) => k.GeluBackward(o, null, dy, x, 37, acc));
        AssertWritesOrAccumulates(dev, "SoftmaxBackward", rows * 7, (o, acc) => k.SoftmaxBackward(o, null, dy, w, rows, 7, acc));
        AssertWritesOrAccumulates(dev, "LayerNormBackward", rows * C, (o, acc) => k.LayerNormBackward(o, null, null, null, dy, x, w, x, w, rows, C, acc));
        AssertWritesOrAccumulates(dev, "ScaleShiftBackward", rows * C, (o, acc) => k.ScaleShiftBackward(o, null, null, null, dy, x, w, rows, C, acc));
        AssertWritesOrAccumulates(dev, "SplitHeadsBackward", rows * 3 * C, (o, acc) => k.SplitHeadsBackward(o, null, x, dy, w, B, T, NH, HD, acc));
        AssertWritesOrAccumulates(dev, "MergeHeadsBackward", rows * C, (o, acc) => k.MergeHeadsBackward(o, null, dy, B, T, NH, HD, acc));
        // Head dim 4 (C = 8): the head permutes' four-value path on CUDA.
        AssertWritesOrAccumulates(dev, "SplitHeadsBackward HD4", rows * 3 * 8, (o, acc) => k.SplitHeadsBackward(o, null, x, dy, w, B, T, 2, 4, acc));
        AssertWritesOrAccumulates(dev, "MergeHeadsBackward HD4", rows * 8, (o, acc) => k.MergeHeadsBackward(o, null, dy, B, T, 2, 4, acc));
        AssertWritesOrAccumulates(dev, "CrossEntropyBackward", rows * 5, (o, acc) => k.CrossEntropyBackward(o, w, x, targets.IntData, rows, 5, 0.1f, acc));
        // 35 channels: pairs of vectors and a tail at every CPU width; rows of 5 outputs: the last group of four moved
        // back over the first, whose shared outputs must be added once.
        using (var convDy = Random(dev, 4, B * 4 * 5 * 35))
        using (var convW = Random(dev, 5, 35 * 9))
            AssertWritesOrAccumulates(dev, "DepthwiseConvBackward", B * 4 * 5 * 35,
                (o, acc) => k.DepthwiseConvBackward(o, null, null, convDy.Data, null, convW.Data, B, 4, 5, 35, 3, 1, acc));
        foreach (bool channelsLast in new[] { false, true })
            AssertWritesOrAccumulates(dev, "PatchifyBackward", B * 3 * 4 * 6, (o, acc) => k.PatchifyBackward(o, dy, B, 3, 4, 6, 2, channelsLast, acc));
        AssertWritesOrAccumulates(dev, "PrependTokenBackward", rows * C, (o, acc) => k.PrependTokenBackward(o, null, dy, B, T, C, acc));
        AssertWritesOrAccumulates(dev, "TakeTokenBackward", rows * C, (o, acc) => k.TakeTokenBackward(o, dy, B, T, C, 2, acc));
        AssertWritesOrAccumulates(dev, "MeanTokensBackward", rows * C, (o, acc) => k.MeanTokensBackward(o, dy, B, T, C, acc));
        AssertWritesOrAccumulates(dev, "WindowPartition", B * 6 * 4 * 2, (o, acc) => k.WindowPartition(o, dy, B, 6, 4, 2, 2, 1, acc));
        AssertWritesOrAccumulates(dev, "WindowReverse", B * 6 * 4 * 2, (o, acc) => k.WindowReverse(o, dy, B, 6, 4, 2, 2, 1, acc));
        AssertWritesOrAccumulates(dev, "PatchMergeBackward", B * 4 * 6 * 3, (o, acc) => k.PatchMergeBackward(o, dy, B, 4, 6, 3, acc));
        AssertWritesOrAccumulates(dev, "RelativePositionBiasBackward", 5 * 5 * 2, (o, acc) => k.RelativePositionBiasBackward(o, dy, 2, 3, acc));
        AssertWritesOrAccumulates(dev, "DropPathBackward", rows * C, (o, acc) => k.DropPathBackward(o, dy, rows, C, 0.4f, 9, null, acc));
    }

    [TestCaseSource(nameof(All))]
    public void ParameterGradientsAccumulate(string backend)
    {
        var dev = Backends.Get(backend);
        var k = dev.Kernels;
        const int B = 3, T = 4, C = 37, rows = B * T;
        using var a = Random(dev, 1, rows * (T + 1) * C);
        using var b = Random(dev, 2, rows * (T + 1) * C);
        using var positive = Random(dev, 3, rows * (T + 1) * C, 0.5, 2);
        float* x = a.Data, dy = b.Data, w = positive.Data;
        AssertAddsInto(dev, "BiasGrad", C, o => k.BiasGrad(o, dy, rows, C));
        AssertAddsInto(dev, "LayerNorm dweight", C, o => k.LayerNormBackward(null, null, o, null, dy, x, w, x, w, rows, C, false));
        AssertAddsInto(dev, "LayerNorm dbias", C, o => k.LayerNormBackward(null, null, null, o, dy, x, w, x, w, rows, C, false));
        AssertAddsInto(dev, "ScaleShift dscale", C, o => k.ScaleShiftBackward(null, null, o, null, dy, x, w, rows, C, false));
        AssertAddsInto(dev, "ScaleShift dshift", C, o => k.ScaleShiftBackward(null, null, null, o, dy, x, w, rows, C, false));
        AssertAddsInto(dev, "PrependToken dtoken", C, o => k.PrependTokenBackward(null, o, dy, B, T, C, false));
        AssertAddsInto(dev, "DepthwiseConv dw", C * 9, o => k.DepthwiseConvBackward(null, o, null, dy, x, w, B, 3, 4, C, 3, 1, false));
        AssertAddsInto(dev, "DepthwiseConv dbias", C, o => k.DepthwiseConvBackward(null, null, o, dy, x, w, B, 3, 4, C, 3, 1, false));
        using var taps = Tensor.FromArray(dev, [.. Enumerable.Range(0, C * 2).Select(e => (e * 5) % 9)], C, 2);
        AssertAddsInto(dev, "AddSelectedEntries", C * 2, o => k.AddSelectedEntries(o, dy, taps.IntData, C, 9, 2));
    }

    [TestCaseSource(nameof(All))]
    public void ReductionsFillAndScaleOverManyBlocks(string backend)
    {
        var dev = Backends.Get(backend);
        var k = dev.Kernels;
        const int n = 100_003;
        var values = Enumerable.Range(0, n).Select(i => (float)(CounterRng.Uniform(5, (ulong)i) * 4 - 2)).ToArray();
        values[17] = float.NaN;
        values[50_000] = float.PositiveInfinity;
        values[n - 1] = float.NegativeInfinity;
        using var t = Tensor.FromArray(dev, values, n);
        Assert.That(k.CountNonFinite(t.Data, n), Is.EqualTo(3));
        Assert.That(k.CountNonFinite(t.Data, 17), Is.Zero);
        double want = values.Take(17).Sum(v => (double)v * v);
        Assert.That(k.SumSquares(t.Data, 17), Is.EqualTo(want).Within(1e-12 * want));

        k.Fill(t.Data, n, 0.5f);
        k.Scale(t.Data, n - 3, 3f);
        var got = t.ToArray();
        Assert.That(got.Take(n - 3), Is.All.EqualTo(1.5f));
        Assert.That(got.Skip(n - 3), Is.All.EqualTo(0.5f));
        Assert.That(k.SumSquares(t.Data, n), Is.EqualTo((n - 3) * 2.25 + 3 * 0.25).Within(1e-9));
    }
    /// <summary>GELU and softmax far out in their arguments, where a fast exp is most likely to go wrong: GELU on
    /// [-60, 60] against MathNet's double erf (its gate Φ within 2.1e-7, exactly 0 or 1 from |x| = 5.6); softmax rows
    /// spanning ±200, rows with −∞ (masked) entries, and a NaN row that must stay NaN (a non-finite loss must be seen,
    /// not hidden).</summary>
    [TestCaseSource(nameof(All))]
    public void GeluAndSoftmaxHoldAtExtremeArguments(string backend)
    {
        var dev = Backends.Get(backend);
        if (dev is not CpuDevice)
        {
            CheckGeluAndSoftmaxAtExtremes(dev);
            return;
        }
        var saved = Engine.Kernels.Cpu.Simd.Width;
        try
        {
            foreach (var width in Enum.GetValues<Engine.Kernels.Cpu.SimdWidth>()) // every vector width the CPU kernels have
            {
                Engine.Kernels.Cpu.Simd.Width = width;
                CheckGeluAndSoftmaxAtExtremes(dev, width.ToString());
            }
        }
        finally { Engine.Kernels.Cpu.Simd.Width = saved; }
    }

    static void CheckGeluAndSoftmaxAtExtremes(Device dev, string width = "")
    {
        var k = dev.Kernels;
        const int n = 4801;
        var xs = Enumerable.Range(0, n).Select(i => -60f + 120f * i / (n - 1)).ToArray();
        using var x = Tensor.FromArray(dev, xs, n);
        using var y = Tensor.Zeros(dev, n);
        k.GeluForward(y.Data, null, x.Data, n);
        var gelu = y.ToArray();
        for (int i = 0; i < n; i++)
        {
            double want = 0.5 * xs[i] * (1 + MathNet.Numerics.SpecialFunctions.Erf(xs[i] / Math.Sqrt(2)));
            // Φ within 2.1e-7 (GELU = x·Φ, so the error scales with |x|); exactly 0 and x where Φ rounds to 0 and 1.
            if (Math.Abs(xs[i]) >= 5.6) Assert.That(gelu[i], Is.EqualTo(xs[i] < 0 ? 0f : xs[i]), $"{width} GELU({xs[i]})");
            else Assert.That(gelu[i], Is.EqualTo(want).Within(1e-9 + 2.5e-7 * Math.Abs(xs[i])), $"{width} GELU({xs[i]})");
        }

        const int rows = 4, cols = 37;
        var logits = new float[rows * cols];
        for (int j = 0; j < cols; j++)
        {
            logits[j] = -200f + 400f * j / (cols - 1);                               // row 0: a span of ±200
            logits[cols + j] = j % 3 == 0 ? float.NegativeInfinity : 0.25f * j;      // row 1: masked entries
            logits[2 * cols + j] = j == 5 ? float.NaN : j;                           // row 2: one NaN
            logits[3 * cols + j] = -90f - 0.1f * j;                                  // row 3: all below exp's range
        }
        using var z = Tensor.FromArray(dev, logits, rows * cols);
        using var p = Tensor.Zeros(dev, rows * cols);
        k.SoftmaxForward(p.Data, z.Data, rows, cols);
        var got = p.ToArray();
        foreach (int r in new[] { 0, 1, 3 })
        {
            var row = logits.Skip(r * cols).Take(cols).Select(v => (double)v).ToArray();
            double max = row.Max(), sum = row.Sum(v => Math.Exp(v - max));
            for (int j = 0; j < cols; j++)
            {
                double want = Math.Exp(row[j] - max) / sum;
                Assert.That(got[r * cols + j], Is.EqualTo(want).Within(1e-6 * want + 1e-30), $"{width} softmax row {r}, column {j}");
            }
        }
        Assert.That(got.Skip(2 * cols).Take(cols), Is.All.NaN, $"{width}: a NaN logit makes its whole softmax row NaN");
    }
    /// <summary>LinearForward (the bias and the residual added in the GEMM's store on the CPU) gives exactly a GEMM
    /// followed by the bias add and the residual add, with and without a bias and a residual; K spans several of the CPU
    /// GEMM's K blocks and the tiles are partial.</summary>
    [TestCaseSource(nameof(All))]
    public void LinearForwardIsGemmThenBiasAdd(string backend)
    {
        var dev = Backends.Get(backend);
        var k = dev.Kernels;
        foreach (var (rows, N, K) in new[] { (29, 45, 600), (197, 96, 64), (3, 5, 7) })
        {
            using var x = Random(dev, 21, rows * K);
            using var w = Random(dev, 22, N * K);
            using var bias = Random(dev, 23, N);
            using var residual = Random(dev, 25, rows * N, -3, 3);
            using var fused = Random(dev, 24, rows * N, -50, 50);
            using var separate = Tensor.Zeros(dev, rows * N);
            foreach (bool withBias in new[] { true, false })
            foreach (bool withResidual in new[] { false, true })
            {
                float* b = withBias ? bias.Data : null, r = withResidual ? residual.Data : null;
                k.LinearForward(fused.Data, null, x.Data, null, w.Data, b, r, rows, N, K);
                k.Gemm(false, true, rows, N, K, 1f, x.Data, K, w.Data, K, 0f, separate.Data, N);
                if (withBias) k.AddBias(separate.Data, separate.Data, b, rows, N);
                if (withResidual) k.Add(separate.Data, r, separate.Data, (long)rows * N);
                Assert.That(fused.ToArray(), Is.EqualTo(separate.ToArray()), $"{rows}×{N}×{K}, bias {withBias}, residual {withResidual}");
            }
        }
    }
    /// <summary>The CPU's depthwise convolution, forward and backward (dx, dw, dbias), at every vector width it has,
    /// against double-precision loops: 61 channels (pairs of vectors, a single vector and a scalar tail at each width),
    /// rows of 9 outputs (two groups of four, the last moved back over the one before) and of 3 (one output at a time),
    /// zero padding; 7×7 taps (one register block of a tap row's weight gradient) and 9×9 (a block of eight and one);
    /// on one thread and on two, with one image per task (N = 2) and with images cut into channel slices (N = 1, 3).</summary>
    [Test]
    public void DepthwiseConvAtEveryCpuWidth([Values(1, 2, 3)] int N, [Values(1, 2)] int threads, [Values(9, 3)] int W, [Values(7, 9)] int k)
    {
        var dev = Device.Cpu;
        const int H = 6, C = 61;
        int pad = k / 2, n = N * H * W * C;
        int savedThreads = Engine.Kernels.Cpu.CpuParallel.Threads;
        Engine.Kernels.Cpu.CpuParallel.Threads = threads;
        using var x = Random(dev, 31, n);
        using var w = Random(dev, 32, C * k * k);
        using var bias = Random(dev, 33, C);
        using var dy = Random(dev, 34, n);
        using var y = Tensor.Zeros(dev, n);
        using var dx = Tensor.Zeros(dev, n);
        using var dw = Tensor.Zeros(dev, C * k * k);
        using var db = Tensor.Zeros(dev, C);
        float[] xs = x.ToArray(), ws = w.ToArray(), bs = bias.ToArray(), gs = dy.ToArray();
        // References: y = bias + Σ w·x over the taps inside the image; dx scatters dy back through the same taps.
        var wantY = new double[n];
        var wantDx = new double[n];
        var wantDw = new double[C * k * k];
        var wantDb = new double[C];
        for (int b = 0; b < N; b++)
            for (int oy = 0; oy < H; oy++)
                for (int ox = 0; ox < W; ox++)
                    for (int c = 0; c < C; c++)
                    {
                        int o = ((b * H + oy) * W + ox) * C + c;
                        wantY[o] = bs[c];
                        wantDb[c] += gs[o];
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++)
                            {
                                int iy = oy + ky - pad, ix = ox + kx - pad;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                int i = ((b * H + iy) * W + ix) * C + c, t = (c * k + ky) * k + kx;
                                wantY[o] += (double)ws[t] * xs[i];
                                wantDx[i] += (double)ws[t] * gs[o];
                                wantDw[t] += (double)gs[o] * xs[i];
                            }
                    }
        var saved = Engine.Kernels.Cpu.Simd.Width;
        try
        {
            foreach (var width in Enum.GetValues<Engine.Kernels.Cpu.SimdWidth>())
            {
                Engine.Kernels.Cpu.Simd.Width = width;
                dev.Kernels.DepthwiseConvForward(y.Data, x.Data, w.Data, bias.Data, N, H, W, C, k, pad);
                dw.CopyFrom(new float[C * k * k]);
                db.CopyFrom(new float[C]);
                dev.Kernels.DepthwiseConvBackward(dx.Data, dw.Data, db.Data, dy.Data, x.Data, w.Data, N, H, W, C, k, pad, false);
                AssertClose(y.ToArray(), wantY, 1e-5, $"{width}: y");
                AssertClose(dx.ToArray(), wantDx, 1e-5, $"{width}: dx");
                AssertClose(dw.ToArray(), wantDw, 1e-4, $"{width}: dw");
                AssertClose(db.ToArray(), wantDb, 1e-4, $"{width}: dbias");
            }
        }
        finally
        {
            Engine.Kernels.Cpu.Simd.Width = saved;
            Engine.Kernels.Cpu.CpuParallel.Threads = savedThreads;
        }
    }

    static void AssertClose(float[] got, double[] want, double tolerance, string what)
    {
        for (int i = 0; i < got.Length; i++)
            Assert.That(got[i], Is.EqualTo(want[i]).Within(tolerance), $"{what}[{i}]");
    }
    /// <summary>The SSF backward at every CPU vector width against double loops: 37 columns (whole vectors and a scalar
    /// tail at each width), dx written or added, with both parameter gradients, only dshift (the scale frozen: x not
    /// read) and none; dscale and dshift are added into.</summary>
    [Test]
    public void ScaleShiftBackwardAtEveryCpuWidth([Values] bool accumulate, [Values(2, 1, 0)] int paramGrads)
    {
        using var g = new RowGradCase(accumulate, seed: 41);
        float[] xs = g.X.ToArray(), gs = g.Dy.ToArray(), ss = g.Vector.ToArray();
        for (int r = 0; r < RowGradCase.Rows; r++)
            for (int c = 0; c < RowGradCase.C; c++)
            {
                int i = r * RowGradCase.C + c;
                g.WantDx[i] += (double)gs[i] * ss[c];
                if (paramGrads == 2) g.WantP0[c] += (double)gs[i] * xs[i];
                if (paramGrads >= 1) g.WantP1[c] += gs[i];
            }
        g.Check(1e-6, (dx, dscale, dshift) => Device.Cpu.Kernels.ScaleShiftBackward(dx, null, paramGrads == 2 ? dscale : null,
            paramGrads >= 1 ? dshift : null, g.Dy.Data, paramGrads == 2 ? g.X.Data : null, g.Vector.Data, RowGradCase.Rows, RowGradCase.C, accumulate));
    }

    /// <summary>The backward of GELU after SSF at every CPU vector width against double loops: g = dy·GELU'(x·scale +
    /// shift), dx = g·scale written or added, dscale += Σ g·x and dshift += Σ g added into or not asked for.</summary>
    [Test]
    public void ScaleShiftGeluBackwardAtEveryCpuWidth([Values] bool accumulate, [Values] bool paramGrads)
    {
        using var g = new RowGradCase(accumulate, seed: 61);
        using var shift = Random(Device.Cpu, 67, RowGradCase.C);
        float[] xs = g.X.ToArray(), gs = g.Dy.ToArray(), ss = g.Vector.ToArray(), bs = shift.ToArray();
        for (int r = 0; r < RowGradCase.Rows; r++)
            for (int c = 0; c < RowGradCase.C; c++)
            {
                int i = r * RowGradCase.C + c;
                double z = (double)xs[i] * ss[c] + bs[c];
                double slope = 0.5 * (1 + MathNet.Numerics.SpecialFunctions.Erf(z / Math.Sqrt(2))) + z * Math.Exp(-0.5 * z * z) / Math.Sqrt(2 * Math.PI);
                double grad = gs[i] * slope;
                g.WantDx[i] += grad * ss[c];
                if (!paramGrads) continue;
                g.WantP0[c] += grad * xs[i];
                g.WantP1[c] += grad;
            }
        g.Check(1e-5, (dx, dscale, dshift) => Device.Cpu.Kernels.ScaleShiftGeluBackward(dx, null, paramGrads ? dscale : null,
            paramGrads ? dshift : null, g.Dy.Data, g.X.Data, g.Vector.Data, shift.Data, RowGradCase.Rows, RowGradCase.C, accumulate));
    }

    /// <summary>The LayerNorm backward at every CPU vector width against double loops: 37 columns (whole vectors and a
    /// scalar tail at each width), with and without a weight, dx written or added, the parameter gradients added into
    /// or not asked for.</summary>
    [Test]
    public void LayerNormBackwardAtEveryCpuWidth([Values] bool accumulate, [Values] bool weighted, [Values] bool paramGrads)
    {
        const int rows = RowGradCase.Rows, C = RowGradCase.C;
        using var g = new RowGradCase(accumulate, seed: 51);
        float[] xs = g.X.ToArray(), gs = g.Dy.ToArray(), ws = g.Vector.ToArray(), mean = new float[rows], rstd = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            double m = xs.Skip(r * C).Take(C).Average();
            mean[r] = (float)m;
            rstd[r] = (float)(1 / Math.Sqrt(xs.Skip(r * C).Take(C).Sum(v => (v - m) * (v - m)) / C + 1e-6));
            double XHat(int c) => ((double)xs[r * C + c] - mean[r]) * rstd[r];
            double G(int c) => (double)gs[r * C + c] * (weighted ? ws[c] : 1);
            double meanG = Enumerable.Range(0, C).Sum(G) / C, meanGx = Enumerable.Range(0, C).Sum(c => G(c) * XHat(c)) / C;
            for (int c = 0; c < C; c++)
            {
                g.WantDx[r * C + c] += rstd[r] * (G(c) - meanG - XHat(c) * meanGx);
                if (!paramGrads) continue;
                g.WantP0[c] += gs[r * C + c] * XHat(c);
                g.WantP1[c] += gs[r * C + c];
            }
        }
        using var meanT = Tensor.FromArray(Device.Cpu, mean, rows);
        using var rstdT = Tensor.FromArray(Device.Cpu, rstd, rows);
        g.Check(1e-5, (dx, dw, db) => Device.Cpu.Kernels.LayerNormBackward(dx, null, paramGrads ? dw : null, paramGrads ? db : null,
            g.Dy.Data, g.X.Data, weighted ? g.Vector.Data : null, meanT.Data, rstdT.Data, rows, C, accumulate));
    }

    /// <summary>The LayerNorm forward at every CPU vector width against double loops: 37 and 40 columns (pairs of
    /// vectors, a single vector and a scalar tail, depending on the width), rows offset by 100 (a one-pass variance would
    /// lose its digits), with and without weight and bias, mean and rstd kept or not.</summary>
    [Test]
    public void LayerNormForwardAtEveryCpuWidth([Values(37, 40)] int C, [Values] bool affine, [Values] bool keepStats)
    {
        const int rows = 70;
        using var x = Random(Device.Cpu, 71, rows * C);
        using var w = Random(Device.Cpu, 72, C);
        using var b = Random(Device.Cpu, 73, C);
        float[] xs = [.. x.ToArray().Select(v => v + 100f)], ws = w.ToArray(), bs = b.ToArray();
        x.CopyFrom(xs);
        using var y = Tensor.Zeros(Device.Cpu, rows * C);
        using var mean = Tensor.Zeros(Device.Cpu, rows);
        using var rstd = Tensor.Zeros(Device.Cpu, rows);
        var saved = Engine.Kernels.Cpu.Simd.Width;
        try
        {
            foreach (var width in Enum.GetValues<Engine.Kernels.Cpu.SimdWidth>())
            {
                Engine.Kernels.Cpu.Simd.Width = width;
                Device.Cpu.Kernels.LayerNormForward(y.Data, null, keepStats ? mean.Data : null, keepStats ? rstd.Data : null, x.Data,
                    affine ? w.Data : null, affine ? b.Data : null, rows, C, 1e-6f);
                float[] ys = y.ToArray(), ms = mean.ToArray(), rs = rstd.ToArray();
                for (int r = 0; r < rows; r++)
                {
                    double m = xs.Skip(r * C).Take(C).Average(v => (double)v);
                    double s = 1 / Math.Sqrt(xs.Skip(r * C).Take(C).Sum(v => (v - m) * (v - m)) / C + 1e-6);
                    if (keepStats)
                    {
                        Assert.That(ms[r], Is.EqualTo(m).Within(2e-5), $"{width}: mean[{r}]");
                        Assert.That(rs[r], Is.EqualTo(s).Within(1e-5 * s), $"{width}: rstd[{r}]");
                    }
                    for (int c = 0; c < C; c++)
                    {
                        double want = (xs[r * C + c] - m) * s * (affine ? ws[c] : 1) + (affine ? bs[c] : 0);
                        Assert.That(ys[r * C + c], Is.EqualTo(want).Within(1e-4), $"{width}: y[{r}, {c}]");
                    }
                }
            }
        }
        finally { Engine.Kernels.Cpu.Simd.Width = saved; }
    }

    /// <summary>A row-wise backward kernel's case: x and dy [Rows, C], a per-column vector (scale, weight), dx written
    /// or added into a random start, and two per-column gradients added into random starts; the test adds the expected
    /// changes to WantDx, WantP0 and WantP1, and <see cref="Check"/> runs the kernel at every CPU vector width.</summary>
    sealed unsafe class RowGradCase : IDisposable
    {
        public const int Rows = 70, C = 37; // 37: whole vectors and a scalar tail at every width
        readonly bool _accumulate;
        readonly float[] _dx0, _p00, _p10;
        public readonly Tensor X, Dy, Vector, Dx, P0, P1;
        public readonly double[] WantDx, WantP0, WantP1;

        public RowGradCase(bool accumulate, ulong seed)
        {
            var dev = Device.Cpu;
            _accumulate = accumulate;
            X = Random(dev, seed, Rows * C);
            Dy = Random(dev, seed + 1, Rows * C);
            Vector = Random(dev, seed + 2, C);
            Dx = Random(dev, seed + 3, Rows * C);
            P0 = Random(dev, seed + 4, C);
            P1 = Random(dev, seed + 5, C);
            (_dx0, _p00, _p10) = (Dx.ToArray(), P0.ToArray(), P1.ToArray());
            WantDx = [.. _dx0.Select(v => accumulate ? (double)v : 0)];
            WantP0 = [.. _p00.Select(v => (double)v)];
            WantP1 = [.. _p10.Select(v => (double)v)];
        }

        public delegate void Kernel(float* dx, float* p0, float* p1);

        /// <summary>Runs <paramref name="kernel"/>(dx, p0, p1) from the starting values at every CPU vector width: dx
        /// within <paramref name="tolerance"/>, the column sums within ten times it.</summary>
        public void Check(double tolerance, Kernel kernel)
        {
            var saved = Engine.Kernels.Cpu.Simd.Width;
            try
            {
                foreach (var width in Enum.GetValues<Engine.Kernels.Cpu.SimdWidth>())
                {
                    Engine.Kernels.Cpu.Simd.Width = width;
                    Dx.CopyFrom(_dx0);
                    P0.CopyFrom(_p00);
                    P1.CopyFrom(_p10);
                    kernel(Dx.Data, P0.Data, P1.Data);
                    AssertClose(Dx.ToArray(), WantDx, tolerance, $"{width}: dx");
                    AssertClose(P0.ToArray(), WantP0, 10 * tolerance, $"{width}: first column gradient");
                    AssertClose(P1.ToArray(), WantP1, 10 * tolerance, $"{width}: second column gradient");
                }
            }
            finally { Engine.Kernels.Cpu.Simd.Width = saved; }
        }

        public void Dispose()
        {
            foreach (var t in new[] { X, Dy, Vector, Dx, P0, P1 }) t.Dispose();
        }
    }

    /// <summary>Dense AdamStep at every CPU vector width, masked and not, AdamW and Adam with L2: bit for bit the
    /// update computed one element at a time in float (torch.optim's order of operations), over a vector body and a
    /// tail; masked-out elements keep their parameter and moments.</summary>
    [Test]
    public void AdamStepAtEveryCpuWidth([Values] bool decoupled, [Values] bool masked)
    {
        var dev = Device.Cpu;
        const int n = 101;
        const float lr = 0.01f, beta1 = 0.8f, beta2 = 0.95f, eps = 1e-6f, wd = 0.1f;
        float[] p0 = Init.NormalValues(n, 0, 1, 41), g = Init.NormalValues(n, 0, 1, 42),
            m0 = Init.NormalValues(n, 0, 0.1f, 43), v0 = Init.NormalValues(n, 0, 0.1f, 44).Select(x => x * x).ToArray();
        var maskValues = Enumerable.Range(0, n).Select(i => i % 3 == 0 ? 0f : 1f).ToArray();
        // The reference, one element at a time, t = 3.
        float stepSize = lr / (1 - MathF.Pow(beta1, 3)), bc2Sqrt = MathF.Sqrt(1 - MathF.Pow(beta2, 3));
        float[] wantP = (float[])p0.Clone(), wantM = (float[])m0.Clone(), wantV = (float[])v0.Clone();
        for (int i = 0; i < n; i++)
        {
            if (masked && maskValues[i] == 0f) continue;
            float p = p0[i], gi = g[i];
            if (decoupled) p *= 1f - lr * wd;
            else gi += wd * p;
            wantM[i] = beta1 * m0[i] + (1 - beta1) * gi;
            wantV[i] = beta2 * v0[i] + (1 - beta2) * gi * gi;
            wantP[i] = p - stepSize * wantM[i] / (MathF.Sqrt(wantV[i]) / bc2Sqrt + eps);
        }
        var saved = Engine.Kernels.Cpu.Simd.Width;
        try
        {
            foreach (var width in Enum.GetValues<Engine.Kernels.Cpu.SimdWidth>())
            {
                Engine.Kernels.Cpu.Simd.Width = width;
                using var pt = Tensor.FromArray(dev, p0, n);
                using var gt = Tensor.FromArray(dev, g, n);
                using var mt = Tensor.FromArray(dev, m0, n);
                using var vt = Tensor.FromArray(dev, v0, n);
                using var maskT = Tensor.FromArray(dev, maskValues, n);
                dev.Kernels.AdamStep(pt.Data, gt.Data, mt.Data, vt.Data, masked ? maskT.Data : null, n, lr, beta1, beta2, eps, wd, 3, decoupled, null);
                foreach (var (name, got, want) in new[] { ("param", pt.ToArray(), wantP), ("m", mt.ToArray(), wantM), ("v", vt.ToArray(), wantV) })
                    for (int i = 0; i < n; i++)
                        Assert.That(BitConverter.SingleToInt32Bits(got[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(want[i])),
                            $"{width}: {name}[{i}] = {got[i]:G9}, want {want[i]:G9}");
            }
        }
        finally { Engine.Kernels.Cpu.Simd.Width = saved; }
    }
}
