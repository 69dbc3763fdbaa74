using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

/// <summary>A backend's result differs from the reference beyond the tolerance; the message names the op, the
/// tensor, the worst element and both values.</summary>
public sealed class ConformanceException(string message) : Exception(message);

/// <summary>One differentiable input of an op under test: its shape, value range and whether it gets a gradient.</summary>
public sealed record Input(string Name, int[] Shape, double Low = -1, double High = 1, bool RequiresGrad = true);

/// <summary>
/// The per-op test harness (ggml test-backend-ops style): random inputs; the op's forward on a device against a
/// double-precision reference; then every input gradient (with a random upstream gradient R) against central
/// finite differences of the reference's Σ R·f(x), computed in double. Tolerances per tensor:
/// |got − want| ≤ atol + rtol·|want|.
/// </summary>
public static class GradCheck
{
    /// <summary>Runs the check for one op on one device.</summary>
    public static void Run(Device device, string op, Input[] inputs, Func<Tensor[], Tensor> forward, Func<double[][], double[]> reference,
        double forwardTol = 2e-5, double gradTol = 2e-4, ulong seed = 1)
    {
        var values = new double[inputs.Length][];
        for (int i = 0; i < inputs.Length; i++)
        {
            long n = inputs[i].Shape.Aggregate(1L, (a, b) => a * b);
            values[i] = new double[n];
            for (long j = 0; j < n; j++)
                values[i][j] = inputs[i].Low + (inputs[i].High - inputs[i].Low) * CounterRng.Uniform(seed + (ulong)i * 7919, (ulong)j);
        }
        var tensors = inputs.Select((inp, i) =>
        {
            var t = Tensor.FromArray(device, values[i].Select(v => (float)v).ToArray(), inp.Shape);
            t.RequiresGrad = inp.RequiresGrad;
            t.Name = inp.Name;
            return t;
        }).ToArray();
        // The reference sees exactly the float32 values the device sees.
        var rounded = values.Select(v => v.Select(x => (double)(float)x).ToArray()).ToArray();
        var want = reference(rounded);

        var tape = new Tape();
        Tensor y;
        using (tape.Record()) y = forward(tensors);
        var got = y.ToArray();
        // Inference (no tape) takes other paths in some kernels (nothing saved for backward); it must agree exactly.
        using (var inference = forward(tensors))
        {
            var plain = inference.ToArray();
            for (int j = 0; j < Math.Min(plain.Length, got.Length); j++)
                if (BitConverter.SingleToInt32Bits(plain[j]) != BitConverter.SingleToInt32Bits(got[j]))
                    throw new ConformanceException($"{op}: inference forward differs from the recorded forward at element {j} ({plain[j]:G9} vs {got[j]:G9})");
        }
        if (got.Length != want.Length) throw new ConformanceException($"{op}: output has {got.Length} elements, expected {want.Length}");
        CheckClose($"{op} forward", got, want, forwardTol, forwardTol);

        if (!inputs.Any(i => i.RequiresGrad))
        {
            tape.Clear();
            return;
        }
        var upstream = new double[want.Length];
        for (int j = 0; j < upstream.Length; j++) upstream[j] = CounterRng.Uniform(seed ^ 0xABCDEF, (ulong)j) * 2 - 1;
        using var r = Tensor.FromArray(device, upstream.Select(v => (float)v).ToArray(), y.Shape);
        tape.Backward(y, r);

        for (int i = 0; i < inputs.Length; i++)
        {
            if (!inputs[i].RequiresGrad) continue;
            var analytic = (tensors[i].Grad ?? throw new ConformanceException($"{op}: no gradient reached input '{inputs[i].Name}'")).ToArray();
            var numeric = new double[rounded[i].Length];
            const double h = 1e-5;
            for (int j = 0; j < numeric.Length; j++)
            {
                double keep = rounded[i][j];
                rounded[i][j] = keep + h;
                double plus = Dot(reference(rounded), upstream);
                rounded[i][j] = keep - h;
                double minus = Dot(reference(rounded), upstream);
                rounded[i][j] = keep;
                numeric[j] = (plus - minus) / (2 * h);
            }
            CheckClose($"{op} d/d{inputs[i].Name}", analytic, numeric, gradTol, gradTol);
        }
        y.Dispose();
        foreach (var t in tensors) t.Dispose();
    }

    static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    /// <summary>Checks |got − want| ≤ atol + rtol·|want| everywhere, reporting the worst element.</summary>
    public static void CheckClose(string what, IReadOnlyList<float> got, IReadOnlyList<double> want, double atol, double rtol)
    {
        if (got.Count != want.Count) throw new ConformanceException($"{what}: {got.Count} values, expected {want.Count}");
        int worst = -1;
        double worstExcess = 0;
        for (int i = 0; i < got.Count; i++)
        {
            double err = Math.Abs(got[i] - want[i]), allowed = atol + rtol * Math.Abs(want[i]);
            if (!(err <= allowed) && (worst < 0 || err - allowed > worstExcess))
            {
                worst = i;
                worstExcess = err - allowed;
            }
        }
        if (worst >= 0)
            throw new ConformanceException($"{what}: element {worst} is {got[worst]:G9}, expected {want[worst]:G9} (|Δ| {Math.Abs(got[worst] - want[worst]):G3} > {atol + rtol * Math.Abs(want[worst]):G3})");
    }
}
