using System.Runtime.InteropServices;
using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Dropout family's cases (Ops/Dropout.cs).
public static unsafe partial class OpCases
{
    static void DropPath(Device dev)
    {
        int B = 16, T = 3, C = 5;
        const float p = 0.25f;
        const ulong seed = 42;
        GradCheck.Run(dev, "DropPath",
            [new("x", [B, T, C])],
            t => Ops.DropPath(t[0], p, seed),
            v => Enumerable.Range(0, v[0].Length)
                .Select(i => CounterRng.Uniform(seed, (ulong)(i / (T * C))) >= p ? v[0][i] / (1 - p) : 0).ToArray());
    }

    /// <summary>residual + DropPath(x) in one op: against a double reference with finite differences, then bit for bit
    /// against DropPath then Add (values, and both gradients from one dy) over samples of 111 values (four a thread with
    /// a tail, and a quad that runs into the next sample on CUDA) and with a residual at an odd offset (one value at a
    /// time there).</summary>
    static void DropPathAdd(Device dev)
    {
        int B = 16, T = 3, C = 5;
        const float p = 0.25f;
        const ulong seed = 42;
        GradCheck.Run(dev, "DropPathAdd",
            [new("residual", [B, T, C]), new("x", [B, T, C])],
            t => Ops.DropPathAdd(t[0], t[1], p, seed),
            v => Enumerable.Range(0, v[0].Length)
                .Select(i => v[0][i] + (CounterRng.Uniform(seed, (ulong)(i / (T * C))) >= p ? v[1][i] / (1 - p) : 0)).ToArray());
        foreach (bool offset in new[] { false, true })
        {
            using var made = new CaseTensors(dev);
            var storage = made.Uniform(701, 2f, 9 * 111 + 1);
            var residualValues = storage.ToArray()[1..];
            var xValues = made.Uniform(702, 2f, 9 * 111).ToArray();
            var dyValues = made.Uniform(703, 1f, 9 * 111).ToArray();
            (float[] Y, float[]? DResidual, float[] DX) Run(bool fused)
            {
                // At an odd offset the residual is a view one value into its storage (frozen: no gradient to a view).
                using var view = offset ? storage.Slice(0, 1, 9 * 111) : null;
                using var residual = offset ? view!.Reshape(9, 37, 3) : Tensor.FromArray(dev, residualValues, 9, 37, 3);
                using var x = Tensor.FromArray(dev, xValues, 9, 37, 3);
                using var dy = Tensor.FromArray(dev, dyValues, 9, 37, 3);
                residual.RequiresGrad = !offset;
                x.RequiresGrad = true;
                var tape = new Tape();
                Tensor y;
                using (tape.Record())
                {
                    if (fused) y = Ops.DropPathAdd(residual, x, p, seed);
                    else
                    {
                        using var dropped = Ops.DropPath(x, p, seed);
                        y = Ops.Add(residual, dropped);
                    }
                }
                tape.Backward(y, dy);
                using (y) return (y.ToArray(), residual.Grad?.ToArray(), x.Grad!.ToArray());
            }
            var want = Run(false);
            var got = Run(true);
            string where = offset ? ", residual at an odd offset" : "";
            foreach (var (name, a, b) in new[] { ("y", want.Y, got.Y), ("d/dresidual", want.DResidual ?? [], got.DResidual ?? []), ("d/dx", want.DX, got.DX) })
                for (int i = 0; i < a.Length; i++)
                    if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i]))
                        throw new ConformanceException($"DropPathAdd 9×37×3{where}: {name}[{i}] is {b[i]:G9}, want {a[i]:G9} (DropPath then Add)");
        }
    }

    static void Dropout(Device dev)
    {
        const float p = 0.3f;
        const ulong seed = 7;
        GradCheck.Run(dev, "Dropout",
            [new("x", [7, 13])],
            t => Ops.Dropout(t[0], p, seed),
            v => Enumerable.Range(0, v[0].Length).Select(i => CounterRng.Uniform(seed, (ulong)i) >= p ? v[0][i] / (1 - p) : 0).ToArray());
        // The mask drops close to p of a large tensor, and a different seed gives a different mask.
        using var ones = Tensor.FromArray(dev, Enumerable.Repeat(1f, 100_000).ToArray(), 100_000);
        using var a = Ops.Dropout(ones, p, seed);
        using var b = Ops.Dropout(ones, p, seed + 1);
        var av = a.ToArray();
        double dropped = av.Count(x => x == 0) / 1e5;
        if (Math.Abs(dropped - p) > 0.01) throw new ConformanceException($"Dropout: dropped {dropped:P2} of 100,000 elements, expected {p:P0} ± 1%");
        if (av.AsSpan().SequenceEqual(b.ToArray())) throw new ConformanceException("Dropout: seeds 7 and 8 gave the same mask");
        // A seed offset read from the device (what a captured graph's replays set) acts as seed ^ offset, both ways.
        const ulong offset = 0x9E3779B97F4A7C15;
        using var onDevice = Tensor.FromArray(dev, MemoryMarshal.Cast<ulong, float>(new[] { offset }), 2);
        using var viaOffset = Tensor.Empty(dev, DType.F32, 100_000);
        using var viaSeed = Tensor.Empty(dev, DType.F32, 100_000);
        using var plain = Tensor.Empty(dev, DType.F32, 100_000);
        dev.Kernels.DropPathForward(plain.Data, ones.Data, 1000, 100, p, seed, null);
        var plainMask = plain.ToArray();
        // 1000 samples of 100 values: more values than a device grid's threads, so a thread moves on to further samples
        // (CUDA's grid-stride loop), each value kept or dropped with its whole sample.
        for (int i = 0; i < plainMask.Length; i++)
        {
            float want = CounterRng.Uniform(seed, (ulong)(i / 100)) >= p ? 1f / (1f - p) : 0f;
            if (plainMask[i] != want) throw new ConformanceException($"DropPath: value {i} (sample {i / 100}) is {plainMask[i]}, want {want}");
        }
        foreach (bool backward in new[] { false, true })
        {
            if (backward)
            {
                dev.Kernels.DropPathBackward(viaOffset.Data, ones.Data, 1000, 100, p, seed, (ulong*)onDevice.Data, false);
                dev.Kernels.DropPathBackward(viaSeed.Data, ones.Data, 1000, 100, p, seed ^ offset, null, false);
            }
            else
            {
                dev.Kernels.DropPathForward(viaOffset.Data, ones.Data, 1000, 100, p, seed, (ulong*)onDevice.Data);
                dev.Kernels.DropPathForward(viaSeed.Data, ones.Data, 1000, 100, p, seed ^ offset, null);
            }
            var o = viaOffset.ToArray();
            if (!o.AsSpan().SequenceEqual(viaSeed.ToArray()))
                throw new ConformanceException($"Dropout: a seed offset on the device is not seed ^ offset ({(backward ? "backward" : "forward")})");
            if (o.AsSpan().SequenceEqual(plainMask)) throw new ConformanceException("Dropout: the seed offset changed nothing");
        }
    }
}
