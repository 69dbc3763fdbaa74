using Engine.Kernels;

namespace Engine.Conformance;

/// <summary>The tensors one run of a case makes, disposed together: uniform values in ±scale drawn from a seed
/// (<see cref="Uniform"/>), or any tensor handed over (<see cref="Own"/>).</summary>
sealed class CaseTensors(Device device) : IDisposable
{
    readonly List<Tensor> _made = [];

    /// <summary>A [shape] tensor of values (2u − 1)·scale, u uniform from <paramref name="seed"/>'s stream.</summary>
    public Tensor Uniform(ulong seed, float scale, params int[] shape)
    {
        float[] values = [.. Enumerable.Range(0, shape.Aggregate(1, (a, b) => a * b)).Select(i => (float)(CounterRng.Uniform(seed, (ulong)i) * 2 - 1) * scale)];
        return Own(Tensor.FromArray(device, values, shape));
    }

    /// <summary>Takes <paramref name="t"/> to dispose with the rest; returns it.</summary>
    public Tensor Own(Tensor t)
    {
        _made.Add(t);
        return t;
    }

    public void Dispose()
    {
        foreach (var t in _made) t.Dispose();
        _made.Clear();
    }
}
