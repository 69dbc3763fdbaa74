using Engine.Autograd;
using Engine.Kernels;

namespace Engine;

// Linear layer: y = x·Wᵀ + b (the GEMM op; patch embedding and strided convs reuse it after Patchify), LinearGelu,
// GELU(x·Wᵀ + b) with the activation in the epilogue, LinearScaleShift, SSF's (x·Wᵀ)·γ + β', and LinearScaleShiftGelu,
// GELU of that. Kernels: LinearForward, LinearGeluForward, LinearScaleShiftForward and LinearScaleShiftGeluForward
// (CpuGemm.cs with the bias, GELU or scale-shift in its store on the CPU; cuBLAS then one elementwise kernel on CUDA),
// Gemm for the backward, ScaleShiftBackward and ScaleShiftGeluBackward for SSF's.
public static unsafe partial class Ops
{
    /// <summary>
    /// y [..., N] = x [..., K] · Wᵀ + b. W is [N, ...] with the trailing dims flattened to K (so a conv weight
    /// [O,C,p,p] serves a patchified input directly); b [N] or null.
    /// Backward: dx = dy·W; dW += dyᵀ·x and db += Σ dy only when they require gradients. x is kept for backward
    /// only when W trains (frozen means free). A weight training <see cref="TrainableKind.SelectedEntries"/> gets only its selected
    /// entries' gradients, [N, k] (GPS), never the dense dW. x may be float32, or 16-bit in the GEMMs' bf16 or fp16
    /// format: an op's output written with <c>gemmInput: true</c> (see <see cref="LayerNorm"/>), which the product reads
    /// as it is and the weight gradient keeps as it is. <paramref name="residual"/> (float32, y's shape): y = residual +
    /// (x·Wᵀ + b), bit for bit <c>Add(residual, Linear(x, W, b))</c> (a block's branch joining its residual stream) with
    /// the add in the same pass as the bias and no copy of dy for the branch in the backward, where residual receives dy.
    /// <paramref name="gemmInput"/> (not with a residual): only products that round it to the GEMMs' format read y (the
    /// qkv layer's output, which both attention paths read in 16 bits where
    /// <see cref="Kernels.IKernels.FusedAttentionKeepsSixteenBits"/>), so under bf16 or fp16 GEMMs y is written in that
    /// 16-bit format (see <see cref="LayerNorm"/>); its gradient stays float32.
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null, Tensor? residual = null, bool gemmInput = false)
    {
        var (rows, N, K, shape) = CheckLinear("Linear", x, weight, bias, residual);
        if (gemmInput && residual != null) throw new ArgumentException("Linear: a residual sum stays float32; gemmInput goes without a residual");
        var y = OutputFor(x.Device, gemmInput, shape);
        using var product = ProductScratch(y); // a 16-bit y's float32 product, which the bias pass turns into y
        bool record = Tape.ShouldRecord(x, weight, bias, residual);
        var saved = record ? SaveLinear(x, weight, bias, rows, N, K, residual) : default; // before the product, which may read its packed x
        x.Device.Kernels.LinearForward((product ?? y).Data, Halves(y), Floats(x), PackedInput(x, saved), weight.Data, bias == null ? null : bias.Data,
            residual == null ? null : residual.Data, rows, N, K);
        if (record)
        {
            // Where the backend reads packed operands, the products take dy in 16 bits: the kernel that writes dy last may
            // write that copy beside it (LayerNorm's backward, the head split's), and no packing pass reads dy again.
            if (x.Device.Kernels.ReadsPackedGemmOperands && saved.ProductsReadDy) y.GradCopyType = GemmInputType(x.Device);
            Tape.Push(y, saved);
        }
        return y;
    }

    /// <summary>
    /// Under bf16 or fp16 GEMMs, the type an op writes an output in when it is told (<c>gemmInput: true</c>) that only
    /// Linear products read it (a transformer block's norms before qkv and fc1, fc1's GELU before fc2): that 16-bit
    /// format, which those products round their input to anyway, so their outputs and gradients are bit for bit the
    /// same with half the bytes written and read, and no conversion pass before the product (the weight gradient keeps
    /// the 16-bit tensor itself). Else (or with <see cref="SaveGemmOperandsInGemmPrecision"/> false) null: float32.
    /// </summary>
    static DType? GemmInputType(Device device) =>
        SaveGemmOperandsInGemmPrecision ? device.Kernels.GemmPrecision switch { Kernels.Precision.BF16 => DType.BF16, Kernels.Precision.FP16 => DType.F16, _ => null } : null;

    /// <summary>An op's output [shape]: float32, or in 16 bits when <paramref name="gemmInput"/> (see <see cref="GemmInputType"/>).</summary>
    static Tensor OutputFor(Device device, bool gemmInput, int[] shape) =>
        Tensor.Empty(device, (gemmInput ? GemmInputType(device) : null) ?? DType.F32, shape);

    /// <summary>A tensor's float32 values, or null when it is 16-bit (a Linear input: <see cref="PackedInput"/>).</summary>
    static float* Floats(Tensor x) => x.DType == DType.F32 ? x.Data : null;

    /// <summary>A Linear input's 16-bit values: x itself when it is 16-bit, else its copy kept for backward, if packed.</summary>
    static ushort* PackedInput(Tensor x, in LinearSaved saved) => x.DType == DType.F32 ? Tape.PackedOrNull(saved.XKept) : x.HalfData;

    /// <summary>
    /// GELU(x·Wᵀ + b), the MLP's first layer and its activation, with GELU in the GEMM's epilogue (shapes as in
    /// <see cref="Linear"/>): the same values as <c>Gelu(Linear(x, W, b))</c> in one pass over the output. Backward:
    /// GELU's from the pre-activation, which is written and kept only when recording (in 16 bits under bf16 or fp16
    /// GEMMs, <see cref="SaveLinearOutputsInGemmPrecision"/>), then Linear's. Under bf16 or fp16 GEMMs GELU reads the
    /// pre-activation rounded to that format, as autocast's GELU reads the Linear's 16-bit output (so a Linear reading y
    /// can compute it again from the kept pre-activation: <see cref="RecomputeGeluOutputs"/>). x as in <see cref="Linear"/>;
    /// <paramref name="gemmInput"/>: y is read only by Linear layers (fc2), so under bf16 or fp16 GEMMs it is written in
    /// that 16-bit format (<see cref="LayerNorm"/>).
    /// </summary>
    public static Tensor LinearGelu(Tensor x, Tensor weight, Tensor? bias = null, bool gemmInput = false)
    {
        var (rows, N, K, shape) = CheckLinear("LinearGelu", x, weight, bias);
        var y = OutputFor(x.Device, gemmInput, shape);
        using var product = ProductScratch(y); // a 16-bit y's float32 product (before GELU), which the epilogue reads
        bool record = Tape.ShouldRecord(x, weight, bias);
        var (h, hPacked) = KeptLinearOutput(x.Device, record, shape);
        using var _ = h; // the op's reference to a float32 h (Tape.Save keeps an alias)
        var saved = record ? SaveLinear(x, weight, bias, rows, N, K) : default;
        x.Device.Kernels.LinearGeluForward((product ?? y).Data, Halves(y), h == null ? null : h.Data, Halves(hPacked), Floats(x),
            PackedInput(x, saved), weight.Data, bias == null ? null : bias.Data, rows, N, K);
        if (record)
        {
            Tape.Push(y, new LinearGeluSaved { Linear = saved, PreActivation = hPacked != null ? Tape.Keep(hPacked) : Tape.Save(h!) });
            if (hPacked != null) Tape.NoteGeluOf(y, hPacked); // y = GELU(h rounded), which the 16-bit h gives again
        }
        return y;
    }

    /// <summary>
    /// Whether a Linear whose input is <see cref="LinearGelu"/>'s output (fc2 after fc1 and GELU) keeps nothing for its
    /// weight gradient when fc1's pre-activation is kept in 16 bits (<see cref="SaveLinearOutputsInGemmPrecision"/> under
    /// bf16 or fp16 GEMMs), and computes its input again from that pre-activation in the backward (one GELU pass,
    /// <see cref="Kernels.IKernels.GeluForward"/>): bit for bit the values the forward read, since GELU reads the rounded
    /// pre-activation there too. Saves the widest activation a transformer block keeps twice ([tokens, 4·C] in 16 bits,
    /// 6,144 bytes per token and block for ViT-B) where fc2's weight trains (full fine-tuning, GPS). False keeps it (to
    /// compare).
    /// </summary>
    public static bool RecomputeGeluOutputs { get; set; } = true;

    /// <summary>For a fused Linear's 16-bit output y, a float32 tensor of its shape for the product (the GEMM's output,
    /// which the epilogue turns into y); null for a float32 y, which holds the product itself.</summary>
    static Tensor? ProductScratch(Tensor y) => y.DType == DType.F32 ? null : Tensor.Empty(y.Device, DType.F32, y.Shape);

    /// <summary>A tensor's 16-bit values, or null when there is none or it is float32.</summary>
    static ushort* Halves(Tensor? t) => t is { DType: DType.BF16 or DType.F16 } ? t.HalfData : null;

    /// <summary>
    /// Under bf16 or fp16 GEMMs (<see cref="Kernels.IKernels.GemmPrecision"/>) a Linear's output kept for the backward of
    /// the op fused after it is kept in that 16-bit format, as autocast keeps a Linear's 16-bit output for the op that
    /// reads it: <see cref="LinearGelu"/>'s pre-activation (GELU's slope; the widest activation a transformer block
    /// keeps, [tokens, 4·C]) and SSF's bias-free product at a Linear site (<see cref="LinearScaleShift(Tensor, Tensor,
    /// Tensor, Tensor, Tensor, bool)"/> and <see cref="LinearScaleShiftGelu"/>: dscale, and GELU's slope after it). Unlike
    /// <see cref="SaveGemmOperandsInGemmPrecision"/> this moves the gradient: it is taken at the rounded values (the
    /// forwards read them rounded either way: LinearGelu's GELU and SSF's scale-shift). False keeps them in float32 (to
    /// compare).
    /// </summary>
    public static bool SaveLinearOutputsInGemmPrecision { get; set; } = true;

    /// <summary>Where a fused Linear writes the output it keeps for backward: nothing when <paramref name="keep"/> is
    /// false; else a float32 tensor, or a 16-bit one under bf16 or fp16 GEMMs (<see cref="SaveLinearOutputsInGemmPrecision"/>),
    /// which the op hands to the tape (the float32 one is saved and disposed by the op).</summary>
    static (Tensor? Wide, Tensor? Packed) KeptLinearOutput(Device device, bool keep, int[] shape)
    {
        if (!keep) return (null, null);
        var precision = device.Kernels.GemmPrecision;
        return SaveLinearOutputsInGemmPrecision && precision is Kernels.Precision.BF16 or Kernels.Precision.FP16
            ? (null, Tensor.Empty(device, precision == Kernels.Precision.BF16 ? DType.BF16 : DType.F16, shape))
            : (Tensor.Empty(device, DType.F32, shape), null);
    }

    /// <summary>
    /// SSF at a Linear site in one pass: y = (x·Wᵀ)·scale + shift per output feature (shapes as in <see cref="Linear"/>,
    /// no bias: shift carries the folded γ⊙b + β), the scale-shift in the GEMM's epilogue on the CPU. The same values and
    /// gradients as <c>ScaleShift(Linear(x, W), scale, shift)</c> under fp32 and tf32 GEMMs; under bf16 or fp16 GEMMs the
    /// scale-shift reads the product rounded to that format, as autocast's <c>x * scale + shift</c> reads the Linear's
    /// 16-bit output (so a GPU writes the product in 16 bits straight from the GEMM). The bias-free product is written
    /// and kept only when scale trains (for dscale). <paramref name="residual"/> as in <see cref="Linear"/>: y = residual + (x·Wᵀ)·scale +
    /// shift, bit for bit <c>Add(residual, LinearScaleShift(x, W, scale, shift))</c>. <paramref name="gemmInput"/> as in
    /// <see cref="Linear"/> (not with a residual).
    /// </summary>
    public static Tensor LinearScaleShift(Tensor x, Tensor weight, Tensor scale, Tensor shift, Tensor? residual = null, bool gemmInput = false) =>
        LinearScaleShift("LinearScaleShift", x, weight, scale, shift, gelu: false, gemmInput, residual);

    /// <summary>
    /// SSF at an MLP's first layer and its activation in one pass: y = GELU((x·Wᵀ)·scale + shift) (shapes and shift as
    /// in <see cref="LinearScaleShift(Tensor, Tensor, Tensor, Tensor, Tensor, bool)"/>, the product rounded as there), both in the GEMM's
    /// epilogue on the CPU. The same values and gradients as <c>Gelu(LinearScaleShift(x, W, scale, shift))</c>, bit for bit on the CPU, with one
    /// activation kept instead of two: the bias-free product, from which the backward recomputes GELU's input.
    /// <paramref name="gemmInput"/> as in <see cref="LinearGelu"/>.
    /// </summary>
    public static Tensor LinearScaleShiftGelu(Tensor x, Tensor weight, Tensor scale, Tensor shift, bool gemmInput = false) =>
        LinearScaleShift("LinearScaleShiftGelu", x, weight, scale, shift, gelu: true, gemmInput);

    static Tensor LinearScaleShift(string op, Tensor x, Tensor weight, Tensor scale, Tensor shift, bool gelu, bool gemmInput = false, Tensor? residual = null)
    {
        var (rows, N, K, shape) = CheckLinear(op, x, weight, null, residual);
        if (gemmInput && residual != null) throw new ArgumentException($"{op}: a residual sum stays float32; gemmInput goes without a residual");
        CheckVector(op, "scale", scale, N, x);
        CheckVector(op, "shift", shift, N, x);
        var y = OutputFor(x.Device, gemmInput, shape);
        using var product = ProductScratch(y);
        bool record = Tape.ShouldRecord(x, weight, scale, shift) || Tape.ShouldRecord(residual);
        var (u, uPacked) = KeptLinearOutput(x.Device, record && (gelu || scale.RequiresGrad), shape);
        using var _ = u; // the op's reference to a float32 u (Tape.Save keeps an alias)
        var k = x.Device.Kernels;
        var saved = record ? SaveLinear(x, weight, null, rows, N, K, residual) : default;
        ushort* xPacked = PackedInput(x, saved), uHalves = Halves(uPacked);
        float* yData = (product ?? y).Data, uData = u == null ? null : u.Data;
        if (gelu) k.LinearScaleShiftGeluForward(yData, Halves(y), uData, uHalves, Floats(x), xPacked, weight.Data, scale.Data, shift.Data, rows, N, K);
        else k.LinearScaleShiftForward(yData, Halves(y), uData, uHalves, Floats(x), xPacked, weight.Data, scale.Data, shift.Data,
            residual == null ? null : residual.Data, rows, N, K);
        if (record)
            Tape.Push(y, new LinearScaleShiftSaved
            {
                Linear = saved, Scale = scale, Shift = shift, U = uPacked != null ? Tape.Keep(uPacked) : u == null ? null : Tape.Save(u),
                ShiftKept = gelu ? Tape.Save(shift) : null, // GELU's input is recomputed (a folded shift may be disposed by its caller)
                LinearNeedsGrad = x.RequiresGrad || weight.RequiresGrad,
            });
        return y;
    }

    static (int Rows, int N, int K, int[] Shape) CheckLinear(string op, Tensor x, Tensor weight, Tensor? bias, Tensor? residual = null)
    {
        var sixteen = x.DType is DType.BF16 or DType.F16 ? GemmInputType(x.Device) : null;
        if (x.DType is DType.BF16 or DType.F16 && sixteen != x.DType)
            throw new ArgumentException($"{op}: input {x.Describe()} needs {(x.DType == DType.BF16 ? "bf16" : "fp16")} GEMMs, not " +
                $"{x.Device.Kernels.GemmPrecision.Name()}{(SaveGemmOperandsInGemmPrecision ? "" : " with SaveGemmOperandsInGemmPrecision off")}");
        Check(op, "input", x, device: weight.Device, dtype: sixteen ?? DType.F32);
        Check(op, "weight", weight);
        int N = weight.Shape[0], K = (int)(weight.Count / Math.Max(1, N));
        if (LastDim(x) != K)
            throw new ArgumentException($"{op}: input {x.Describe()} has {LastDim(x)} features, weight {weight.Describe()} expects {K}");
        CheckVector(op, "bias", bias, N, x);
        var shape = (int[])x.Shape.Clone();
        shape[^1] = N;
        if (residual != null)
        {
            Check(op, "residual", residual, device: x.Device);
            if (!residual.Shape.AsSpan().SequenceEqual(shape))
                throw new ArgumentException($"{op}: residual {residual.Describe()} must have the output's shape [{string.Join(", ", shape)}]");
        }
        return (Rows(x), N, K, shape);
    }

    static LinearSaved SaveLinear(Tensor x, Tensor weight, Tensor? bias, int rows, int N, int K, Tensor? residual = null)
    {
        var geluOf = weight.RequiresGrad && RecomputeGeluOutputs ? Tape.GeluSource(x) : null;
        return new()
        {
            X = x, Weight = weight, Bias = bias, Residual = residual, Rows = rows, N = N, K = K,
            // Also for a weight training selected entries (GPS): autocast keeps the layer's input in 16 bits for its
            // gradient, and SparseWeightGrad widens each value it reads, summing in float32.
            XKept = !weight.RequiresGrad || geluOf != null ? null : x.DType != DType.F32 ? Tape.Save(x) : SaveGemmOperand(x), // a 16-bit x as it is
            XGeluOf = geluOf,
            XRecomputedType = geluOf == null ? DType.F32 : x.DType != DType.F32 ? x.DType : GemmInputType(x.Device) ?? DType.F32,
            WeightKept = !weight.IsLeaf ? Tape.Save(weight) : null, // a computed weight (z·zᵀ) may be disposed by its caller,
        };
    }

    /// <summary>
    /// Under bf16 or fp16 GEMMs (<see cref="Kernels.IKernels.GemmPrecision"/>) a tensor kept only to be a weight
    /// gradient's GEMM operand (a Linear's input, LoRA's x and x·Aᵀ) is kept in that 16-bit format, as autocast does:
    /// the GEMM rounds it to the same format anyway, so the gradient is bit for bit the one a float32 copy gives, in half
    /// the bytes. A Linear whose weight trains selected entries (GPS) keeps its input in 16 bits too, as autocast does
    /// for the dense masked gradient; its sparse gradient then sums the rounded inputs. False keeps float32 copies
    /// (to compare).
    /// </summary>
    public static bool SaveGemmOperandsInGemmPrecision { get; set; } = true;

    /// <summary>Keeps <paramref name="x"/> for backward as a weight gradient's GEMM operand (see
    /// <see cref="SaveGemmOperandsInGemmPrecision"/>); read it with <see cref="Tape.Operand"/>. The forward products may
    /// read the 16-bit copy too, instead of rounding x again.</summary>
    static Tensor SaveGemmOperand(Tensor x) =>
        GemmInputType(x.Device) != null ? Tape.SaveInPrecision(x, x.Device.Kernels.GemmPrecision) : Tape.Save(x);

    /// <summary>Under bf16 or fp16 GEMMs (and <see cref="SaveGemmOperandsInGemmPrecision"/>), a new 16-bit copy of the
    /// contiguous <paramref name="values"/> of this <paramref name="shape"/> for several products to share: one conversion
    /// instead of one in each product. Else null.</summary>
    static Tensor? PackForGemm(Device device, float* values, params int[] shape)
    {
        var precision = device.Kernels.GemmPrecision;
        if (!SaveGemmOperandsInGemmPrecision || precision is not (Kernels.Precision.BF16 or Kernels.Precision.FP16)) return null;
        var packed = Tensor.Empty(device, precision == Kernels.Precision.BF16 ? DType.BF16 : DType.F16, shape);
        device.Kernels.PackLowPrecision(packed.HalfData, values, packed.Count, precision);
        return packed;
    }

    /// <summary>LinearGelu's backward state: Linear's, and the pre-activation h [Rows, N] (float32 or 16 bits).</summary>
    struct LinearGeluSaved : IBackward<LinearGeluSaved>
    {
        public LinearSaved Linear;
        public Tensor PreActivation;

        public static void Backward(ref LinearGeluSaved s, Tensor y)
        {
            var k = y.Device.Kernels;
            // Where the backend reads packed operands, dh is written in 16 bits for the products: no packing pass before them.
            var type = k.ReadsPackedGemmOperands && s.Linear.ProductsReadDy ? GemmInputType(y.Device) : null;
            using var copy = type == null ? null : Tensor.Empty(y.Device, type.Value, y.Shape);
            var h = Tape.Operand(s.PreActivation);
            if (copy != null)
            {
                // Only the products, GPS's selected entries (which round it so) and the bias read dh: it is written in 16
                // bits alone, and a bias that trains sums it as it is made.
                if (Tape.GradAccumulatorIfNeeded(s.Linear.Bias) is var db && db != null)
                    k.BiasGeluBackward(copy.HalfData, db, y.Grad!.Data, h, s.Linear.Rows, s.Linear.N);
                else k.GeluBackward(null, copy.HalfData, y.Grad!.Data, h, y.Count, false);
                LinearSaved.Backward(ref s.Linear, k, GemmOperand.Packed(copy.HalfData), biasDone: true);
                return;
            }
            using var dh = Tensor.Empty(y.Device, DType.F32, y.Shape);
            k.GeluBackward(dh.Data, null, y.Grad!.Data, h, y.Count, false);
            LinearSaved.Backward(ref s.Linear, k, dh.Data);
        }
    }

    /// <summary>LinearScaleShift's and LinearScaleShiftGelu's backward state: ScaleShift's (after GELU's, recomputed from
    /// u) from the kept product u (dscale, dshift, du), then Linear's from du when x or W needs a gradient.</summary>
    struct LinearScaleShiftSaved : IBackward<LinearScaleShiftSaved>
    {
        public LinearSaved Linear;
        public Tensor Scale, Shift;
        public Tensor? U, ShiftKept;
        public bool LinearNeedsGrad;

        public static void Backward(ref LinearScaleShiftSaved s, Tensor y)
        {
            var k = y.Device.Kernels;
            // du feeds the Linear's products (or GPS's selected entries) alone, as it has no bias: in 16 bits under bf16
            // or fp16 GEMMs, which round it so (GemmInputType).
            var type = GemmInputType(y.Device);
            using var du = s.LinearNeedsGrad ? Tensor.Empty(y.Device, type ?? DType.F32, y.Shape) : null;
            float* dx = du is { DType: DType.F32 } ? du.Data : null, dscale = Tape.GradAccumulatorIfNeeded(s.Scale), dshift = Tape.GradAccumulatorIfNeeded(s.Shift);
            ushort* dxPacked = Halves(du);
            GemmOperand u = s.U == null ? (float*)null : Tape.Operand(s.U);
            if (s.ShiftKept != null)
                k.ScaleShiftGeluBackward(dx, dxPacked, dscale, dshift, y.Grad!.Data, u, s.Scale.Data, s.ShiftKept.Data, s.Linear.Rows, s.Linear.N, false);
            else k.ScaleShiftBackward(dx, dxPacked, dscale, dshift, y.Grad!.Data, u, s.Scale.Data, s.Linear.Rows, s.Linear.N, false);
            if (du != null) LinearSaved.Backward(ref s.Linear, k, dxPacked != null ? GemmOperand.Packed(dxPacked) : dx);
            s.Linear.HandOverToResidual(y);
        }
    }

    /// <summary>Linear's backward state: x [Rows, K], W [N, K], b [N], and the residual [Rows, N] added to the output.</summary>
    struct LinearSaved : IBackward<LinearSaved>
    {
        public Tensor X, Weight;
        /// <summary>XKept: x as kept for the weight gradient; or XGeluOf: fc1's kept 16-bit pre-activation, from which
        /// x is computed again in XRecomputedType (<see cref="RecomputeGeluOutputs"/>).</summary>
        public Tensor? Bias, Residual, XKept, XGeluOf, WeightKept;
        public DType XRecomputedType;
        public int Rows, N, K;

        /// <summary>Whether the weight trains selected entries (GPS), whose gradient <see cref="Kernels.IKernels.SparseWeightGrad"/>
        /// sums from dy and x rounded as a dense product would round them.</summary>
        public readonly bool SparseWeight => Weight is { RequiresGrad: true, Trainability.Entries: not null };

        /// <summary>Whether a product reads dy in the backward: dx's, or a dense dW's.</summary>
        public readonly bool ProductsReadDy => X.RequiresGrad || Weight.RequiresGrad && !SparseWeight;

        public static void Backward(ref LinearSaved s, Tensor y)
        {
            Backward(ref s, y.Device.Kernels, y.Grad!.Data, y.GradCopy is { } copy ? copy.HalfData : null);
            s.HandOverToResidual(y);
        }

        /// <summary>The residual's gradient, dy itself: handed over once nothing else reads dy (it may take dy's storage).</summary>
        public readonly void HandOverToResidual(Tensor y)
        {
            if (Residual is { RequiresGrad: true }) Tape.HandOverGradient(Residual, y.Grad!);
        }

        /// <summary>The backward from the output gradient dy [Rows, N]: float32, or 16-bit in the GEMMs' format when
        /// only the products and selected entries read it (no bias gradient, or one <paramref name="biasDone"/> already).
        /// <paramref name="dyCopy"/>: null, or a float32 dy's 16-bit copy, which the products and the selected entries
        /// read instead.</summary>
        public static void Backward(ref LinearSaved s, Kernels.IKernels k, GemmOperand dy, ushort* dyCopy = null, bool biasDone = false)
        {
            int rows = s.Rows, N = s.N, K = s.K;
            using var recomputed = s.XGeluOf == null ? null : Tensor.Empty(s.Weight.Device, s.XRecomputedType, s.XGeluOf.Shape);
            if (recomputed != null) k.GeluForward(Floats(recomputed), Halves(recomputed), Tape.Operand(s.XGeluOf!), recomputed.Count);
            var kept = s.XKept ?? recomputed;
            GemmOperand x = kept == null ? default : Tape.Operand(kept);
            float* dx = Tape.GradOutputIfNeeded(s.X, out bool acc);
            bool sparse = s.SparseWeight;
            float* dw = sparse ? null : Tape.GradAccumulatorIfNeeded(s.Weight);
            // A float32 dy without a copy feeds two readers when dx and dW (or its selected entries) are wanted: packed
            // once for both where the backend reads packed operands and saved inputs are packed (x kept in 16 bits).
            using var dyPacked = dyCopy == null && !dy.IsPacked && dx != null && (dw != null || sparse) && x.IsPacked && k.ReadsPackedGemmOperands
                ? PackForGemm(s.Weight.Device, dy.Floats, rows, N) : null;
            GemmOperand gradY = dyCopy != null ? GemmOperand.Packed(dyCopy) : dyPacked == null ? dy : GemmOperand.Packed(dyPacked.HalfData);
            if (dx != null) k.Gemm(false, false, rows, K, N, 1f, gradY, N, (s.WeightKept ?? s.Weight).Data, K, acc ? 1f : 0f, dx, K);
            if (sparse)
            {
                var index = s.Weight.Trainability.Entries!;
                k.SparseWeightGrad(Tape.SparseGradAccumulator(s.Weight), gradY, x, index.IntData, rows, N, K, index.Shape[1]);
            }
            else if (dw != null) k.Gemm(true, false, N, K, rows, 1f, gradY, N, x, K, 1f, dw, K);
            float* db = biasDone ? null : Tape.GradAccumulatorIfNeeded(s.Bias);
            if (db != null) k.BiasGrad(db, dy.Floats, rows, N);
        }
    }
}
