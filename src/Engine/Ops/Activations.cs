using Engine.Autograd;

namespace Engine;

// Exact (erf) GELU and ReLU. Kernels: CpuKernels.Activations.cs, cuda/activations.cu.
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

    /// <summary>ReLU, y = max(x, 0) (the bottleneck adapters' activation). Saves its input; the gradient at 0 is 0.</summary>
    public static Tensor Relu(Tensor x)
    {
        Check("Relu", "input", x);
        var y = NewLike(x);
        x.Device.Kernels.ReluForward(y.Data, x.Data, x.Count);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new ReluSaved { X = x, XKept = Tape.Save(x) });
        return y;
    }

    /// <summary>ReLU's backward state: its input, kept.</summary>
    struct ReluSaved : IBackward<ReluSaved>
    {
        public Tensor X, XKept;

        public static void Backward(ref ReluSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            y.Device.Kernels.ReluBackward(dx, y.Grad!.Data, s.XKept.Data, y.Count, acc);
        }
    }
}
