namespace Engine.Kernels;

/// <summary>
/// The raw compute interface every backend implements: the CPU (<c>CpuKernels</c>), and CUDA on a GPU or on the
/// emulated device (<c>CudaKernels</c>).
/// Kernels see pointers and sizes only: no tensors, no autograd. Pointers are device addresses of the
/// backend that owns them. All float data is row-major float32.
/// </summary>
/// <remarks>
/// Gradient rule (llm.c): parameter gradients accumulate (<c>+=</c>); activation gradients are written
/// (<c>=</c>) unless <c>accumulate</c> is true, which the engine sets when a tensor already holds a gradient
/// from another consumer (the residual stream). A null gradient pointer means "not needed": the kernel skips
/// that work entirely (frozen means free).
/// Shapes use B (batch), T (tokens), C (channels), NH (heads), HD (head dim), N,H,W,C for images.
/// </remarks>
public unsafe interface IKernels
{
    /// <summary>Backend name as used in tests and on the command line (<c>cpu</c>, <c>cuda</c>, ...).</summary>
    string Name { get; }

    // ---------------------------------------------------------------- GEMM
    /// <summary>The format of the GEMMs' operands (<see cref="Gemm"/>, <see cref="GemmStridedBatched"/>,
    /// <see cref="LinearForward"/>): rounded to it, products accumulated in fp32, results fp32. Default
    /// <see cref="Precision.FP32"/>. Every other kernel computes in fp32.</summary>
    Precision GemmPrecision { get; set; }

    /// <summary>Whether this backend reads 16-bit packed GEMM operands (<see cref="GemmOperand.Packed"/>) as they are
    /// (cuBLAS; the emulated device stands in for it), rather than widening them first (the CPU, whose GEMM rounds
    /// float32 operands as it packs its blocks). Where true, an operand that feeds several products is packed once
    /// for all of them; a saved activation is packed either way.</summary>
    bool ReadsPackedGemmOperands { get; }

    /// <summary>C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C. op(X) = X or Xᵀ.
    /// A is [M,K] (lda ≥ K) or, transposed, [K,M] (lda ≥ M); B is [K,N] (ldb ≥ N) or [N,K] (ldb ≥ K).
    /// beta = 0 never reads C. A or B may be packed in the 16-bit <see cref="GemmPrecision"/> (<see cref="GemmOperand"/>):
    /// a saved activation read as it was kept.</summary>
    void Gemm(bool transA, bool transB, int M, int N, int K, float alpha, GemmOperand A, int lda, GemmOperand B, int ldb,
        float beta, float* C, int ldc);

    /// <summary><see cref="Gemm"/> over <paramref name="batch"/> matrices spaced by the given element strides.</summary>
    void GemmStridedBatched(bool transA, bool transB, int M, int N, int K, float alpha,
        GemmOperand A, int lda, long strideA, GemmOperand B, int ldb, long strideB,
        float beta, float* C, int ldc, long strideC, int batch);

    /// <summary>The Linear layer's forward: y[rows, N] = x[rows, K]·Wᵀ + bias, W [N, K], bias [N] or null. The CPU adds
    /// the bias to each tile of y while it is still in cache; other backends may run a GEMM and then the bias add.
    /// xPacked: null, or x already packed in the 16-bit <see cref="GemmPrecision"/> (the copy kept for backward, or an
    /// input written in 16 bits by the op before: then x is null), which a backend may read instead of rounding x again
    /// (the same values); so may the fused forms below. residual: null, or [rows, N] added last, y = residual + (x·Wᵀ +
    /// bias), bit for bit an add after the layer (a transformer block's residual stream, added while y is in cache; y is
    /// not residual). yPacked: null, or where y is written instead, in the 16-bit <see cref="GemmPrecision"/> (an output
    /// only products read, as <see cref="LinearGeluForward"/>'s; not with a residual); y is then scratch for the float32
    /// product.</summary>
    void LinearForward(float* y, ushort* yPacked, float* x, ushort* xPacked, float* w, float* bias, float* residual, int rows, int N, int K);

    /// <summary>The Linear layer followed by GELU (the MLP's fc1 and its activation) with the activation in the GEMM's
    /// epilogue: h = x[rows, K]·Wᵀ + bias, y = GELU(h), both [rows, N]; h is written only when not null (training keeps
    /// it for the backward), so inference makes one pass over the output instead of three. hPacked: null, or where h is
    /// written instead in the 16-bit <see cref="GemmPrecision"/> (as autocast keeps a Linear's output for GELU's
    /// backward); at most one of h and hPacked is given. Under bf16 or fp16 GEMMs GELU reads h rounded to that format,
    /// whichever of h, hPacked or neither is written (autocast's GELU reads the Linear's 16-bit output), so that
    /// <see cref="GeluForward"/> from hPacked gives y again bit for bit; h itself is kept unrounded. yPacked: null, or
    /// where y is written instead, in the 16-bit <see cref="GemmPrecision"/> (an output only products read, which would
    /// round it so); y is then scratch for the float32 product, its contents undefined afterwards.</summary>
    void LinearGeluForward(float* y, ushort* yPacked, float* h, ushort* hPacked, float* x, ushort* xPacked, float* w, float* bias, int rows, int N, int K);

