using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Linear family's cases (Ops/Linear.cs).
public static partial class OpCases
{
    static void Linear(Device dev)
    {
        foreach (var (rows, N, K) in new[] { (7, 11, 13), (1, 5, 3), (3, 17, 197) })
        {
            GradCheck.Run(dev, $"Linear {rows}x{N}x{K}",
                [new("x", [rows, K]), new("w", [N, K]), new("b", [N])],
                t => Ops.Linear(t[0], t[1], t[2]),
                v => Reference.Linear(v[0], v[1], v[2], rows, N, K));
        }
        // No bias, 3-d input, conv-shaped weight [N, C, p, p] flattened to K.
        GradCheck.Run(dev, "Linear 3d / conv weight",
            [new("x", [2, 3, 12]), new("w", [5, 3, 2, 2])],
            t => Ops.Linear(t[0], t[1]),
            v => Reference.Linear(v[0], v[1], null, 6, 5, 12));
    }

    // GELU in the GEMM's epilogue: partial tiles on both edges (rows 7 and 13 cut 6-, 12- and 4-row strips, N 37 cuts
    // 16- and 32-wide panels), a K past one K block, and no bias.
    static void LinearGelu(Device dev)
    {
        foreach (var (rows, N, K) in new[] { (13, 37, 9), (7, 5, 300) })
            GradCheck.Run(dev, $"LinearGelu {rows}x{N}x{K}",
                [new("x", [rows, K], -1.5, 1.5), new("w", [N, K]), new("b", [N])],
                t => Ops.LinearGelu(t[0], t[1], t[2]),
                v => Reference.Gelu(Reference.Linear(v[0], v[1], v[2], rows, N, K)));
        GradCheck.Run(dev, "LinearGelu no bias",
            [new("x", [2, 3, 8]), new("w", [6, 8])],
            t => Ops.LinearGelu(t[0], t[1]),
            v => Reference.Gelu(Reference.Linear(v[0], v[1], null, 6, 6, 8)));
    }

    // SSF at a Linear site: the scale-shift in the GEMM's epilogue, with partial tiles on both edges and a K past one K
    // block; scale and shift train (the product is kept for dscale) and the gradients reach x and W through du.
    static void LinearScaleShift(Device dev)
    {
        foreach (var (rows, N, K) in new[] { (13, 37, 9), (7, 5, 300) })
            GradCheck.Run(dev, $"LinearScaleShift {rows}x{N}x{K}",
                [new("x", [rows, K]), new("w", [N, K]), new("scale", [N]), new("shift", [N])],
                t => Ops.LinearScaleShift(t[0], t[1], t[2], t[3]),
                v => ScaleShiftReference(Reference.Linear(v[0], v[1], null, rows, N, K), v[2], v[3]));
    }

    // SSF at an MLP's first layer and its GELU in one epilogue; the backward recomputes GELU's input from the kept product.
    // Inputs in [-1.5, 1.5] put GELU's input on both sides of its bend.
    static void LinearScaleShiftGelu(Device dev)
    {
        foreach (var (rows, N, K) in new[] { (13, 37, 9), (7, 5, 300) })
            GradCheck.Run(dev, $"LinearScaleShiftGelu {rows}x{N}x{K}",
                [new("x", [rows, K], -1.5, 1.5), new("w", [N, K]), new("scale", [N]), new("shift", [N])],
                t => Ops.LinearScaleShiftGelu(t[0], t[1], t[2], t[3]),
                v => Reference.Gelu(ScaleShiftReference(Reference.Linear(v[0], v[1], null, rows, N, K), v[2], v[3])));
    }

