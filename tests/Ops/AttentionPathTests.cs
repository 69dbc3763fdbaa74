using Engine.Autograd;
using Engine.Kernels;
using Engine.Kernels.Cpu;

namespace Engine.Tests;

/// <summary>Which attention path runs: fused by default, the unfused reference when asked, and unfused (bit for bit)
/// for heads wider than the fused kernels take.</summary>
[TestFixture, NonParallelizable] // flips the process-wide default path
public class AttentionPathTests
{
    static Tensor Qkv(Device device, int B, int T, int NH, int HD)
    {
        var values = new float[B * T * 3 * NH * HD];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(CounterRng.Uniform(5, (ulong)i) * 2 - 1);
        return Tensor.FromArray(device, values, B, T, 3 * NH * HD);
    }

    /// <summary>Calls of the fused kernel and of the unfused path's softmax in one attention, and its output.</summary>
    static (long Fused, long Unfused, float[] Y) Run(Func<Tensor, Tensor> attention, int HD)
    {
        var kernels = new InstrumentedKernels(new CpuKernels());
        var device = new CpuDevice(kernels);
        using var qkv = Qkv(device, 2, 7, 2, HD);
        using var _ = Tape.NoGrad();
        using var y = attention(qkv);
        return (kernels.Calls(KernelId.FusedAttentionForward), kernels.Calls(KernelId.AttentionSoftmaxForward), y.ToArray());
    }

    static (long, long) Path((long Fused, long Unfused, float[] Y) run) => (run.Fused, run.Unfused);

    [Test]
    public void FusedByDefaultUnfusedOnRequestOrByTheDefaultSwitch()
    {
        Assert.That(Path(Run(q => Ops.Attention(q, 2), 4)), Is.EqualTo((1L, 0L)));
        Assert.That(Path(Run(q => Ops.Attention(q, 2, fused: false), 4)), Is.EqualTo((0L, 1L)));
        try
        {
            Ops.DefaultAttentionPath = AttentionPath.Unfused;
            Assert.That(Path(Run(q => Ops.Attention(q, 2), 4)), Is.EqualTo((0L, 1L)));
            Assert.That(Path(Run(q => Ops.Attention(q, 2, fused: true), 4)), Is.EqualTo((1L, 0L)));
        }
        finally { Ops.DefaultAttentionPath = AttentionPath.Auto; }
    }

    [Test]
    public void HeadsWiderThanTheFusedKernelsTakeRunUnfused()
    {
        int wide = Ops.FusedAttentionMaxHeadDim + 2;
        var asked = Run(q => Ops.Attention(q, 2, fused: true), wide);
        var unfused = Run(q => Ops.Attention(q, 2, fused: false), wide);
        Assert.That(Path(asked), Is.EqualTo((0L, 1L)));
        Assert.That(asked.Y, Is.EqualTo(unfused.Y));
    }

    [Test]
    public void FusedMatchesUnfusedAtViTShape()
    {
        // One ViT-B/16 image's attention (197 tokens, 12 heads of 64), forward and qkv gradient, on the CPU.
        var device = Device.Cpu;
        float[] Grad(bool fused, out float[] y)
        {
            using var qkv = Qkv(device, 1, 197, 12, 64);
            qkv.RequiresGrad = true;
            var tape = new Tape();
            using (tape.Record())
            {
                var output = Ops.Attention(qkv, 12, fused: fused);
                y = output.ToArray();
                using var upstream = Tensor.FromArray(device, y.Select((_, i) => (float)CounterRng.Uniform(6, (ulong)i) - 0.5f).ToArray(), output.Shape);
                tape.Backward(output, upstream);
                output.Dispose();
            }
            return qkv.Grad!.ToArray();
        }
        var gFused = Grad(true, out var yFused);
        var gUnfused = Grad(false, out var yUnfused);
        Assert.That(yFused.Zip(yUnfused).Max(p => Math.Abs(p.First - p.Second)), Is.LessThan(2e-6));
        double scale = gUnfused.Max(Math.Abs);
        Assert.That(gFused.Zip(gUnfused).Max(p => Math.Abs(p.First - p.Second)) / scale, Is.LessThan(1e-4));
    }
}
