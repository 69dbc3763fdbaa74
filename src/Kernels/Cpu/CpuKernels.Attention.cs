using System.Runtime.CompilerServices;
namespace Engine.Kernels.Cpu;

// Attention on the CPU (cuda/attention.cu): head split/merge permutes (the GEMMs between them go through
// Gemm/GemmStridedBatched; the biased, masked softmax is in CpuKernels.Softmax.cs), and fused attention: per
// (image, head) the [T,T] scores live in a per-thread scratch (L2-sized for ViT and Swin), q, k, v are read in place
// from the packed qkv rows and the output written in place into the merged rows.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    /// <remarks>A packed qkv is widened first (the CPU's attention reads float32; no model gives it one here).</remarks>
    public void SplitHeads(float* heads, ushort* headsPacked, GemmOperand qkvOperand, int B, int T, int NH, int HD)
    {
        long part = (long)B * NH * T * HD;
        using var wide = Widened(qkvOperand, 3 * part, out float* qkv);
        var body = new HeadsBody
        {
            Q = heads, K = heads == null ? null : heads + part, V = heads == null ? null : heads + 2 * part, Qkv = qkv, T = T, NH = NH, HD = HD, Split = true,
            HeadsPacked = headsPacked, Part = part, Precision = (Precision)GemmPrecision.PackedOutputFormat(heads, headsPacked, false, "SplitHeads"),
        };
        CpuRange.For((long)B * T, 64, ref body);
    }

    /// <inheritdoc/>
    public void SplitHeadsBackward(float* dqkv, ushort* dqkvCopy, float* dq, float* dk, float* dv, int B, int T, int NH, int HD, bool accumulate)
    {
        var body = new HeadsBody
        {
            Q = dq, K = dk, V = dv, Qkv = dqkv, RowsCopy = dqkvCopy, T = T, NH = NH, HD = HD, Accumulate = accumulate,
            Precision = (Precision)GemmPrecision.GradientCopyFormat(dqkv, dqkvCopy, "SplitHeadsBackward"),
        };
        CpuRange.For((long)B * T, 64, ref body);
    }

    /// <inheritdoc/>
    public void MergeHeads(float* y, ushort* yPacked, float* o, int B, int T, int NH, int HD)
    {
        // Merging is the split of a single-slot tensor run backwards: y [B,T,1,NH,HD] ← o [B,NH,T,HD].
        var body = new HeadsBody
        {
            Q = o, Qkv = y, RowsPacked = yPacked, T = T, NH = NH, HD = HD, Slots = 1,
            Precision = (Precision)GemmPrecision.PackedOutputFormat(y, yPacked, false, "MergeHeads"),
        };
        CpuRange.For((long)B * T, 64, ref body);
    }

    /// <inheritdoc/>
    public void MergeHeadsBackward(float* dout, ushort* doutPacked, float* dy, int B, int T, int NH, int HD, bool accumulate)
    {
        var body = new HeadsBody
        {
            Q = dout, Qkv = dy, T = T, NH = NH, HD = HD, Slots = 1, Split = true, Accumulate = accumulate, HeadsPacked = doutPacked,
            Precision = (Precision)GemmPrecision.PackedOutputFormat(dout, doutPacked, accumulate, "MergeHeadsBackward"),
        };
        CpuRange.For((long)B * T, 64, ref body);
    }

    /// <summary>Moves rows between packed [B,T,S,NH,HD] (S = 3 for q|k|v, 1 for merged heads) and per-head
    /// [B,NH,T,HD] tensors. Split: packed → heads (accumulate adds into heads), or into HeadsPacked in 16 bits (slots
    /// Part values apart); otherwise heads → packed, or into RowsPacked in 16 bits, and what packed holds then also
    /// into RowsCopy in 16 bits (a gradient's copy).</summary>
    struct HeadsBody : IRangeBody
    {
        public float* Q, K, V, Qkv;
        public ushort* HeadsPacked, RowsPacked, RowsCopy;
        public long Part;
        public Precision Precision;
        public int T, NH, HD, Slots;
        public bool Split, Accumulate;
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(long start, long end)
        {
            int slots = Slots == 0 ? 3 : Slots, C = NH * HD;
            for (long bt = start; bt < end; bt++)
            {
                long b = bt / T, t = bt % T;
                for (int s = 0; s < slots; s++)
                {
                    float* heads = s == 0 ? Q : s == 1 ? K : V;
                    for (int h = 0; h < NH; h++)
                    {
                        long column = bt * slots * C + s * C + h * HD, at = ((b * NH + h) * T + t) * HD;
                        float* packed = Qkv + column;
                        if (HeadsPacked != null)
                        {
                            PackRow(HeadsPacked + s * Part + at, packed, HD, Precision);
                            continue;
                        }
                        float* head = heads + at;
                        if (RowsPacked != null)
                        {
                            PackRow(RowsPacked + column, head, HD, Precision);
                            continue;
                        }
                        float* dst = Split ? head : packed, src = Split ? packed : head;
                        MoveRow(dst, src, HD, Accumulate);
                        if (RowsCopy != null) PackRow(RowsCopy + column, packed, HD, Precision);
                    }
                }
            }
        }
    }

    /// <inheritdoc/>
    /// <remarks>False: the CPU's products read float32, so a packed qkv would only be widened again.</remarks>
    public bool FusedAttentionKeepsSixteenBits(int headDim, bool bias) => false;

    /// <inheritdoc/>
    /// <remarks>A 16-bit output is computed in float32 first, then packed; a packed qkv is widened first.</remarks>
    public void FusedAttentionForward(float* y, ushort* yPacked, float* lse, GemmOperand qkvOperand, float* bias, float* mask, int B, int T, int NH, int HD, int nW, float scale)
    {
        var format = (Precision)GemmPrecision.PackedOutputFormat(y, yPacked, false, "FusedAttentionForward");
        long n = (long)B * T * NH * HD;
        using var wideQkv = Widened(qkvOperand, 3 * n, out float* qkv);
        using var wide = yPacked == null ? null : new NativeBuffer(n * sizeof(float));
        if (wide != null) y = (float*)wide.Pointer;
        var body = new FusedAttentionForwardBody
        {
            Y = y, Lse = lse, Qkv = qkv, Bias = bias, Mask = mask, T = T, NH = NH, HD = HD, NW = mask == null ? 1 : nW, Scale = scale,
            Precision = GemmPrecision,
        };
        CpuParallel.For(B * NH, ref body);
        if (yPacked != null) PackLowPrecision(yPacked, y, n, format);
    }

    /// <summary>One (image, head): S = scale·q·kᵀ [T,T] in scratch; per row, with bias and mask, E = exp(S − max) and
    /// its sum l (lse = max + log l kept); y = E·v, then each row of y divided by its l (the division on [T,HD] instead
    /// of [T,T], as the CUDA kernel does it); the products' operands rounded to the GEMM precision, as the unfused
    /// path's GEMMs round them.</summary>
    struct FusedAttentionForwardBody : IParallelBody
    {
        public float* Y, Lse, Qkv, Bias, Mask;
        public int T, NH, HD, NW;
        public float Scale;
        public Precision Precision;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int task)
        {
            int b = task / NH, h = task % NH, C = NH * HD;
            float* q = Qkv + (long)b * T * 3 * C + h * HD, k = q + C, v = q + 2 * C;
            float* s = (float*)ThreadScratch.Get(3, ((long)T * T + T) * sizeof(float)), sums = s + (long)T * T;
            CpuGemm.GemmOnThread(false, true, T, T, HD, Scale, q, 3 * C, k, 3 * C, 0f, s, T, precision: Precision);
            var rows = new AttentionRows { P = s, Lse = Lse + (long)task * T, Sums = sums, Cols = T, Softmax = true };
            rows.At(Bias, Mask, h, b % NW);
            Simd.Run(ref rows, 0, T);
            float* y = Y + (long)b * T * C + h * HD;
            CpuGemm.GemmOnThread(false, false, T, HD, T, 1f, s, T, v, 3 * C, 0f, y, C, precision: Precision);
            for (int i = 0; i < T; i++) ScaleRow(y + (long)i * C, 1f / sums[i], HD);
        }
    }

    /// <summary>The rows of one (image, head)'s [T,T] scores in place: Softmax: p = exp(s + bias + mask − max), its sum
    /// in Sums and lse = max + log(sum) kept; else p = exp(s + bias + mask − lse), the forward's probabilities again.</summary>
    struct AttentionRows : IVectorRange
    {
        public float* P, Lse, Sums, Bias, Mask;
        public int Cols;
        public bool Softmax;

        /// <summary>Points at head h's bias and window w's mask (either may be absent).</summary>
        public void At(float* bias, float* mask, int h, int w)
        {
            Bias = bias == null ? null : bias + (long)h * Cols * Cols;
            Mask = mask == null ? null : mask + (long)w * Cols * Cols;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly long Run<TV, W>(long start, long end) where TV : struct where W : ISimd<TV>
        {
            for (long i = start; i < end; i++)
            {
                float* p = P + i * Cols, a = Bias == null ? null : Bias + i * Cols, m = Mask == null ? null : Mask + i * Cols;
                if (Softmax)
                {
                    float sum = Sums[i] = ExpRow<TV, W>(p, p, a, m, Cols, out float max);
                    Lse[i] = max + MathF.Log(sum);
                    continue;
                }
                var lse = W.Splat(Lse[i]);
                int j = 0;
                for (; j + W.Count <= Cols; j += W.Count)
                {
                    var z = W.Load(p + j);
                    if (a != null) z = W.Add(z, W.Load(a + j));
                    if (m != null) z = W.Add(z, W.Load(m + j));
                    W.Store(p + j, Simd.Exp<TV, W>(W.Sub(z, lse)));
                }
                for (; j < Cols; j++) p[j] = MathF.Exp(p[j] + (a == null ? 0f : a[j]) + (m == null ? 0f : m[j]) - Lse[i]);
            }
            return end;
        }
    }

    /// <inheritdoc/>
    /// <remarks>A packed qkv is widened first (the values the products round it to). y is not read: the CPU's Σ dy·y
    /// is the row sum Σ_j P·dP of the recomputed probabilities. A gradient copy is packed from dqkv once it is complete.</remarks>
    public void FusedAttentionBackward(float* dqkv, ushort* dqkvCopy, float* dbias, float* delta, float* dy, GemmOperand y, float* lse, GemmOperand qkv, float* bias,
        float* mask, int B, int T, int NH, int HD, int nW, float scale, bool accumulate)
    {
        var copyFormat = (Precision)GemmPrecision.GradientCopyFormat(dqkv, dqkvCopy, "FusedAttentionBackward");
        using var wide = Widened(qkv, (long)B * T * 3 * NH * HD, out float* qkvValues);
        // Images in a fixed number of groups (set by B alone): each (group, head) task sums its images' score gradients
        // into its own bias partial, added up in order afterwards, so dbias does not depend on the thread count.
        int groups = Math.Min(B, 8);
        long tt = (long)T * T;
        var body = new FusedAttentionBackwardBody
        {
            Dqkv = dqkv, Delta = delta, Dy = dy, Lse = lse, Qkv = qkvValues, Bias = bias, Mask = mask, B = B, T = T, NH = NH, HD = HD,
            NW = mask == null ? 1 : nW, Groups = groups, Scale = scale, Beta = accumulate ? 1f : 0f, Precision = GemmPrecision,
            Partials = dbias == null ? null : Partials(groups * NH, tt),
        };
        CpuParallel.For(groups * NH, ref body);
        if (dqkvCopy != null) PackLowPrecision(dqkvCopy, dqkv, (long)B * T * 3 * NH * HD, copyFormat);
        if (dbias == null) return;
        for (int h = 0; h < NH; h++)
            for (int g = 0; g < groups; g++)
                Add(dbias + h * tt, dbias + h * tt, body.Partials + (g * NH + h) * tt, tt);
    }

    /// <summary>One (group of images, head): per image the probabilities again from the scores and lse, then
    /// dv = Pᵀ·dO, dP = dO·vᵀ, dS = P ⊙ (dP − Σ_j P·dP), dq = scale·dS·k, dk = scale·dSᵀ·q; dS summed into the bias partial.</summary>
    struct FusedAttentionBackwardBody : IParallelBody
    {
        public float* Dqkv, Delta, Dy, Lse, Qkv, Bias, Mask, Partials;
        public int B, T, NH, HD, NW, Groups;
        public float Scale, Beta;
        public Precision Precision;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int task)
        {
            int g = task / NH, h = task % NH, C = NH * HD;
            long tt = (long)T * T;
            float* p = (float*)ThreadScratch.Get(3, 2 * tt * sizeof(float)), ds = p + tt;
            float* partial = Partials == null ? null : Partials + task * tt;
            if (partial != null) new Span<float>(partial, (int)tt).Clear();
            for (int b = g * B / Groups; b < (g + 1) * B / Groups; b++)
            {
                long bh = (long)b * NH + h;
                float* q = Qkv + (long)b * T * 3 * C + h * HD, k = q + C, v = q + 2 * C;
                float* dO = Dy + (long)b * T * C + h * HD, delta = Delta + bh * T;
                CpuGemm.GemmOnThread(false, true, T, T, HD, Scale, q, 3 * C, k, 3 * C, 0f, p, T, precision: Precision);
                var rows = new AttentionRows { P = p, Lse = Lse + bh * T, Cols = T };
                rows.At(Bias, Mask, h, b % NW);
                Simd.Run(ref rows, 0, T);
                CpuGemm.GemmOnThread(false, true, T, T, HD, 1f, dO, C, v, 3 * C, 0f, ds, T, precision: Precision);
                var grads = new ScoreGradRows { P = p, Ds = ds, Delta = delta, Partial = partial, T = T };
                Simd.Run(ref grads, 0, T);
                if (Dqkv == null) continue;
                float* dq = Dqkv + (long)b * T * 3 * C + h * HD, dk = dq + C, dv = dq + 2 * C;
                CpuGemm.GemmOnThread(true, false, T, HD, T, 1f, p, T, dO, C, Beta, dv, 3 * C, precision: Precision);
                CpuGemm.GemmOnThread(false, false, T, HD, T, Scale, ds, T, k, 3 * C, Beta, dq, 3 * C, precision: Precision);
                CpuGemm.GemmOnThread(true, false, T, HD, T, Scale, ds, T, q, 3 * C, Beta, dk, 3 * C, precision: Precision);
            }
        }
    }

    /// <summary>Rows of one (image, head): delta = Σ_j P·dP, then dS = P ⊙ (dP − delta) in place of dP, added to the
    /// bias partial when there is one. (Σ_j P_ij·dP_ij = Σ_j P_ij Σ_d dO_id·v_jd = Σ_d dO_id·O_id, the sum the CUDA kernel
    /// takes over dO and O; here the two rows it reads are in cache, dO and O would be read from memory.)</summary>
    struct ScoreGradRows : IVectorRange
    {
        public float* P, Ds, Delta, Partial;
        public int T;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly long Run<TV, W>(long start, long end) where TV : struct where W : ISimd<TV>
        {
            for (long i = start; i < end; i++)
            {
                float* ds = Ds + i * T, p = P + i * T;
                float d = Delta[i] = Dot<TV, W>(p, ds, T);
                SoftmaxBackwardRow<TV, W>(ds, ds, p, d, T, false);
                if (Partial == null) continue;
                float* acc = Partial + i * T;
                int j = 0;
                for (; j + W.Count <= T; j += W.Count) W.Store(acc + j, W.Add(W.Load(acc + j), W.Load(ds + j)));
                for (; j < T; j++) acc[j] += ds[j];
            }
            return end;
        }
    }
}