    // A branch joining its residual stream inside the layer (a block's proj and fc2): y = r + (x·Wᵀ + b) and
    // r + (x·Wᵀ)·scale + shift, forward and every gradient (r's too) against double references, with partial tiles and a K
    // past one K block; then a block's pattern bit for bit against an Add after the layer (ResidualBlock).
    static void LinearResidual(Device dev)
    {
        static double[] Plus(double[] a, double[] b) => [.. a.Select((v, i) => v + b[i])];
        foreach (var (rows, N, K) in new[] { (13, 37, 9), (7, 5, 300) })
        {
            GradCheck.Run(dev, $"LinearResidual {rows}x{N}x{K}",
                [new("x", [rows, K]), new("w", [N, K]), new("b", [N]), new("residual", [rows, N], -3, 3)],
                t => Ops.Linear(t[0], t[1], t[2], t[3]),
                v => Plus(Reference.Linear(v[0], v[1], v[2], rows, N, K), v[3]));
            GradCheck.Run(dev, $"LinearScaleShiftResidual {rows}x{N}x{K}",
                [new("x", [rows, K]), new("w", [N, K]), new("scale", [N]), new("shift", [N]), new("residual", [rows, N], -3, 3)],
                t => Ops.LinearScaleShift(t[0], t[1], t[2], t[3], t[4]),
                v => Plus(ScaleShiftReference(Reference.Linear(v[0], v[1], null, rows, N, K), v[2], v[3]), v[4]));
        }
        GradCheck.Run(dev, "LinearResidual no bias",
            [new("x", [2, 3, 8]), new("w", [6, 8]), new("residual", [2, 3, 6])],
            t => Ops.Linear(t[0], t[1], null, t[2]),
            v => Plus(Reference.Linear(v[0], v[1], null, 6, 6, 8), v[2]));
        using (var x = Tensor.Zeros(dev, 4, 8))
        using (var w = Tensor.Zeros(dev, 6, 8))
        using (var wrong = Tensor.Zeros(dev, 4, 8))
        {
            try
            {
                Ops.Linear(x, w, null, wrong).Dispose();
                throw new ConformanceException("LinearResidual: a [4, 8] residual for a [4, 6] output was taken");
            }
            catch (ArgumentException e) when (e.Message.Contains("residual")) { }
        }
        ResidualBlock(dev);
    }

    // A transformer block's two residual joins with the add inside the layers, against Add after them, bit for bit in the
    // output and every gradient, under fp32, bf16 and fp16 GEMMs: the stream s = ScaleShift(z) a non-leaf that a LayerNorm
    // also reads (the join hands it dy, then the norm's gradient is added), the layers' inputs written in 16 bits
    // (gemmInput), SSF's join with a frozen scale.
    static void ResidualBlock(Device dev)
    {
        const int rows = 29, C = 24;
        var k = dev.Kernels;
        var previous = k.GemmPrecision;
        using var oneProduct = OneGemmPerLinear(dev); // the join inside the layer runs the GEMM, after it the epilogue
        string[] names = ["dz", "dscale0", "dshift0", "dnorm1.weight", "dnorm1.bias", "dW1", "db1", "dnorm2.weight", "dnorm2.bias", "dW2", "dshift2"];
        try
        {
            foreach (var precision in new[] { Precision.FP32, Precision.BF16, Precision.FP16 })
            {
                k.GemmPrecision = precision;
                (float[] Y, float[][] Grads) Run(bool fused)
                {
                    using var made = new CaseTensors(dev);
                    var z = made.Uniform(301, 2f, rows, C);
                    var s0 = made.Uniform(302, 1.5f, C);
                    var t0 = made.Uniform(303, 0.5f, C);
                    var n1w = made.Uniform(304, 1f, C);
                    var n1b = made.Uniform(305, 0.5f, C);
                    var w1 = made.Uniform(306, 0.5f, C, C);
                    var b1 = made.Uniform(307, 0.5f, C);
                    var n2w = made.Uniform(308, 1f, C);
                    var n2b = made.Uniform(309, 0.5f, C);
                    var w2 = made.Uniform(310, 0.5f, C, C);
                    var s2 = made.Uniform(311, 1.5f, C);
                    var t2 = made.Uniform(312, 0.5f, C);
                    var upstream = made.Uniform(313, 1f, rows, C);
                    Tensor[] trained = [z, s0, t0, n1w, n1b, w1, b1, n2w, n2b, w2, t2]; // s2 frozen
                    foreach (var p in trained) p.RequiresGrad = true;
                    var tape = new Autograd.Tape();
                    using (tape.Record())
                    {
                        using var stream = Ops.ScaleShift(z, s0, t0);
                        using var h1 = Ops.LayerNorm(stream, n1w, n1b, 1e-5f, gemmInput: true);
                        using var y1 = fused ? Ops.Linear(h1, w1, b1, stream) : Join(stream, Ops.Linear(h1, w1, b1));
                        using var h2 = Ops.LayerNorm(y1, n2w, n2b, 1e-5f, gemmInput: true);
                        using var y2 = fused ? Ops.LinearScaleShift(h2, w2, s2, t2, y1) : Join(y1, Ops.LinearScaleShift(h2, w2, s2, t2));
                        var y = y2.ToArray();
                        tape.Backward(y2, upstream);
                        return (y, [.. trained.Select(p => p.Grad!.ToArray())]);
                    }
                }
                static Tensor Join(Tensor stream, Tensor branch)
                {
                    using (branch) return Ops.Add(stream, branch);
                }
                static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
                string name = $"ResidualBlock {precision.Name()}";
                var (want, got) = (Run(fused: false), Run(fused: true));
                for (int i = 0; i < want.Y.Length; i++)
                    if (!Same(want.Y[i], got.Y[i]))
                        throw new ConformanceException($"{name}: y[{i}] is {got.Y[i]:G9} with the residual in the layers, {want.Y[i]:G9} with Add after them");
                for (int g = 0; g < names.Length; g++)
                    for (int i = 0; i < want.Grads[g].Length; i++)
                        if (!Same(want.Grads[g][i], got.Grads[g][i]))
                            throw new ConformanceException($"{name}: {names[g]}[{i}] is {got.Grads[g][i]:G9} with the residual in the layers, {want.Grads[g][i]:G9} with Add after them");
            }
        }
        finally
        {
            k.GemmPrecision = previous;
        }
    }

