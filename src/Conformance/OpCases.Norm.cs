using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Norm family's cases (Ops/Norm.cs).
public static partial class OpCases
{
    static void LayerNorm(Device dev)
    {
        // On a GPU rows up to 768 wide take the _768 kernels, up to 1024 the others, and wider ones (1030) run from memory.
        foreach (var (rows, C) in new[] { (7, 13), (3, 197), (1, 1), (2, 1000), (2, 1030) })
        {
            GradCheck.Run(dev, $"LayerNorm {rows}x{C}",
                [new("x", [rows, C], -2, 2), new("w", [C], 0.5, 1.5), new("b", [C])],
                t => Ops.LayerNorm(t[0], t[1], t[2], 1e-6f),
                v => Reference.LayerNorm(v[0], v[1], v[2], rows, C, 1e-6), gradTol: C == 1 ? 1e-2 : 2e-4);
        }
        GradCheck.Run(dev, "LayerNorm no affine",
            [new("x", [5, 9])],
            t => Ops.LayerNorm(t[0], null, null, 1e-5f),
            v => Reference.LayerNorm(v[0], null, null, 5, 9, 1e-5));
        // dweight = Σ_r dy·x̂ and dbias = Σ_r dy over many rows (a GPU cuts them into slices).
        CheckParameterSums(dev, "LayerNorm", [1f, 0f], (x, p) => Ops.LayerNorm(x, p[0], p[1], 1e-6f), (xv, dyv, rows, C) =>
        {
            var xhat = Reference.LayerNorm(xv, null, null, rows, C, 1e-6);
            return [ColumnSums(rows, C, i => dyv[i] * xhat[i]), ColumnSums(rows, C, i => dyv[i])];
        });
    }

    /// <summary>The gradients of per-channel parameters p [C] (starting at <paramref name="initial"/>) of y = op(x [rows, C], p)
    /// over many rows, against double sums: a GPU's column reductions cut the rows into slices and add the slices'
    /// sums in a second kernel, which the small shapes of the gradient checks leave uncut.</summary>
    static void CheckParameterSums(Device dev, string op, float[] initial, Func<Tensor, Tensor[], Tensor> forward,
        Func<double[], double[], int, int, double[][]> reference)
    {
        foreach (var (rows, C) in new[] { (300, 40), (1000, 7), (40, 1000), (40, 1030) })
        {
            var xv = Init.NormalValues(rows * C, 0, 1, 4);
            var dyv = Init.NormalValues(rows * C, 0, 1, 5);
            using var x = Tensor.FromArray(dev, xv, rows, C);
            using var dy = Tensor.FromArray(dev, dyv, rows, C);
            var parameters = initial.Select(v => Tensor.FromArray(dev, Enumerable.Repeat(v, C).ToArray(), C)).ToArray();
            try
            {
                foreach (var p in parameters) p.RequiresGrad = true;
                var tape = new Tape();
                Tensor y;
                using (tape.Record()) y = forward(x, parameters);
                tape.Backward(y, dy);
                y.Dispose();
                var want = reference([.. xv.Select(v => (double)v)], [.. dyv.Select(v => (double)v)], rows, C);
                for (int i = 0; i < parameters.Length; i++)
                    GradCheck.CheckClose($"{op} {rows}x{C} parameter {i}", parameters[i].Grad!.ToArray(), want[i], 1e-4, 1e-5);
            }
            finally
            {
                foreach (var p in parameters) p.Dispose();
            }
        }
    }

