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
/// finite differences of the reference's Σ R·f(x), computed in double. Then again for every subset of the inputs that
/// train (each frozen or not, down to none): frozen means free, so each subset takes other kernel paths (nothing kept
/// for a frozen weight, no weight-gradient GEMM), and must give the same forward bits, no gradient to a frozen input
/// and the same gradients to the others. Tolerances per tensor: |got − want| ≤ atol + rtol·|want|.
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
            t.Name = inp.Name;
            return t;
        }).ToArray();
        try
        {
            // The reference sees exactly the float32 values the device sees.
            var rounded = values.Select(v => v.Select(x => (double)(float)x).ToArray()).ToArray();
            var want = reference(rounded);
            var upstream = new double[want.Length];
            for (int j = 0; j < upstream.Length; j++) upstream[j] = CounterRng.Uniform(seed ^ 0xABCDEF, (ulong)j) * 2 - 1;
            var numeric = new double[inputs.Length][]; // finite differences, computed once per input

            // The declared trainable inputs first, then every smaller subset of them.
            int[] trainable = [.. Enumerable.Range(0, inputs.Length).Where(i => inputs[i].RequiresGrad)];
            float[]? full = null;
            for (int subset = (1 << trainable.Length) - 1; subset >= 0; subset--)
            {
                for (int i = 0; i < tensors.Length; i++) tensors[i].RequiresGrad = false;
                for (int b = 0; b < trainable.Length; b++) tensors[trainable[b]].RequiresGrad = (subset >> b & 1) == 1;
                string label = subset == (1 << trainable.Length) - 1 ? op
                    : $"{op} [trains {(subset == 0 ? "nothing" : string.Join(", ", trainable.Where((_, b) => (subset >> b & 1) == 1).Select(i => inputs[i].Name)))}]";
                var got = RunOnce(device, label, inputs, tensors, forward, reference, rounded, upstream, numeric, gradTol);
                if (full == null)
                {
                    if (got.Length != want.Length) throw new ConformanceException($"{op}: output has {got.Length} elements, expected {want.Length}");
                    CheckClose($"{op} forward", got, want, forwardTol, forwardTol);
                    full = got;
                }
                else
                    for (int j = 0; j < got.Length; j++)
                        if (BitConverter.SingleToInt32Bits(full[j]) != BitConverter.SingleToInt32Bits(got[j]))
                            throw new ConformanceException($"{label}: forward differs from the all-trainable forward at element {j} ({got[j]:G9} vs {full[j]:G9})");
            }
        }
        finally
        {
            foreach (var t in tensors) t.Dispose();
        }
    }

    /// <summary>One recorded forward and backward with the tensors' current RequiresGrad; checks each input's gradient
    /// (present exactly when it trains) against the finite differences. Returns the forward's output.</summary>
    static float[] RunOnce(Device device, string label, Input[] inputs, Tensor[] tensors, Func<Tensor[], Tensor> forward,
        Func<double[][], double[]> reference, double[][] rounded, double[] upstream, double[][] numeric, double gradTol)
    {
        foreach (var t in tensors) t.DropGrad();
        var tape = new Tape();
        Tensor y;
        using (tape.Record()) y = forward(tensors);
        using var _ = y;
        var got = y.ToArray();
        // Inference (no tape) takes other paths in some kernels (nothing saved for backward); it must agree exactly.
        using (var inference = forward(tensors))
        {
            var plain = inference.ToArray();
            for (int j = 0; j < Math.Min(plain.Length, got.Length); j++)
                if (BitConverter.SingleToInt32Bits(plain[j]) != BitConverter.SingleToInt32Bits(got[j]))
                    throw new ConformanceException($"{label}: inference forward differs from the recorded forward at element {j} ({plain[j]:G9} vs {got[j]:G9})");
        }
        if (!tensors.Any(t => t.RequiresGrad))
        {
            if (tape.Count != 0) throw new ConformanceException($"{label}: {tape.Count} node(s) recorded though no input trains");
            return got;
        }
        using var r = Tensor.FromArray(device, upstream.Select(v => (float)v).ToArray(), y.Shape);
        tape.Backward(y, r);
        for (int i = 0; i < inputs.Length; i++)
        {
            if (!tensors[i].RequiresGrad)
            {
                if (tensors[i].Grad != null) throw new ConformanceException($"{label}: frozen input '{inputs[i].Name}' received a gradient");
                continue;
            }
            var analytic = (tensors[i].Grad ?? throw new ConformanceException($"{label}: no gradient reached input '{inputs[i].Name}'")).ToArray();
            numeric[i] ??= CachedFiniteDifferences(label, reference, rounded, upstream, i);
            CheckClose($"{label} d/d{inputs[i].Name}", analytic, numeric[i], gradTol, gradTol);
        }
        return got;
    }

    // Finite differences by what they are computed from, so that the next backend checking the same case reuses them
    // (they cost more than the op itself: two reference evaluations per input value).
    static readonly System.Collections.Concurrent.ConcurrentDictionary<string, double[]> FiniteDifferencesCache = new();

    /// <summary><see cref="FiniteDifferences"/>, computed once per case: the key is the op's name with every input's and
    /// the upstream gradient's values and the reference's output at them, so another reference function (or other
    /// values) never hits another's entry.</summary>
    static double[] CachedFiniteDifferences(string label, Func<double[][], double[]> reference, double[][] rounded, double[] upstream, int input)
    {
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        void Add(double[] values) => hash.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        foreach (var values in rounded) Add(values);
        Add(upstream);
        Add(reference(rounded));
        string op = label.Split(" [trains ")[0], key = $"{op} d/d input {input} {Convert.ToHexString(hash.GetHashAndReset())}";
        return FiniteDifferencesCache.GetOrAdd(key, _ => FiniteDifferences(reference, rounded, upstream, input));
    }

    /// <summary>d(Σ R·f)/d(input i), by central differences of the double-precision reference.</summary>
    static double[] FiniteDifferences(Func<double[][], double[]> reference, double[][] rounded, double[] upstream, int input)
    {
        var numeric = new double[rounded[input].Length];
        const double h = 1e-5;
        for (int j = 0; j < numeric.Length; j++)
        {
            double keep = rounded[input][j];
            rounded[input][j] = keep + h;
            double plus = Dot(reference(rounded), upstream);
            rounded[input][j] = keep - h;
            double minus = Dot(reference(rounded), upstream);
            rounded[input][j] = keep;
            numeric[j] = (plus - minus) / (2 * h);
        }
        return numeric;
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