    /// <summary>
    /// SSF at a Linear site under bf16/fp16 GEMMs (part of <see cref="LinearInSixteenBits"/>): the scale-shift reads the
    /// product rounded to 16 bits, whether it is kept (training: uPacked, checked as a rounded double product) or not
    /// (inference). y (float32, with and without a residual) is u16·scale + shift (+ residual) to within the float32
    /// steps of that sum, fused or not, which the unrounded product misses by up to 2⁻⁹ of u·scale; GELU's form gives
    /// y16 within half a 16-bit step of the double GELU of it; the inference form gives the training form's y, bit for
    /// bit where one CPU product serves both (not a real GPU: its two forms may take different cuBLAS algorithms, then
    /// within one 16-bit step of u times the scale).
    /// </summary>
    static unsafe void ScaleShiftFromSixteenBitProduct(Device dev, Precision precision, string form, Tensor x, Tensor w, float[] xs, float[] ws,
        CaseTensors made, Func<Tensor, float[]> widened, Action<string, float[], bool> checkRounded)
    {
        int rows = x.Shape[0], K = x.Shape[1], N = w.Shape[0];
        var k = dev.Kernels;
        var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
        var scale = made.Uniform(404, 1.5f, N);
        var shift = made.Uniform(405, 0.5f, N);
        var residual = made.Uniform(406, 1f, rows, N);
        float[] ss = scale.ToArray(), ts = shift.ToArray(), rs = residual.ToArray();
        bool sameProduct = dev is not CudaDevice { Runtime: Kernels.Cuda.DriverRuntime };
        string name = $"LinearInSixteenBits {precision.Name()}";
        foreach (bool withResidual in new[] { false, true })
        {
            using var y = Tensor.Zeros(dev, rows, N);
            using var kept = Tensor.Empty(dev, half, rows, N);
            using var inference = Tensor.Zeros(dev, rows, N);
            float* r = withResidual ? residual.Data : null;
            k.LinearScaleShiftForward(y.Data, null, null, kept.HalfData, x.Data, null, w.Data, scale.Data, shift.Data, r, rows, N, K);
            k.LinearScaleShiftForward(inference.Data, null, null, null, x.Data, null, w.Data, scale.Data, shift.Data, r, rows, N, K);
            var u = widened(kept);
            checkRounded($"LinearScaleShiftForward's kept product{form}", u, false);
            float[] ys = y.ToArray(), fromInference = inference.ToArray();
            for (int i = 0; i < rows * N; i++)
            {
                double product = (double)u[i] * ss[i % N], want = product + ts[i % N] + (withResidual ? rs[i] : 0);
                double slack = 4 * Math.Pow(2, -24) * (Math.Abs(product) + Math.Abs(ts[i % N]) + (withResidual ? Math.Abs(rs[i]) + Math.Abs(want) : 0)) + 1e-30;
                string what = $"LinearScaleShiftForward{(withResidual ? " with a residual" : "")}{form}";
                if (Math.Abs(ys[i] - want) > slack)
                    throw new ConformanceException($"{name} {what}: y[{i}] is {ys[i]:G9}, the kept product {u[i]:G9} gives {want:G9} (the scale-shift must read the rounded product)");
                double apart = sameProduct ? 0 : Math.Abs(u[i] * ss[i % N]) * 2 * precision.UnitRoundoff() * 1.001 + slack;
                if (Math.Abs(fromInference[i] - ys[i]) > apart)
                    throw new ConformanceException($"{name} {what} without the product kept: y[{i}] is {fromInference[i]:G9}, with it kept {ys[i]:G9}");
            }
        }
        using var scratch = Tensor.Zeros(dev, rows, N);
        using var keptForGelu = Tensor.Empty(dev, half, rows, N);
        using var yPacked = Tensor.Empty(dev, half, rows, N);
        k.LinearScaleShiftGeluForward(scratch.Data, yPacked.HalfData, null, keptForGelu.HalfData, x.Data, null, w.Data, scale.Data, shift.Data, rows, N, K);
        float[] ug = widened(keptForGelu), yg = widened(yPacked);
        checkRounded($"LinearScaleShiftGeluForward's kept product{form}", ug, false);
        for (int i = 0; i < rows * N; i++)
        {
            double z = (double)ug[i] * ss[i % N] + ts[i % N], gelu = 0.5 * z * (1 + MathNet.Numerics.SpecialFunctions.Erf(z / Math.Sqrt(2)));
            double step = Math.Abs(gelu) * precision.UnitRoundoff() * 1.001 + 1e-5 * (Math.Abs(z) + 1e-3);
            if (Math.Abs(yg[i] - gelu) > step)
                throw new ConformanceException($"{name} LinearScaleShiftGeluForward{form}: y[{i}] is {yg[i]:G9}, GELU of the kept product {ug[i]:G9} scaled and shifted is {gelu:G9}");
        }
    }