    /// <summary>SSF at a Linear site in one pass: u = x[rows, K]·Wᵀ (the layer without its bias), y = u·scale + shift per
    /// column (shift carries the folded γ⊙b + β), both [rows, N]; u is written only when not null (kept for dscale), or
    /// into uPacked in the 16-bit <see cref="GemmPrecision"/> instead (as <see cref="LinearGeluForward"/>'s hPacked).
    /// Under bf16 or fp16 GEMMs the scale-shift reads u rounded to that format, whichever of u, uPacked or neither is
    /// written (autocast's x·scale + shift reads the Linear's 16-bit output), so the backward's kept 16-bit u is what
    /// y was computed from; u itself is kept unrounded. The CPU applies the scale-shift to each GEMM tile while it is in
    /// cache; other backends may run a GEMM and then one elementwise pass. yPacked as in <see cref="LinearGeluForward"/>. residual: null, or [rows, N] added
    /// last as in <see cref="LinearForward"/>, y = residual + (u·scale + shift) (y float32 then, not yPacked).</summary>
    void LinearScaleShiftForward(float* y, ushort* yPacked, float* u, ushort* uPacked, float* x, ushort* xPacked, float* w, float* scale, float* shift, float* residual, int rows, int N, int K);

    /// <summary>SSF at an MLP's first Linear and its GELU in one pass: u = x[rows, K]·Wᵀ, y = GELU(u·scale + shift) per
    /// column, both [rows, N]; u is written only when not null (training keeps it: its backward,
    /// <see cref="ScaleShiftGeluBackward"/>, needs it for dscale and for GELU's slope), or into uPacked in 16 bits
    /// instead; u is rounded as in <see cref="LinearScaleShiftForward"/> before the scale-shift reads it. The CPU
    /// applies both to each GEMM tile while it is in cache; other backends may run a GEMM and then one elementwise
    /// pass. yPacked as in <see cref="LinearGeluForward"/>.</summary>
    void LinearScaleShiftGeluForward(float* y, ushort* yPacked, float* u, ushort* uPacked, float* x, ushort* xPacked, float* w, float* scale, float* shift, int rows, int N, int K);

    /// <summary>Promises that the <paramref name="count"/> floats at <paramref name="w"/> (a Linear weight [N, K] of
    /// <see cref="LinearForward"/> and its fused forms) stay unchanged until <see cref="ThawWeight"/>, so the backend may
    /// keep them packed for its GEMM: the CPU packs a frozen weight at its first product and reuses the panels (as much
    /// memory again as the weight); cuBLAS needs no packing. Calls nest: the weight is frozen until thawed as often.
    /// Returns whether the backend keeps a packed copy.</summary>
    bool FreezeWeight(float* w, long count);

    /// <summary>Ends one <see cref="FreezeWeight"/> of <paramref name="w"/>; the last one frees any packed copy. Returns
    /// whether w was frozen.</summary>
    bool ThawWeight(float* w);

    // ---------------------------------------------------------------- precision
    /// <summary>y[i] = x[i] rounded to <paramref name="precision"/> (to nearest, ties to even), kept as float; y may
    /// alias x. Bit for bit <see cref="LowPrecision.Round(float, Precision)"/> on every backend.</summary>
    void RoundToPrecision(float* y, float* x, long n, Precision precision);
    /// <summary>y = x in 16-bit storage (<see cref="Precision.BF16"/> or <see cref="Precision.FP16"/> bit patterns),
    /// rounded as <see cref="RoundToPrecision"/> rounds: activations saved for backward in the GEMMs' precision.</summary>
    void PackLowPrecision(ushort* y, float* x, long n, Precision precision);
    /// <summary>y = the 16-bit values x (<see cref="Precision.BF16"/> or <see cref="Precision.FP16"/>) as floats (exact).</summary>
    void UnpackLowPrecision(float* y, ushort* x, long n, Precision precision);
    /// <summary><see cref="PackLowPrecision"/> of every target, bit for bit, in as few launches as the backend can (a
    /// training step's weights: on a GPU, up to 32 tensors of any size share one).</summary>
    void PackLowPrecisionMany(ReadOnlySpan<PackTarget> targets, Precision precision);
    /// <summary>
    /// Until the next call (an empty span ends it): a product in <paramref name="precision"/> (bf16 or fp16, as
    /// <see cref="GemmPrecision"/> is when it runs; a product in another precision ignores the copies) whose float32
    /// operand lies within one of the copies' <see cref="PackTarget.X"/> reads the same values of its
    /// <see cref="PackTarget.Y"/> instead of converting them, with the same results bit for bit. Each Y must hold
    /// <see cref="PackLowPrecision"/> of its X in that precision (<see cref="PackLowPrecisionMany"/>), and X must not
    /// change while shared. A backend that does not read 16-bit operands
    /// (<see cref="ReadsPackedGemmOperands"/> false) ignores the copies. Returns whether the products read them.
    /// </summary>
    bool ShareWeightCopies(ReadOnlySpan<PackTarget> copies, Precision precision);

