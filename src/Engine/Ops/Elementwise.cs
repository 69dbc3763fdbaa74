using Engine.Autograd;

namespace Engine;

// Residual add. Kernels: CpuKernels.Elementwise.cs, cuda/elementwise.cu.
public static unsafe partial class Ops
{
    /// <summary>Residual add y = a + b (same shape). Both inputs receive the output gradient.</summary>
    public static Tensor Add(Tensor a, Tensor b)
    {
        Check("Add", "a", a);
        Check("Add", "b", b, device: a.Device);
        CheckSameShape("Add", a, b);
        var y = NewLike(a);
        a.Device.Kernels.Add(y.Data, a.Data, b.Data, a.Count);
        if (Tape.ShouldRecord(a, b))
            Tape.Push(y, new AddSaved { A = a, B = b });
        return y;
    }

    /// <summary>Add's backward state: both inputs receive the output gradient.</summary>
    struct AddSaved : IBackward<AddSaved>
    {
        public Tensor A, B;

        public static void Backward(ref AddSaved s, Tensor y)
        {
            // b's share is copied (or added) first: a may then take dy's storage itself.
            float* db = Tape.GradOutputIfNeeded(s.B, out bool accB);
            if (db != null) y.Device.Kernels.Copy(db, y.Grad!.Data, y.Count, accB);
            if (s.A.RequiresGrad) Tape.HandOverGradient(s.A, y.Grad!);
        }
    }
}
