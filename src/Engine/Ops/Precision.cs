using Engine.Autograd;
using Engine.Kernels;

namespace Engine;

// Mixed precision. Kernels: CpuKernels.Precision.cs, cuda/precision.cu. The GEMMs' operand rounding is the device's
// IKernels.GemmPrecision; this op puts a rounding point anywhere else in a model.
public static unsafe partial class Ops
{
    /// <summary>x rounded to <paramref name="precision"/> (to nearest, ties to even), kept as fp32: a tensor stored in
    /// the low precision, as autocast stores activations. The backward passes the gradient straight through (a cast's
    /// gradient is the gradient). Saves nothing.</summary>
    public static Tensor RoundToPrecision(Tensor x, Precision precision)
    {
        Check("RoundToPrecision", "input", x);
        var y = NewLike(x);
        x.Device.Kernels.RoundToPrecision(y.Data, x.Data, x.Count, precision);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new RoundToPrecisionSaved { X = x });
        return y;
    }

    /// <summary>RoundToPrecision's backward state: its input, for the gradient's destination.</summary>
    struct RoundToPrecisionSaved : IBackward<RoundToPrecisionSaved>
    {
        public Tensor X;

        public static void Backward(ref RoundToPrecisionSaved s, Tensor y) => Tape.HandOverGradient(s.X, y.Grad!);
    }
}
