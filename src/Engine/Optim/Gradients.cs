namespace Engine.Optim;

/// <summary>Gradient utilities for training loops: global norm, clipping, and the non-finite check.</summary>
public static unsafe class Gradients
{
    /// <summary>√(Σ over parameters of Σ g²), accumulated in double.</summary>
    public static double GlobalNorm(IEnumerable<Tensor> parameters)
    {
        double sum = 0;
        foreach (var p in parameters)
            if (p.Grad != null) sum += Ops.SumSquares(p.Grad);
        return Math.Sqrt(sum);
    }

    /// <summary>Scales all gradients so their global norm is at most <paramref name="maxNorm"/>; returns the norm before.</summary>
    public static double ClipGlobalNorm(IEnumerable<Tensor> parameters, double maxNorm)
    {
        var list = parameters as IReadOnlyCollection<Tensor> ?? parameters.ToList();
        double norm = GlobalNorm(list);
        if (norm > maxNorm)
        {
            float scale = (float)(maxNorm / (norm + 1e-6));
            foreach (var p in list)
                if (p.Grad != null) p.Device.Kernels.Scale(p.Grad.Data, p.Grad.Count, scale);
        }
        return norm;
    }
}

/// <summary>NaN/Inf checks for training loops.</summary>
public static unsafe class Numerics
{
    /// <summary>Number of NaN or infinite elements of <paramref name="t"/>.</summary>
    public static long CountNonFinite(Tensor t) => Ops.CountNonFinite(t);

    /// <summary>Throws <see cref="ArithmeticException"/> naming <paramref name="what"/> when <paramref name="t"/>
    /// holds NaN or Inf (divergence).</summary>
    public static void ThrowIfNonFinite(Tensor t, string what)
    {
        long bad = CountNonFinite(t);
        if (bad > 0) throw new ArithmeticException($"{what} {t.Describe()} has {bad} NaN/Inf values (training diverged)");
    }
}