    static double[] ScaleShiftReference(double[] u, double[] scale, double[] shift) =>
        [.. u.Select((value, i) => value * scale[i % scale.Length] + shift[i % shift.Length])];

    /// <summary>
    /// On a GPU, turns cuBLASLt's Linear products off (<see cref="Kernels.Cuda.CudaRuntime.LinearEpilogues"/>) until
    /// disposed. Cases that compare two forms of a Linear bit for bit (an output written in 16 bits against the float32
    /// one rounded, a residual joined inside the layer against an add after it) check our rounding points and passes,
    /// and need both forms to take their sums from one GEMM; cuBLASLt may pick another algorithm, summing in another
    /// order, for a 16-bit output, a float32 one and the GEMM without epilogue. The emulated device computes every form
    /// with the one CPU product, so it keeps them on there; <see cref="LinearInSixteenBits"/> checks the epilogues
    /// themselves on every device.
    /// </summary>
    static IDisposable OneGemmPerLinear(Device dev)
    {
        if (dev is not CudaDevice { Runtime: Kernels.Cuda.DriverRuntime runtime } || !runtime.LinearEpilogues) return new Restore(() => { });
        runtime.LinearEpilogues = false;
        return new Restore(() => runtime.LinearEpilogues = true);
    }

    sealed class Restore(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }

