using Engine.Autograd;

namespace Engine;

// Softmax over the last dimension. Kernels: CpuKernels.Softmax.cs, cuda/softmax.cu.
public static unsafe partial class Ops
{
    /// <summary>Softmax over the last dimension (max-subtracted). Saves the output.</summary>
    public static Tensor Softmax(Tensor x)
    {
        Check("Softmax", "input", x);
        var y = NewLike(x);
        x.Device.Kernels.SoftmaxForward(y.Data, x.Data, Rows(x), LastDim(x));
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new SoftmaxSaved { X = x, YKept = Tape.Save(y) });
        return y;
    }

    /// <summary>Softmax's backward state: its input and its output y [rows, C].</summary>
    struct SoftmaxSaved : IBackward<SoftmaxSaved>
    {
        public Tensor X, YKept;

        public static void Backward(ref SoftmaxSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            y.Device.Kernels.SoftmaxBackward(dx, null, y.Grad!.Data, s.YKept.Data, Rows(y), LastDim(y), acc);
        }
    }
}