    // ---------------------------------------------------------------- elementwise and bias
    /// <summary>x[i] = value for i &lt; n.</summary>
    void Fill(float* x, long n, float value);
    /// <summary><see cref="Fill"/> of every tensor in <paramref name="targets"/> (zeroing a model's gradients): the
    /// same values, in as few launches as the backend can (on a GPU, small tensors share one).</summary>
    void FillMany(ReadOnlySpan<TensorSpan> targets, float value);
    /// <summary>dst[i] = src[i] (accumulate: +=).</summary>
    void Copy(float* dst, float* src, long n, bool accumulate);
    /// <summary>Copies a strided view into a contiguous buffer: dst[flat(idx)] = src[Σ idx_d·srcStrides_d],
    /// rank ≤ 8, shape and strides in elements.</summary>
    void CopyStrided(float* dst, float* src, int rank, int* shape, long* srcStrides);
    /// <summary>x[i] *= s.</summary>
    void Scale(float* x, long n, float s);
    /// <summary>y[i] = a[i] + b[i] (residual add; y may alias a or b).</summary>
    void Add(float* y, float* a, float* b, long n);
    /// <summary>y[r,c] = x[r,c] + bias[c]; x,y [rows, cols], bias [cols]; y may alias x.
    /// Also the position-embedding add (rows = B, cols = T·C).</summary>
    void AddBias(float* y, float* x, float* bias, int rows, int cols);
    /// <summary>dbias[c] += Σ_r dy[r,c]; dy [rows, cols]. Deterministic order.</summary>
    void BiasGrad(float* dbias, float* dy, int rows, int cols);