    /// <summary>
    /// A Linear's output written in 16 bits under bf16 and fp16 GEMMs: LinearForward's yPacked (with and without a
    /// bias: an output only products read, as the qkv layer's) and LinearGeluForward's kept pre-activation hPacked with y
    /// in 16 bits (fc1 in training), on CUDA both through cuBLASLt's epilogue and through the GEMM and a bias pass. Each
    /// value is the double sum of the rounded operands plus the bias, rounded once to the format: bit for bit where the
    /// GEMM's own error (1e-6 of the terms' magnitudes, √K grown) cannot move it across a rounding boundary, else a
    /// value that sum ± that error rounds to. y is GeluForward of the kept values, bit for bit, and within half a 16-bit step of the
    /// double GELU of them.
    /// </summary>
    static unsafe void LinearInSixteenBits(Device dev)
    {
        const int rows = 37, N = 24, K = 45;
        var k = dev.Kernels;
        var previous = k.GemmPrecision;
        var runtime = (dev as CudaDevice)?.Runtime;
        bool previousEpilogues = runtime?.LinearEpilogues ?? true;
        bool[] settings = runtime == null ? [true] : [true, false];
        try
        {
            foreach (bool epilogues in settings)
            {
                if (runtime != null) runtime.LinearEpilogues = epilogues;
                foreach (var precision in new[] { Precision.BF16, Precision.FP16 })
                {
                    k.GemmPrecision = precision;
                    var half = precision == Precision.BF16 ? DType.BF16 : DType.F16;
                    using var made = new CaseTensors(dev);
                    var x = made.Uniform(401, 1f, rows, K);
                    var w = made.Uniform(402, 0.5f, N, K);
                    var b = made.Uniform(403, 2f, N);
                    float[] xs = x.ToArray(), ws = w.ToArray(), bs = b.ToArray();
                    string form = runtime == null ? "" : epilogues ? " (cuBLASLt epilogue where offered)" : " (GEMM and bias pass)";
                    float[] Widened(Tensor packed)
                    {
                        using var wide = Tensor.Zeros(dev, rows, N);
                        k.UnpackLowPrecision(wide.Data, packed.HalfData, rows * N, precision);
                        return wide.ToArray();
                    }
                    void CheckRounded(string what, float[] got, bool withBias)
                    {
                        for (int i = 0; i < rows; i++)
                            for (int j = 0; j < N; j++)
                            {
                                double sum = withBias ? bs[j] : 0, magnitude = Math.Abs(sum);
                                for (int kk = 0; kk < K; kk++)
                                {
                                    double term = (double)RoundReference(xs[i * K + kk], precision) * RoundReference(ws[j * K + kk], precision);
                                    sum += term;
                                    magnitude += Math.Abs(term);
                                }
                                double slack = 1e-6 * magnitude * Math.Sqrt(K) + 1e-7;
                                float low = RoundReference((float)(sum - slack), precision), high = RoundReference((float)(sum + slack), precision);
                                float value = got[i * N + j];
                                bool ok = low == high ? value == RoundReference((float)sum, precision) : value >= low && value <= high;
                                if (!ok)
                                    throw new ConformanceException($"LinearInSixteenBits {precision.Name()} {what}{form}: [{i}, {j}] is {value:G9}, want {RoundReference((float)sum, precision):G9} ({sum:G9} rounded)");
                            }
                    }

                    foreach (bool withBias in new[] { true, false })
                    {
                        using var y = Tensor.Zeros(dev, rows, N); // scratch for the backends that need the float32 product
                        using var packed = Tensor.Empty(dev, half, rows, N);
                        k.LinearForward(y.Data, packed.HalfData, x.Data, null, w.Data, withBias ? b.Data : null, null, rows, N, K);
                        CheckRounded($"LinearForward{(withBias ? "" : " without bias")}", Widened(packed), withBias);
                    }

                    using var scratch = Tensor.Zeros(dev, rows, N);
                    using var kept = Tensor.Empty(dev, half, rows, N);
                    using var yPacked = Tensor.Empty(dev, half, rows, N);
                    using var again = Tensor.Empty(dev, half, rows, N);
                    k.LinearGeluForward(scratch.Data, yPacked.HalfData, null, kept.HalfData, x.Data, null, w.Data, b.Data, rows, N, K);
                    var h = Widened(kept);
                    CheckRounded("LinearGeluForward's kept pre-activation", h, withBias: true);
                    k.GeluForward(null, again.HalfData, GemmOperand.Packed(kept.HalfData), rows * N);
                    float[] ys = Widened(yPacked), want = Widened(again);
                    for (int i = 0; i < rows * N; i++)
                    {
                        if (BitConverter.SingleToInt32Bits(ys[i]) != BitConverter.SingleToInt32Bits(want[i]))
                            throw new ConformanceException($"LinearInSixteenBits {precision.Name()} LinearGeluForward{form}: y[{i}] is {ys[i]:G9}, GeluForward of the kept value {h[i]:G9} gives {want[i]:G9}");
                        double gelu = 0.5 * h[i] * (1 + MathNet.Numerics.SpecialFunctions.Erf(h[i] / Math.Sqrt(2)));
                        double step = Math.Abs(gelu) * precision.UnitRoundoff() * 1.001 + 1e-6;
                        if (Math.Abs(ys[i] - gelu) > step)
                            throw new ConformanceException($"LinearInSixteenBits {precision.Name()} LinearGeluForward{form}: y[{i}] is {ys[i]:G9}, GELU of the kept value {h[i]:G9} is {gelu:G9}");
                    }
                    ScaleShiftFromSixteenBitProduct(dev, precision, form, x, w, xs, ws, made, Widened, CheckRounded);
                }
            }
        }
        finally
        {
            k.GemmPrecision = previous;
            if (runtime != null) runtime.LinearEpilogues = previousEpilogues;
        }
    }
}
