using Engine.Autograd;

namespace Engine;

/// <summary>
/// The engine's differentiable ops. Each validates shapes, runs exactly one backend's kernels on the inputs'
/// device, and, when a tape records and an input requires gradients, records a node whose backward lives next to
/// the forward (one file per family under src/Engine/Ops). Inputs must be contiguous float32 unless noted.
/// </summary>
public static unsafe partial class Ops
{
    /// <summary>Throws unless <paramref name="a"/> and <paramref name="b"/> have the same shape.</summary>
    internal static void CheckSameShape(string op, Tensor a, Tensor b)
    {
        if (!a.Shape.AsSpan().SequenceEqual(b.Shape))
            throw new ArgumentException($"{op}: shapes differ: {a.Describe()} vs {b.Describe()}");
    }

    /// <summary>Throws unless <paramref name="t"/> is a contiguous float32 tensor of the given rank (−1: any) on
    /// <paramref name="device"/>.</summary>
    internal static void Check(string op, string role, Tensor t, int rank = -1, Device? device = null, DType dtype = DType.F32)
    {
        if (t.IsDisposed) throw new ObjectDisposedException($"{op}: {role} {t.Describe()} was disposed");
        if (t.DType != dtype) throw new ArgumentException($"{op}: {role} {t.Describe()} must be {dtype}");
        if (rank >= 0 && t.Rank != rank) throw new ArgumentException($"{op}: {role} {t.Describe()} must have rank {rank}");
        if (!t.IsContiguous) throw new ArgumentException($"{op}: {role} {t.Describe()} must be contiguous (call Contiguous())");
        if (device != null && t.Device != device)
            throw new ArgumentException($"{op}: {role} {t.Describe()} is on {t.Device}, expected {device}");
    }

    /// <summary>Throws unless dimension <paramref name="dim"/> of <paramref name="t"/> equals <paramref name="expected"/>.</summary>
    internal static void CheckDim(string op, string role, Tensor t, int dim, int expected, string against)
    {
        int d = dim < 0 ? t.Rank + dim : dim;
        if (t.Shape[d] != expected)
            throw new ArgumentException($"{op}: {role} {t.Describe()} has {t.Shape[d]} in dimension {d}, {against} needs {expected}");
    }

    /// <summary>Throws unless <paramref name="v"/> (if given) is a length-<paramref name="length"/> vector on x's device.</summary>
    internal static void CheckVector(string op, string role, Tensor? v, int length, Tensor x)
    {
        if (v == null) return;
        Check(op, role, v, 1, x.Device);
        CheckDim(op, role, v, 0, length, $"input {x.Describe()}");
    }

    static Tensor NewLike(Tensor t) => Tensor.Empty(t.Device, DType.F32, t.Shape);

    static int LastDim(Tensor t) => t.Shape[^1];

    static int Rows(Tensor t) => (int)(t.Count / LastDim(t));

    /// <summary>Records a reshape view so gradients reach the original tensor (called by <see cref="Tensor.Reshape"/>).</summary>
    internal static void RecordView(Tensor source, Tensor view) => Tape.Push(view, new ViewSaved { Source = source });

    /// <summary>A reshape view's backward state: the tensor it views.</summary>
    struct ViewSaved : IBackward<ViewSaved>
    {
        public Tensor Source;

        public static void Backward(ref ViewSaved s, Tensor view) => Tape.HandOverGradient(s.Source, view.Grad!);
    }
}