    // ---------------------------------------------------------------- normalisation and activations
    /// <summary>LayerNorm over the last dim. x,y [rows,C]; weight,bias [C] (null = identity);
    /// mean, rstd [rows] saved for backward (null in inference: not written). yPacked: null, or where y is written
    /// instead (y null), in the 16-bit <see cref="GemmPrecision"/>: a norm whose output only products read.</summary>
    void LayerNormForward(float* y, ushort* yPacked, float* mean, float* rstd, float* x, float* weight, float* bias, int rows, int C, float eps);
    /// <summary>dx [rows,C] (null to skip); dweight, dbias [C] accumulate (null to skip). dxCopy: null, or where the
    /// values stored in dx (after accumulating) are also written in the 16-bit <see cref="GemmPrecision"/>: the copy the
    /// products reading this gradient take (the Linear layer that made x), instead of a packing pass over dx.</summary>
    void LayerNormBackward(float* dx, ushort* dxCopy, float* dweight, float* dbias, float* dy, float* x, float* weight,
        float* mean, float* rstd, int rows, int C, bool accumulate);
    /// <summary>Exact GELU: y = x·Φ(x) = 0.5·x·(1 + erf(x/√2)); n elements. x float32, or packed in the 16-bit
    /// <see cref="GemmPrecision"/>, each value widened exactly as it is read. yPacked: null, or where y is written instead
    /// (y null), in that 16-bit format: the input of fc2 computed again in the backward from fc1's kept 16-bit
    /// pre-activation, bit for bit what <see cref="LinearGeluForward"/> wrote.</summary>
    void GeluForward(float* y, ushort* yPacked, GemmOperand x, long n);
    /// <summary>dx = dy·(Φ(x) + x·φ(x)); x float32, or packed in the 16-bit <see cref="GemmPrecision"/> (LinearGelu's
    /// pre-activation kept as <see cref="LinearGeluForward"/>'s hPacked), each value widened exactly as it is read.
    /// dxCopy: null, or where dx (written, not accumulated) is also written in the 16-bit <see cref="GemmPrecision"/>: the
    /// products' copy of a gradient that a bias sums in float32 (fc1's); with dx null, the only output (an fc1 whose bias
    /// does not train: only the products read dh).</summary>
    void GeluBackward(float* dx, ushort* dxCopy, float* dy, GemmOperand x, long n, bool accumulate);
    /// <summary>The backward of <see cref="LinearGeluForward"/>'s bias and GELU where the Linear's products read dh in 16
    /// bits: dh = dy·(Φ(h) + h·φ(h)) [rows, cols] written only into dhPacked, in the 16-bit <see cref="GemmPrecision"/>,
    /// and dbias [cols] += Σ_rows dh in float32. Bit for bit <see cref="GeluBackward"/> (dx float32, dxCopy dhPacked) then
    /// <see cref="BiasGrad"/> over that dx, without the float32 dh written and read again. h as in
    /// <see cref="GeluBackward"/>.</summary>
    void BiasGeluBackward(ushort* dhPacked, float* dbias, float* dy, GemmOperand h, int rows, int cols);
    /// <summary>ReLU: y = max(x, 0); n elements (y may be x).</summary>
    void ReluForward(float* y, float* x, long n);
    /// <summary>dx = dy where x &gt; 0, else 0 (PyTorch's rule at 0).</summary>
    void ReluBackward(float* dx, float* dy, float* x, long n, bool accumulate);
    /// <summary>Row softmax, max-subtracted: x,y [rows, cols].</summary>
    void SoftmaxForward(float* y, float* x, int rows, int cols);
    /// <summary>dx = y ⊙ (dy − Σ_j dy·y) per row. dxPacked: null, or where dx is written instead (dx null, not
    /// accumulating), in the 16-bit <see cref="GemmPrecision"/>: attention's score gradient, which only products read.
    /// y float32, or packed in the 16-bit <see cref="GemmPrecision"/> (attention's probabilities kept as the P·v product
    /// read them): the same results as from y widened.</summary>
    void SoftmaxBackward(float* dx, ushort* dxPacked, float* dy, GemmOperand y, int rows, int cols, bool accumulate);
    /// <summary>y[r,c] = x[r,c]·scale[c] + shift[c] (SSF); x,y [rows,C].</summary>
    void ScaleShiftForward(float* y, float* x, float* scale, float* shift, int rows, int C);
    /// <summary>dx = dy·scale; dscale += Σ_r dy·x; dshift += Σ_r dy. Each output may be null. x float32, or packed in the
    /// 16-bit <see cref="GemmPrecision"/> (SSF's product kept by <see cref="LinearScaleShiftForward"/>'s uPacked).
    /// dxPacked: null, or where dx is written instead (dx null, not accumulating), in the 16-bit
    /// <see cref="GemmPrecision"/>: the gradient of SSF's Linear product, which only the Linear's products read.</summary>
    void ScaleShiftBackward(float* dx, ushort* dxPacked, float* dscale, float* dshift, float* dy, GemmOperand x, float* scale, int rows, int C, bool accumulate);
    /// <summary>The backward of y = GELU(x·scale + shift) in one pass over dy: g = dy·GELU'(x·scale + shift), dx = g·scale;
    /// dscale += Σ_r g·x; dshift += Σ_r g. x,dy,dx [rows,C]; dx, dscale and dshift may each be null; x float32 or packed in
    /// 16 bits, and dxPacked, as for <see cref="ScaleShiftBackward"/>.</summary>
    void ScaleShiftGeluBackward(float* dx, ushort* dxPacked, float* dscale, float* dshift, float* dy, GemmOperand x, float* scale, float* shift, int rows, int C, bool accumulate);
    /// <summary>Many small one-row scale-shifts at once, y = x ⊙ scale + shift per vector (<see cref="ScaleShiftForward"/>
    /// of one row, the same values): SSF's scale and shift folded into every layer's bias and norm weight, in as few
    /// launches as the backend can (on a GPU, 32 vectors share one) instead of one each. Outputs must not overlap.</summary>
    void ScaleShiftMany(ReadOnlySpan<ScaleShiftVector> vectors);
    /// <summary><see cref="ScaleShiftMany"/>'s backward, each vector as <see cref="ScaleShiftBackward"/> of one row would
    /// compute it, in the span's order: vectors may share a gradient target (a LayerNorm's γ scales its weight and its
    /// bias), and then a later vector adds after an earlier one. Two targets are the same vector or do not overlap.</summary>
    void ScaleShiftManyBackward(ReadOnlySpan<ScaleShiftVectorGrad> vectors);

