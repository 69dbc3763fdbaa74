using Engine.Autograd;

namespace Engine;

// Linear layer: y = x·Wᵀ + b (the GEMM op; patch embedding and strided convs reuse it after Patchify).
// Kernels: LinearForward (CpuGemm.cs with the bias in its store on the CPU; cuBLAS and the bias add on CUDA), Gemm for
// the backward.
public static unsafe partial class Ops
{
    /// <summary>
    /// y [..., N] = x [..., K] · Wᵀ + b. W is [N, ...] with the trailing dims flattened to K (so a conv weight
    /// [O,C,p,p] serves a patchified input directly); b [N] or null.
    /// Backward: dx = dy·W; dW += dyᵀ·x and db += Σ dy only when they require gradients. x is kept for backward
    /// only when W trains (frozen means free). A weight training <see cref="TrainableKind.SelectedEntries"/> gets only its selected
    /// entries' gradients, [N, k] (GPS), never the dense dW.
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        const string op = "Linear";
        Check(op, "input", x, device: weight.Device);
        Check(op, "weight", weight);
        int N = weight.Shape[0], K = (int)(weight.Count / Math.Max(1, N));
        if (LastDim(x) != K)
            throw new ArgumentException($"{op}: input {x.Describe()} has {LastDim(x)} features, weight {weight.Describe()} expects {K}");
        CheckVector(op, "bias", bias, N, x);
        int rows = Rows(x);
        var shape = (int[])x.Shape.Clone();
        shape[^1] = N;
        var y = Tensor.Empty(x.Device, DType.F32, shape);
        var k = x.Device.Kernels;
        k.LinearForward(y.Data, x.Data, weight.Data, bias == null ? null : bias.Data, rows, N, K);
        if (Tape.ShouldRecord(x, weight, bias))
            Tape.Push(y, new LinearSaved
            {
                X = x, Weight = weight, Bias = bias, Rows = rows, N = N, K = K,
                XKept = weight.RequiresGrad ? Tape.Save(x) : null,
                WeightKept = !weight.IsLeaf ? Tape.Save(weight) : null, // a computed weight (z·zᵀ) may be disposed by its caller,
            });
        return y;
    }

    /// <summary>Linear's backward state: x [Rows, K], W [N, K], b [N].</summary>
    struct LinearSaved : IBackward<LinearSaved>
    {
        public Tensor X, Weight;
        public Tensor? Bias, XKept, WeightKept;
        public int Rows, N, K;

        public static void Backward(ref LinearSaved s, Tensor y)
        {
            var k = y.Device.Kernels;
            int rows = s.Rows, N = s.N, K = s.K;
            float* dy = y.Grad!.Data;
            float* dx = Tape.GradOutputIfNeeded(s.X, out bool acc);
            if (dx != null) k.Gemm(false, false, rows, K, N, 1f, dy, N, (s.WeightKept ?? s.Weight).Data, K, acc ? 1f : 0f, dx, K);
            if (s.Weight is { RequiresGrad: true, Trainability.Entries: { } index })
                k.SparseWeightGrad(Tape.SparseGradAccumulator(s.Weight), dy, s.XKept!.Data, index.IntData, rows, N, K, index.Shape[1]);
            else
            {
                float* dw = Tape.GradAccumulatorIfNeeded(s.Weight);
                if (dw != null) k.Gemm(true, false, N, K, rows, 1f, dy, N, s.XKept!.Data, K, 1f, dw, K);
            }
            float* db = Tape.GradAccumulatorIfNeeded(s.Bias);
            if (db != null) k.BiasGrad(db, dy, rows, N);
        }
    }
}