    /// <summary>Σ_r term(r·C + c) per column c, in double.</summary>
    static double[] ColumnSums(int rows, int C, Func<int, double> term)
    {
        var sums = new double[C];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < C; c++) sums[c] += term(r * C + c);
        return sums;
    }

    static void ScaleShift(Device dev)
    {
        GradCheck.Run(dev, "ScaleShift",
            [new("x", [2, 7, 13]), new("scale", [13]), new("shift", [13])],
            t => Ops.ScaleShift(t[0], t[1], t[2]),
            v => Enumerable.Range(0, v[0].Length).Select(i => v[0][i] * v[1][i % 13] + v[2][i % 13]).ToArray());
        // dscale = Σ_r dy·x, dshift = Σ_r dy over many rows; and the bias gradient of a Linear layer, Σ_r dy.
        CheckParameterSums(dev, "ScaleShift", [1f, 0f], (x, p) => Ops.ScaleShift(x, p[0], p[1]),
            (xv, dyv, rows, C) => [ColumnSums(rows, C, i => dyv[i] * xv[i]), ColumnSums(rows, C, i => dyv[i])]);
        CheckParameterSums(dev, "Linear bias", [0f], (x, p) =>
        {
            int C = p[0].Shape[0];
            using var identity = Tensor.FromArray(dev, Enumerable.Range(0, C * C).Select(i => i % (C + 1) == 0 ? 1f : 0f).ToArray(), C, C);
            return Ops.Linear(x, identity, p[0]);
        }, (xv, dyv, rows, C) => [ColumnSums(rows, C, i => dyv[i])]);
    }

    /// <summary>Many vectors scaled and shifted at once (<see cref="Ops.ScaleShiftMany"/>, 32 to a launch on a GPU), as SSF
    /// folds its scales and shifts: every output and every gradient bit for bit a <see cref="Ops.ScaleShift"/> each on
    /// the same device, and within float rounding of a double-precision sum. 70 vectors of sizes from 1 to 70,000 (one
    /// longer than a launch's threads stride), a third in pairs that share their scale as a norm's weight and bias do,
    /// two that share x (the backward must add both, in order, never racing), some without a shift, some with a frozen x, scale or shift,
    /// one without a gradient at all; each output read by a product with its own random weights, every
    /// gradient already holding values (an earlier micro-batch's).</summary>
    static void ScaleShiftMany(Device dev)
    {
        const int Count = 70;
        var owned = new List<Tensor>();
        Tensor Leaf(float[] values, bool trains)
        {
            var t = Tensor.FromArray(dev, values, values.Length);
            t.RequiresGrad = trains;
            owned.Add(t);
            return t;
        }
        try
        {
            var specs = new List<(Tensor X, Tensor Scale, Tensor? Shift, float[] Weights)>();
            Tensor? pairScale = null;
            for (int j = 0; j < Count; j++)
            {
                int n = j == 32 ? 70_000 : 1 + (j * 53 + j * j * 7) % 900;
                bool second = j % 3 == 1 && pairScale != null; // shares the previous vector's scale (a norm's bias after its weight)
                if (second) n = pairScale!.Shape[0];
                if (j == 44) n = specs[42].X.Shape[0]; // and x with vector 42, whose x trains: two add to its gradient
                var x = j == 44 ? specs[42].X : Leaf(Init.NormalValues(n, 0, 1, 300 + (ulong)j), trains: j % 5 == 2);
                var scale = second ? pairScale! : Leaf(Init.NormalValues(n, 1, 0.5f, 400 + (ulong)j), trains: j % 11 != 7);
                var shift = j % 3 == 0 ? null : Leaf(Init.NormalValues(n, 0, 0.5f, 500 + (ulong)j), trains: j % 7 != 4);
                pairScale = j % 3 == 0 ? scale : null;
                specs.Add((x, scale, shift, Init.NormalValues(n, 0, 1, 600 + (ulong)j)));
            }
            var frozen = specs[50];
            frozen.X.RequiresGrad = frozen.Scale.RequiresGrad = false;
            if (frozen.Shift != null) frozen.Shift.RequiresGrad = false;
            var leaves = specs.SelectMany(v => new[] { v.X, v.Scale, v.Shift }).OfType<Tensor>().Distinct().Where(t => t.RequiresGrad).ToList();

            // y_j = x_j·scale_j + shift_j; loss = Σ_j y_j·w_j, each by a Linear into [1, 1].
            (float[][] Outputs, float[][] Grads) Run(bool many)
            {
                // Gradients already held (an earlier micro-batch's), so that the order of the additions shows.
                foreach (var t in leaves)
                {
                    t.DropGrad();
                    t.SetGrad(Tensor.FromArray(dev, Init.NormalValues((int)t.Count, 0, 1, 700 + (ulong)t.Count), t.Shape));
                }
                var tape = new Tape();
                var outputs = new float[Count][];
                using (tape.Record())
                {
                    var zeros = specs.Select(v => v.Shift == null ? Tensor.Zeros(dev, v.X.Shape[0]) : null).ToList();
                    Tensor[] ys = many ? Ops.ScaleShiftMany([.. specs.Select(v => (v.X, v.Scale, v.Shift))])
                        : [.. specs.Select((v, j) => Ops.ScaleShift(v.X, v.Scale, v.Shift ?? zeros[j]!))];
                    Tensor? loss = null;
                    for (int j = 0; j < Count; j++)
                    {
                        outputs[j] = ys[j].ToArray();
                        using var row = ys[j].Reshape(1, ys[j].Shape[0]);
                        var w = Tensor.FromArray(dev, specs[j].Weights, 1, ys[j].Shape[0]);
                        owned.Add(w); // the Linear's backward reads it
                        using var term = Ops.Linear(row, w, null);
                        if (loss == null) loss = term.Reshape(1, 1);
                        else
                        {
                            var sum = Ops.Add(loss, term);
                            loss.Dispose();
                            loss = sum;
                        }
                    }
                    foreach (var y in ys) y.Dispose();
                    foreach (var z in zeros) z?.Dispose();
                    tape.Backward(loss!);
                    loss!.Dispose();
                }
                return (outputs, [.. leaves.Select(t => t.Grad!.ToArray())]);
            }

            var alone = Run(many: false);
            var together = Run(many: true);
            static void SameBits(float[] got, float[] want, string what)
            {
                for (int i = 0; i < want.Length; i++)
                    if (BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(want[i]))
                        throw new ConformanceException($"ScaleShiftMany: {what} element {i} is {got[i]:G9}, {want[i]:G9} from a ScaleShift each");
            }
            for (int j = 0; j < Count; j++) SameBits(together.Outputs[j], alone.Outputs[j], $"output {j}");
            for (int k = 0; k < leaves.Count; k++) SameBits(together.Grads[k], alone.Grads[k], $"gradient of {leaves[k].Describe()}");
            if (frozen.X.Grad != null || frozen.Scale.Grad != null) throw new ConformanceException("ScaleShiftMany: a vector with nothing training got a gradient");

            // The double-precision reference: y = x·s + t; dx = w·s, ds = Σ over the vectors scaled by s of w·x, dt = w.
            var want = new Dictionary<Tensor, double[]>(ReferenceEqualityComparer.Instance);
            foreach (var t in leaves) want[t] = [.. Init.NormalValues((int)t.Count, 0, 1, 700 + (ulong)t.Count).Select(v => (double)v)];
            for (int j = 0; j < Count; j++)
            {
                var (x, scale, shift, w) = specs[j];
                float[] xs = x.ToArray(), ss = scale.ToArray(), ts = shift?.ToArray() ?? new float[xs.Length];
                for (int i = 0; i < xs.Length; i++)
                {
                    double y = (double)xs[i] * ss[i] + ts[i];
                    if (Math.Abs(together.Outputs[j][i] - y) > 1e-6 * (1 + Math.Abs(y)))
                        throw new ConformanceException($"ScaleShiftMany: output {j} element {i} is {together.Outputs[j][i]:G9}, the reference {y:G9}");
                    if (x.RequiresGrad) want[x][i] += (double)w[i] * ss[i];
                    if (scale.RequiresGrad) want[scale][i] += (double)w[i] * xs[i];
                    if (shift is { RequiresGrad: true }) want[shift][i] += w[i];
                }
            }
            for (int k = 0; k < leaves.Count; k++)
            {
                var reference = want[leaves[k]];
                for (int i = 0; i < reference.Length; i++)
                    if (Math.Abs(together.Grads[k][i] - reference[i]) > 1e-5 * (1 + Math.Abs(reference[i])))
                        throw new ConformanceException($"ScaleShiftMany: gradient of {leaves[k].Describe()} element {i} is {together.Grads[k][i]:G9}, " +
                            $"the reference {reference[i]:G9}");
            }
        }
        finally
        {
            foreach (var t in owned)
            {
                t.DropGrad();
                t.Dispose();
            }
        }
    }

    static void L2Normalize(Device dev)
    {
        GradCheck.Run(dev, "L2Normalize",
            [new("x", [7, 13], -2, 2)],
            t => Ops.L2Normalize(t[0]),
            v => Reference.L2Normalize(v[0], 7, 13, 1e-12));
        // Rows with a norm below eps: y = x / eps (a linear map, so finite differences are exact).
        GradCheck.Run(dev, "L2Normalize clamped",
            [new("x", [3, 5], -1e-3, 1e-3)],
            t => Ops.L2Normalize(t[0], eps: 0.1f),
            v => Reference.L2Normalize(v[0], 3, 5, 0.1), gradTol: 1e-3);
    }
}