    // ---------------------------------------------------------------- attention pieces
    /// <summary>qkv [B,T,3,NH,HD] → heads [3,B,NH,T,HD]: q, k and v each [B,NH,T,HD] (timm's q|k|v column layout).
    /// headsPacked: null, or where the heads are written instead (heads null), in the 16-bit <see cref="GemmPrecision"/>:
    /// the attention products' operands. qkv float32, or packed in the 16-bit <see cref="GemmPrecision"/> (the qkv layer's
    /// output written so, see <see cref="FusedAttentionKeepsSixteenBits"/>): the heads are then its values as they are.</summary>
    void SplitHeads(float* heads, ushort* headsPacked, GemmOperand qkv, int B, int T, int NH, int HD);
    /// <summary>Inverse of <see cref="SplitHeads"/>: dqkv [B,T,3·NH·HD] from dq, dk, dv [B,NH,T,HD]. dqkvCopy as
    /// <see cref="LayerNormBackward"/>'s dxCopy (the qkv layer's products read it).</summary>
    void SplitHeadsBackward(float* dqkv, ushort* dqkvCopy, float* dq, float* dk, float* dv, int B, int T, int NH, int HD, bool accumulate);
    /// <summary>o [B,NH,T,HD] → y [B,T,NH·HD] (head h owns columns h·HD..h·HD+HD−1).
    /// yPacked: null, or where y is written instead (y null), in the 16-bit <see cref="GemmPrecision"/>: an attention
    /// output that only the projection's products read.</summary>
    void MergeHeads(float* y, ushort* yPacked, float* o, int B, int T, int NH, int HD);
    /// <summary>do [B,NH,T,HD] from dy [B,T,NH·HD]; or doutPacked instead (dout null, not accumulating), in the 16-bit
    /// <see cref="GemmPrecision"/>: the gradient the two products after it read.</summary>
    void MergeHeadsBackward(float* dout, ushort* doutPacked, float* dy, int B, int T, int NH, int HD, bool accumulate);
    /// <summary>Attention probabilities: p[b,h,i,:] = softmax(s[b,h,i,:] + bias[h,i,:] + mask[b mod nW,i,:]).
    /// s,p [B,NH,T,T] (p may alias s); bias [NH,T,T] or null; mask [nW,T,T] or null (Swin windows: B = images·nW).
    /// The bias gradient is <see cref="BiasGrad"/> over rows = B, cols = NH·T·T of the pre-softmax gradient.
    /// pCopy: null, or where p is also written in the 16-bit <see cref="GemmPrecision"/>: the P·v product's operand.
    /// p null (pCopy given): only the 16-bit values are written, each the float32 one rounded, and s is left as scratch
    /// (undefined values); the backward then reads the probabilities in 16 bits too.</summary>
    void AttentionSoftmaxForward(float* p, ushort* pCopy, float* s, float* bias, float* mask, int B, int NH, int T, int nW);
    /// <summary>Fused attention, no [T,T] matrix in memory: y [B,T,NH·HD] = heads of
    /// softmax(scale·q·kᵀ + bias[h] + mask[b mod nW])·v, read straight from qkv [B,T,3·NH·HD] (timm's q|k|v columns);
    /// lse [B,NH,T] the log-sum-exp of each score row, kept for the backward. bias [NH,T,T], mask [nW,T,T] or null.
    /// The products' operands (q, k, v, the probabilities; in the backward also dy and the score gradient) are rounded to
    /// <see cref="GemmPrecision"/>, as the unfused path's GEMMs and tensor-core attention round them. yPacked: null, or
    /// where y is written instead (y null), rounded to the 16-bit <see cref="GemmPrecision"/>: an output only products
    /// and the backward read (see <see cref="FusedAttentionKeepsSixteenBits"/>). qkv float32, or packed in the 16-bit
    /// <see cref="GemmPrecision"/> (the values the kernels round q, k and v to: the same results) where
    /// <see cref="FusedAttentionKeepsSixteenBits"/> says the backend reads it so; the CPU widens it.</summary>
    void FusedAttentionForward(float* y, ushort* yPacked, float* lse, GemmOperand qkv, float* bias, float* mask, int B, int T, int NH, int HD, int nW, float scale);
    /// <summary>Backward of <see cref="FusedAttentionForward"/> from dy [B,T,NH·HD] and the forward's y and lse, the
    /// probabilities recomputed: dqkv [B,T,3·NH·HD] (written, or added to with accumulate; null: not needed) and
    /// dbias [NH,T,T] += Σ_b of the score gradient (null when the bias does not train). delta [B,NH,T] is workspace
    /// (Σ_d dy·y per row and head). qkv float32, or packed in the 16-bit <see cref="GemmPrecision"/> where
    /// <see cref="FusedAttentionKeepsSixteenBits"/> says the backend reads it so (the values the kernels round q, k and v
    /// to: the same results); y likewise float32 or the forward's 16-bit yPacked (Σ dy·y then sums the rounded values).
    /// The CPU widens packed values; CUDA refuses those its tensor-core kernels do not take. dqkvCopy as
    /// <see cref="LayerNormBackward"/>'s dxCopy (the qkv layer's products read it).</summary>
    void FusedAttentionBackward(float* dqkv, ushort* dqkvCopy, float* dbias, float* delta, float* dy, GemmOperand y, float* lse, GemmOperand qkv, float* bias,
        float* mask, int B, int T, int NH, int HD, int nW, float scale, bool accumulate);

