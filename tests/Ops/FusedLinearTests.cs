using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Tests;

/// <summary>A fused Linear form against the ops it fuses, on the CPU: the same values and gradients bit for bit, and
/// what each keeps for the backward.</summary>
[TestFixture]
public class FusedLinearTests
{
    [Test]
    public void LinearScaleShiftGeluIsGeluOfLinearScaleShiftBitForBit()
    {
        // 197 rows (16 strips and a partial one) × 300 outputs (partial panel) × 40, a frozen weight as under SSF.
        const int rows = 197, N = 300, K = 40;
        var device = Device.Cpu;
        Tensor Values(ulong seed, params int[] shape)
        {
            var v = new float[shape.Aggregate(1, (a, b) => a * b)];
            for (int i = 0; i < v.Length; i++) v[i] = (float)(CounterRng.Uniform(seed, (ulong)i) * 3 - 1.5);
            return Tensor.FromArray(device, v, shape);
        }
        (float[] Y, float[] Dx, float[] Dscale, float[] Dshift, long Saved) Run(bool fused)
        {
            using var x = Values(1, rows, K);
            using var w = Values(2, N, K);
            using var scale = Values(3, N);
            using var shift = Values(4, N);
            using var upstream = Values(5, rows, N);
            foreach (var t in new[] { x, scale, shift }) t.RequiresGrad = true;
            var tape = new Tape();
            float[] y;
            long saved;
            using (tape.Record())
            {
                Tensor output;
                if (fused) output = Ops.LinearScaleShiftGelu(x, w, scale, shift);
                else
                {
                    using var h = Ops.LinearScaleShift(x, w, scale, shift);
                    output = Ops.Gelu(h);
                }
                y = output.ToArray();
                saved = tape.SavedBytes;
                tape.Backward(output, upstream);
                output.Dispose();
            }
            return (y, x.Grad!.ToArray(), scale.Grad!.ToArray(), shift.Grad!.ToArray(), saved);
        }
        var f = Run(fused: true);
        var u = Run(fused: false);
        Assert.That(f.Y, Is.EqualTo(u.Y), "y");
        Assert.That(f.Dx, Is.EqualTo(u.Dx), "dx");
        Assert.That(f.Dscale, Is.EqualTo(u.Dscale), "dscale");
        Assert.That(f.Dshift, Is.EqualTo(u.Dshift), "dshift");
        Assert.That(f.Saved, Is.EqualTo(u.Saved - (long)(rows - 1) * N * sizeof(float)), "GELU's input [rows, N] is not kept, the shift [N] is");
    }
}
