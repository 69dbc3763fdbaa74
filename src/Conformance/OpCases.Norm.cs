using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Norm family's cases (Ops/Norm.cs).
public static partial class OpCases
{
    static void LayerNorm(Device dev)
    {
        foreach (var (rows, C) in new[] { (7, 13), (3, 197), (1, 1), (2, 1030) }) // 1030: wider than a GPU's one-pass kernel takes
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
        foreach (var (rows, C) in new[] { (300, 40), (1000, 7), (40, 1030) })
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