    /// <summary>Whether the fused attention's kernels, for heads of <paramref name="headDim"/> with or without a trained
    /// <paramref name="bias"/>, take the values the op keeps for the backward in the 16-bit <see cref="GemmPrecision"/>:
    /// q|k|v, which <see cref="FusedAttentionBackward"/> reads as it is (the values it rounds them to: the same
    /// gradients, half the bytes kept), and an output that only products read, which the forward then writes in 16 bits
    /// and the backward's Σ dy·y reads so (as flash attention keeps its output). Where it does, the attention's forward
    /// on either path (<see cref="FusedAttentionForward"/>, <see cref="SplitHeads"/>) also reads q|k|v in 16 bits as it
    /// is, so the qkv layer may write it so. CUDA's tensor-core kernels do (head dim 64 or 32, bf16 or fp16, no bias gradient);
    /// the CPU's products read float32.</summary>
    bool FusedAttentionKeepsSixteenBits(int headDim, bool bias);

    // ---------------------------------------------------------------- loss
    /// <summary>Mean softmax cross-entropy with label smoothing ε: target distribution (1−ε)·onehot + ε/V.
    /// logits [B,V]; targets [B] in [0,V); loss [1] written.</summary>
    void CrossEntropyForward(float* loss, float* logits, int* targets, int B, int V, float smoothing);
    /// <summary>dlogits = dloss[0]/B · (softmax(logits) − target distribution); probabilities are never stored.</summary>
    void CrossEntropyBackward(float* dlogits, float* dloss, float* logits, int* targets, int B, int V, float smoothing, bool accumulate);

    // ---------------------------------------------------------------- convolution and patches
    /// <summary>Depthwise 2-D convolution, stride 1, channels-last. x [N,H,W,C]; w [C,k,k]; bias [C] or null;
    /// y [N,Ho,Wo,C] with Ho = H + 2·pad − k + 1 (zero padding).</summary>
    void DepthwiseConvForward(float* y, float* x, float* w, float* bias, int N, int H, int W, int C, int k, int pad);
    /// <summary>dx [N,H,W,C] (null to skip); dw [C,k,k] and dbias [C] accumulate (null to skip).</summary>
    void DepthwiseConvBackward(float* dx, float* dw, float* dbias, float* dy, float* x, float* w,
        int N, int H, int W, int C, int k, int pad, bool accumulate);
    /// <summary>Non-overlapping p×p patches: x [N,C,H,W] (or [N,H,W,C] when channelsLast) →
    /// patches [N, (H/p)·(W/p), C·p·p] with inner index c·p·p + ky·p + kx (a conv weight [O,C,p,p] flattened).</summary>
    void Patchify(float* patches, float* x, int N, int C, int H, int W, int p, bool channelsLast);
    /// <summary>Scatter of <see cref="Patchify"/>: dx from dpatches.</summary>
    void PatchifyBackward(float* dx, float* dpatches, int N, int C, int H, int W, int p, bool channelsLast, bool accumulate);

    // ---------------------------------------------------------------- token ops
    /// <summary>y [B,T+1,C]: y[b,0] = token [C], y[b,1+t] = x[b,t].</summary>
    void PrependToken(float* y, float* x, float* token, int B, int T, int C);
    /// <summary>dx [B,T,C] = dy[:,1:] (null to skip); dtoken [C] += Σ_b dy[b,0] (null to skip).</summary>
    void PrependTokenBackward(float* dx, float* dtoken, float* dy, int B, int T, int C, bool accumulate);
    /// <summary>y [B,C] = x[b, index] for x [B,T,C].</summary>
    void TakeToken(float* y, float* x, int B, int T, int C, int index);
    /// <summary>dx [B,T,C]: dy at token <paramref name="index"/>, zero elsewhere (accumulate: adds at index only).</summary>
    void TakeTokenBackward(float* dx, float* dy, int B, int T, int C, int index, bool accumulate);
    /// <summary>dst[b, dstStart + t] (+)= src[b, srcStart + t] for t &lt; count: a run of tokens of src [B, srcTokens, C]
    /// into dst [B, dstTokens, C] (concatenating and slicing along tokens, and their gradients).</summary>
    void CopyTokens(float* dst, int dstTokens, int dstStart, float* src, int srcTokens, int srcStart, int count, int B, int C, bool accumulate);
    /// <summary>y [B,C] = mean over t of x [B,T,C].</summary>
    void MeanTokens(float* y, float* x, int B, int T, int C);
    /// <summary>dx [B,T,C] = dy [B,C] / T.</summary>
    void MeanTokensBackward(float* dx, float* dy, int B, int T, int C, bool accumulate);

