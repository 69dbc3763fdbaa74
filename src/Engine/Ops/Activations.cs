using Engine.Autograd;

namespace Engine;

// Exact (erf) GELU and ReLU. Kernels: CpuKernels.Activations.cs, cuda/activations.cu.
public static unsafe partial class Ops
{
    /// <summary>Exact (erf) GELU. Saves its input.</summary>
    public static Tensor Gelu(Tensor x) => Activation("Gelu", x, relu: false);

    /// <summary>ReLU, y = max(x, 0) (AdaptFormer's bottleneck). Saves its input; the gradient at 0 is 0.</summary>
    public static Tensor Relu(Tensor x) => Activation("Relu", x, relu: true);

    static Tensor Activation(string op, Tensor x, bool relu)
    {
        Check(op, "input", x);
        var y = NewLike(x);
        var k = x.Device.Kernels;
        if (relu) k.ReluForward(y.Data, x.Data, x.Count);
        else k.GeluForward(y.Data, null, x.Data, x.Count);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new ActivationSaved { X = x, XKept = Tape.Save(x), Relu = relu });
        return y;
    }

    /// <summary>GELU's or ReLU's backward state: the input, kept.</summary>
    struct ActivationSaved : IBackward<ActivationSaved>
    {
        public Tensor X, XKept;
        public bool Relu;

        public static void Backward(ref ActivationSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            if (s.Relu) y.Device.Kernels.ReluBackward(dx, y.Grad!.Data, s.XKept.Data, y.Count, acc);
            else y.Device.Kernels.GeluBackward(dx, null, y.Grad!.Data, s.XKept.Data, y.Count, acc);
        }
    }
}
