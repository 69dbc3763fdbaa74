using Engine.Autograd;

namespace Engine;

// Exact (erf) GELU. Kernels: CpuKernels.Activations.cs, cuda/activations.cu.
public static unsafe partial class Ops
{
    /// <summary>Exact (erf) GELU. Saves its input.</summary>
    public static Tensor Gelu(Tensor x)
    {
        Check("Gelu", "input", x);
        var y = NewLike(x);
        x.Device.Kernels.GeluForward(y.Data, x.Data, x.Count);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new GeluSaved { X = x, XKept = Tape.Save(x) });
        return y;
    }

    /// <summary>GELU's backward state: its input, kept.</summary>
    struct GeluSaved : IBackward<GeluSaved>
    {
        public Tensor X, XKept;

        public static void Backward(ref GeluSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            y.Device.Kernels.GeluBackward(dx, y.Grad!.Data, s.XKept.Data, y.Count, acc);
        }
    }
}