    // ---------------------------------------------------------------- Swin
    /// <summary>Cyclic shift then window partition: x [B,H,W,C] → windows [B·(H/ws)·(W/ws), ws·ws, C],
    /// windows[b·nW + wr·(W/ws) + wc, ty·ws + tx] = x[b, (wr·ws+ty+shift) mod H, (wc·ws+tx+shift) mod W].</summary>
    void WindowPartition(float* windows, float* x, int B, int H, int W, int C, int ws, int shift, bool accumulate);
    /// <summary>Exact inverse of <see cref="WindowPartition"/> (window reverse, then the reverse shift).</summary>
    void WindowReverse(float* x, float* windows, int B, int H, int W, int C, int ws, int shift, bool accumulate);
    /// <summary>2×2 patch merging gather: x [B,H,W,C] → y [B,H/2,W/2,4C] with channel blocks
    /// x[2i,2j], x[2i+1,2j], x[2i,2j+1], x[2i+1,2j+1].</summary>
    void PatchMerge(float* y, float* x, int B, int H, int W, int C);
    /// <summary>Scatter of <see cref="PatchMerge"/>.</summary>
    void PatchMergeBackward(float* dx, float* dy, int B, int H, int W, int C, bool accumulate);
    /// <summary>Swin's relative position bias for ws×ws windows (T = ws²): bias[h,i,j] = table[r(i,j), h] with
    /// r = (yi−yj+ws−1)·(2ws−1) + (xi−xj+ws−1) for tokens i = yi·ws+xi, j = yj·ws+xj. table [(2ws−1)², NH];
    /// bias [NH, T, T].</summary>
    void RelativePositionBias(float* bias, float* table, int NH, int ws);
    /// <summary>Scatter-add of <see cref="RelativePositionBias"/>: dtable[r,h] = Σ over the (i,j) with offset r of
    /// dbias[h,i,j], summed per table entry in a fixed order (no atomics).</summary>
    void RelativePositionBiasBackward(float* dtable, float* dbias, int NH, int ws, bool accumulate);

    // ---------------------------------------------------------------- regularisation
    /// <summary>Drops whole samples: x,y [samples, perSample]; sample s is kept (scaled by 1/(1−p)) when
    /// uniform(seed, s) ≥ p. Stochastic depth uses one sample per image; perSample = 1 is element dropout.
    /// Counter-based: the mask is recomputed in backward, never stored. seedOffset: null, or a device pointer to a
    /// value XORed into seed when the kernel runs (a captured graph's replays each write a new one there).</summary>
    void DropPathForward(float* y, float* x, long samples, long perSample, float p, ulong seed, ulong* seedOffset);
    /// <summary>y = residual + <see cref="DropPathForward"/>(x) in one pass (a block's residual join after stochastic
    /// depth): the same mask, the kept values' products rounded before the add, so the bits of DropPathForward then
    /// <see cref="Add"/>. Its gradients: dy for the residual, <see cref="DropPathBackward"/>(dy) for x.</summary>
    void DropPathAdd(float* y, float* residual, float* x, long samples, long perSample, float p, ulong seed, ulong* seedOffset);
    /// <summary>Gradient of <see cref="DropPathForward"/>.</summary>
    void DropPathBackward(float* dx, float* dy, long samples, long perSample, float p, ulong seed, ulong* seedOffset, bool accumulate);

    // ---------------------------------------------------------------- PEFT: salient channels (SCT), sparse rows (GPS), contrastive loss
    /// <summary>y[r,j] = x[r, index[j]] (accumulate: +=); x [rows,C], y [rows,K], index [K] distinct channels in [0,C).</summary>
    void GatherChannels(float* y, float* x, int* index, int rows, int C, int K, bool accumulate);
    /// <summary>y[r,c] = x[r,c], plus z[r,j] + bias[j] where c = index[j]; x,y [rows,C], z [rows,K], bias [K] or null,
    /// index [K] distinct. y may alias x (then only the K selected channels are read and written).</summary>
    void ScatterAddChannels(float* y, float* x, float* z, float* bias, int* index, int rows, int C, int K);
    /// <summary>The selected entries of a linear layer's weight gradient: dvalues[o,j] += Σ_r dy[r,o]·x[r, index[o,j]]
    /// for y = x·Wᵀ; dy [rows,N] and x [rows,K] float32, or packed in the 16-bit <see cref="GemmPrecision"/> (x as the
    /// Linear kept it, dy as the products read it), index [N,k] (columns of W), dvalues [N,k]. Each term's operands are
    /// those the dense product dyᵀ·x reads under <see cref="GemmPrecision"/>: float32 values are rounded to it as they
    /// are read (so the entries are the dense gradient's, from the same operands, whichever form they come in); the sum
    /// is float32, in a deterministic order.</summary>
    void SparseWeightGrad(float* dvalues, GemmOperand dy, GemmOperand x, int* index, int rows, int N, int K, int k);
    /// <summary>dvalues[o,j] += dense[o·K + index[o,j]]: the selected entries of a dense [N,K] gradient (a weight that
    /// trains sparsely in an op whose gradient is formed dense, such as the depthwise convolution's).</summary>
    void AddSelectedEntries(float* dvalues, float* dense, int* index, int N, int K, int k);
    /// <summary><see cref="AdamStep"/> on the entries param[o·K + index[o,j]] of a [N,K] parameter, with gradient and
    /// moments [N,k] (only the selected entries have optimizer state); every other entry is untouched.</summary>
    void SparseAdamStep(float* param, float* grad, float* m, float* v, int* index, int N, int K, int k, float lr,
        float beta1, float beta2, float eps, float weightDecay, int t, bool decoupled, float* stepValues);
    /// <summary>y[r] = x[r] / max(‖x[r]‖₂, eps) per row (torch's F.normalize); x,y [rows,C].</summary>
    void L2NormalizeForward(float* y, float* x, int rows, int C, float eps);
    /// <summary>dx = (dy − y·(y·dy)) / ‖x‖ per row (dy / eps where ‖x‖ ≤ eps); y the forward output.</summary>
    void L2NormalizeBackward(float* dx, float* dy, float* x, float* y, int rows, int C, float eps, bool accumulate);
    /// <summary>Supervised contrastive loss (Khosla et al.) from similarities s [N,N] of unit features and labels [N]:
    /// for anchor i, ℓ_i = −mean over positives p (labels equal, p ≠ i) of (s_ip/τ − log Σ_{a≠i} exp(s_ia/τ)), 0 for an
    /// anchor without positives; loss [1] = mean of ℓ_i over all N anchors.</summary>
    void SupConForward(float* loss, float* s, int* labels, int N, float temperature);
    /// <summary>ds[i,a] = dloss[0]/N · (softmax over a ≠ i of s_i/τ − [a positive]/|P_i|) / τ; 0 on the diagonal and in
    /// the rows of anchors without positives.</summary>
    void SupConBackward(float* ds, float* dloss, float* s, int* labels, int N, float temperature, bool accumulate);

    // ---------------------------------------------------------------- optimizer and reductions
    /// <summary>One Adam step (t ≥ 1) on n elements with bias correction. decoupled: AdamW (p −= lr·wd·p);
    /// otherwise Adam with L2 (g += wd·p) as torch.optim.Adam. mask [n] (1 trainable / 0 frozen) or null:
    /// masked-out elements keep their parameter and moments bitwise. stepValues: null, or a device pointer to
    /// [lr, 1 − β₁ᵗ, √(1 − β₂ᵗ), gate] read when the kernel runs in place of lr and t (a captured graph's replays set them
    /// before each run); a gate that is not finite (the step's loss copied there) leaves everything untouched.</summary>
    void AdamStep(float* param, float* grad, float* m, float* v, float* mask, long n, float lr, float beta1, float beta2,
        float eps, float weightDecay, int t, bool decoupled, float* stepValues);
    /// <summary>One Adam step of every parameter in <paramref name="tensors"/>, each with its own weight decay: a dense one
    /// (with its mask, if any) as <see cref="AdamStep"/> steps it, one that trains selected entries as
    /// <see cref="SparseAdamStep"/> does, bit for bit, in as few launches as the backend can (on a GPU, small parameters
    /// share one).</summary>
    void AdamStepMany(ReadOnlySpan<AdamTensor> tensors, float lr, float beta1, float beta2, float eps, int t, bool decoupled,
        float* stepValues);
    /// <summary>Σ x[i]² accumulated in double and returned to the host (global gradient norm).</summary>
    double SumSquares(float* x, long n);
    /// <summary>Number of NaN or ±Inf elements (training-loop divergence check).</summary>
    long CountNonFinite(float* x, long n);
}
