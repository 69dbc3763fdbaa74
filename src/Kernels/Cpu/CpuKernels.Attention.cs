using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Engine.Kernels.Cpu;

// Attention on the CPU (cuda/attention.cu): head split/merge permutes (the GEMMs between them go through
// Gemm/GemmStridedBatched; the biased, masked softmax is in CpuKernels.Softmax.cs), and fused attention: per
// (image, head) the [T,T] scores live in a per-thread scratch (L2-sized for ViT and Swin), q, k, v are read in place
// from the packed qkv rows and the output written in place into the merged rows.
public sealed unsafe partial class CpuKernels
{
    /// <inheritdoc/>
    public void SplitHeads(float* q, float* k, float* v, float* qkv, int B, int T, int NH, int HD)
    {
        var body = new HeadsBody { Q = q, K = k, V = v, Qkv = qkv, T = T, NH = NH, HD = HD, Split = true };
        CpuRange.For((long)B * T, 64, ref body);
    }

    /// <inheritdoc/>
    public void SplitHeadsBackward(float* dqkv, float* dq, float* dk, float* dv, int B, int T, int NH, int HD, bool accumulate)
    {
        var body = new HeadsBody { Q = dq, K = dk, V = dv, Qkv = dqkv, T = T, NH = NH, HD = HD, Accumulate = accumulate };
        CpuRange.For((long)B * T, 64, ref body);
    }

    /// <inheritdoc/>
    public void MergeHeads(float* y, float* o, int B, int T, int NH, int HD)
    {
        // Merging is the split of a single-slot tensor run backwards: y [B,T,1,NH,HD] ← o [B,NH,T,HD].
        var body = new HeadsBody { Q = o, Qkv = y, T = T, NH = NH, HD = HD, Slots = 1 };
        CpuRange.For((long)B * T, 64, ref body);
    }

    /// <inheritdoc/>
    public void MergeHeadsBackward(float* dout, float* dy, int B, int T, int NH, int HD, bool accumulate)
    {
        var body = new HeadsBody { Q = dout, Qkv = dy, T = T, NH = NH, HD = HD, Slots = 1, Split = true, Accumulate = accumulate };
        CpuRange.For((long)B * T, 64, ref body);
    }

    /// <summary>Moves rows between packed [B,T,S,NH,HD] (S = 3 for q|k|v, 1 for merged heads) and per-head
    /// [B,NH,T,HD] tensors. Split: packed → heads (accumulate adds into heads); otherwise heads → packed.</summary>
    struct HeadsBody : IRangeBody
    {
        public float* Q, K, V, Qkv;
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
                        float* packed = Qkv + bt * slots * C + s * C + h * HD;
                        float* head = heads + ((b * NH + h) * T + t) * HD;
                        float* dst = Split ? head : packed, src = Split ? packed : head;
                        MoveRow(dst, src, HD, Accumulate);
                    }
                }
            }
        }
    }

    /// <inheritdoc/>
    public void FusedAttentionForward(float* y, float* lse, float* qkv, float* bias, float* mask, int B, int T, int NH, int HD, int nW, float scale)
    {
        var body = new FusedAttentionForwardBody
        {
            Y = y, Lse = lse, Qkv = qkv, Bias = bias, Mask = mask, T = T, NH = NH, HD = HD, NW = mask == null ? 1 : nW, Scale = scale,
            Precision = GemmPrecision,
        };
        CpuParallel.For(B * NH, ref body);
    }

    /// <summary>One (image, head): S = scale·q·kᵀ [T,T] in scratch, row softmax with bias and mask (lse kept), y = P·v;
    /// the products' operands rounded to the GEMM precision, as the unfused path's GEMMs round them.</summary>
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
            if (SmallAttention.Fits(T, HD, Precision))
            {
                float* scratch = (float*)ThreadScratch.Get(3, SmallAttention.ScratchFloats(T, HD, false) * sizeof(float));
                float* bias = Bias == null ? null : Bias + (long)h * T * T, mask = Mask == null ? null : Mask + (long)(b % NW) * T * T;
                SmallAttention.Forward(Y + (long)b * T * C + h * HD, C, Lse + (long)task * T, q, k, v, 3 * C, bias, mask, T, HD, Scale, scratch);
                return;
            }
            float* s = (float*)ThreadScratch.Get(3, (long)T * T * sizeof(float));
            CpuGemm.Gemm(false, true, T, T, HD, Scale, q, 3 * C, k, 3 * C, 0f, s, T, precision: Precision);
            var rows = new AttentionRows { P = s, Lse = Lse + (long)task * T, Cols = T, Softmax = true };
            rows.At(Bias, Mask, h, b % NW);
            Simd.Run(ref rows, 0, T);
            CpuGemm.Gemm(false, false, T, HD, T, 1f, s, T, v, 3 * C, 0f, Y + (long)b * T * C + h * HD, C, precision: Precision);
        }
    }

    /// <summary>The rows of one (image, head)'s [T,T] scores in place: Softmax: p = softmax(s + bias + mask), lse kept;
    /// else p = exp(s + bias + mask − lse), the forward's probabilities again.</summary>
    struct AttentionRows : IVectorRange
    {
        public float* P, Lse, Bias, Mask;
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
                    Lse[i] = SoftmaxRow<TV, W>(p, p, a, m, Cols);
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
    public void FusedAttentionBackward(float* dqkv, float* dbias, float* delta, float* dy, float* y, float* lse, float* qkv, float* bias,
        float* mask, int B, int T, int NH, int HD, int nW, float scale, bool accumulate)
    {
        // Images in a fixed number of groups (set by B alone): each (group, head) task sums its images' score gradients
        // into its own bias partial, added up in order afterwards, so dbias does not depend on the thread count.
        int groups = Math.Min(B, 8);
        long tt = (long)T * T;
        var body = new FusedAttentionBackwardBody
        {
            Dqkv = dqkv, Delta = delta, Dy = dy, Y = y, Lse = lse, Qkv = qkv, Bias = bias, Mask = mask, B = B, T = T, NH = NH, HD = HD,
            NW = mask == null ? 1 : nW, Groups = groups, Scale = scale, Beta = accumulate ? 1f : 0f, Precision = GemmPrecision,
            Partials = dbias == null ? null : Partials(groups * NH, tt),
        };
        CpuParallel.For(groups * NH, ref body);
        if (dbias == null) return;
        for (int h = 0; h < NH; h++)
            for (int g = 0; g < groups; g++)
                Add(dbias + h * tt, dbias + h * tt, body.Partials + (g * NH + h) * tt, tt);
    }

    /// <summary>One (group of images, head): per image the probabilities again from the scores and lse, then
    /// dv = Pᵀ·dO, dP = dO·vᵀ, dS = P ⊙ (dP − Σ_d dO·O), dq = scale·dS·k, dk = scale·dSᵀ·q; dS summed into the bias partial.</summary>
    struct FusedAttentionBackwardBody : IParallelBody
    {
        public float* Dqkv, Delta, Dy, Y, Lse, Qkv, Bias, Mask, Partials;
        public int B, T, NH, HD, NW, Groups;
        public float Scale, Beta;
        public Precision Precision;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(int task)
        {
            int g = task / NH, h = task % NH, C = NH * HD;
            long tt = (long)T * T;
            bool small = SmallAttention.Fits(T, HD, Precision);
            float* p = (float*)ThreadScratch.Get(3, (small ? SmallAttention.ScratchFloats(T, HD, true) : 2 * tt) * sizeof(float)), ds = p + tt;
            float* partial = Partials == null ? null : Partials + task * tt;
            if (partial != null) new Span<float>(partial, (int)tt).Clear();
            for (int b = g * B / Groups; b < (g + 1) * B / Groups; b++)
            {
                long bh = (long)b * NH + h;
                float* q = Qkv + (long)b * T * 3 * C + h * HD, k = q + C, v = q + 2 * C;
                float* dO = Dy + (long)b * T * C + h * HD, o = Y + (long)b * T * C + h * HD, delta = Delta + bh * T;
                if (small)
                {
                    float* bias = Bias == null ? null : Bias + h * tt, mask = Mask == null ? null : Mask + b % NW * tt;
                    float* grad = Dqkv == null ? null : Dqkv + (long)b * T * 3 * C + h * HD;
                    SmallAttention.Backward(grad, grad == null ? null : grad + C, grad == null ? null : grad + 2 * C, 3 * C, Beta, delta, partial, dO, o, C, Lse + bh * T, q, k, v, 3 * C,
                        bias, mask, T, HD, Scale, p);
                    continue;
                }
                CpuGemm.Gemm(false, true, T, T, HD, Scale, q, 3 * C, k, 3 * C, 0f, p, T, precision: Precision);
                var rows = new AttentionRows { P = p, Lse = Lse + bh * T, Cols = T };
                rows.At(Bias, Mask, h, b % NW);
                Simd.Run(ref rows, 0, T);
                CpuGemm.Gemm(false, true, T, T, HD, 1f, dO, C, v, 3 * C, 0f, ds, T, precision: Precision);
                var grads = new ScoreGradRows { P = p, Ds = ds, Dy = dO, Y = o, Delta = delta, Partial = partial, T = T, HD = HD, C = C };
                Simd.Run(ref grads, 0, T);
                if (Dqkv == null) continue;
                float* dq = Dqkv + (long)b * T * 3 * C + h * HD, dk = dq + C, dv = dq + 2 * C;
                CpuGemm.Gemm(true, false, T, HD, T, 1f, p, T, dO, C, Beta, dv, 3 * C, precision: Precision);
                CpuGemm.Gemm(false, false, T, HD, T, Scale, ds, T, k, 3 * C, Beta, dq, 3 * C, precision: Precision);
                CpuGemm.Gemm(true, false, T, HD, T, Scale, ds, T, q, 3 * C, Beta, dk, 3 * C, precision: Precision);
            }
        }
    }

    /// <summary>Rows of one (image, head): delta = Σ_d dO·O, then dS = P ⊙ (dP − delta) in place of dP, added to the
    /// bias partial when there is one.</summary>
    struct ScoreGradRows : IVectorRange
    {
        public float* P, Ds, Dy, Y, Delta, Partial;
        public int T, HD, C;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly long Run<TV, W>(long start, long end) where TV : struct where W : ISimd<TV>
        {
            for (long i = start; i < end; i++)
            {
                float d = Delta[i] = Dot<TV, W>(Dy + i * C, Y + i * C, HD);
                float* ds = Ds + i * T;
                SoftmaxBackwardRow<TV, W>(ds, ds, P + i * T, d, T, false);
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

/// <summary>
/// Fused attention of one (image, head) when every key's score fits a few registers: T ≤ 64 keys, head dim a multiple of
/// 8 up to 64, fp32 (Swin's 49-token windows with head dim 32). At that size CpuGemm's blocking costs more than the
/// products (a 49×49×32 product ran at about a quarter of the micro-kernel's peak): here each row of scores, output or
/// gradient is a set of Vector256 accumulators (<see cref="Row{TN}"/>), the keys' scores of a row are padded to tp, a
/// multiple of 8, and only kᵀ (and vᵀ in the backward) are repacked, as [HD, tp] with zeros past T.
/// </summary>
internal static unsafe class SmallAttention
{
    /// <summary>Whether <see cref="Forward"/> and <see cref="Backward"/> take this shape (else the GEMM path).</summary>
    public static bool Fits(int T, int HD, Precision precision) =>
        T <= 64 && HD % 8 == 0 && HD <= 64 && precision == Precision.FP32 && Fma.IsSupported;

    /// <summary>Floats of per-thread scratch <see cref="Forward"/> (false) or <see cref="Backward"/> (true) needs.</summary>
    public static long ScratchFloats(int T, int HD, bool backward)
    {
        long tp = (T + 7) / 8 * 8;
        return backward ? 2 * HD * tp + 2 * T * tp : HD * tp + tp + 2 * T * HD;
    }

    /// <summary>y [T, HD] (rows ldy apart) and lse [T] of softmax(scale·q·kᵀ + bias + mask)·v, q, k, v [T, HD] rows ld apart,
    /// bias and mask [T, T] or null.</summary>
    public static void Forward(float* y, int ldy, float* lse, float* q, float* k, float* v, int ld, float* bias, float* mask,
        int T, int HD, float scale, float* scratch)
    {
        int tv = (T + 7) / 8, tp = tv * 8;
        float* kt = scratch, s = kt + HD * tp, qc = s + tp, vc = qc + T * HD;
        Prefetch(q, ld, T, HD);
        Prefetch(v, ld, T, HD);
        PackTransposed(kt, k, ld, T, HD, tp);
        Copy(qc, q, ld, T, HD);
        Copy(vc, v, ld, T, HD);
        for (int i = 0; i < T; i++)
        {
            Row(tv, s, scale, 0f, qc + i * HD, 1, HD, kt, tp);
            lse[i] = Softmax(s, bias == null ? null : bias + i * T, mask == null ? null : mask + i * T, T, tv, float.NaN);
            Row(HD / 8, y + (long)i * ldy, 1f, 0f, s, 1, T, vc, HD);
        }
    }

    /// <summary>The gradients of <see cref="Forward"/>: dq, dk, dv [T, HD] (rows ldq apart, added to when beta is 1; all null
    /// for the bias gradient alone), delta
    /// [T] = Σ_d dO·O per row, the score gradient dS added into partial [T, T] (the bias gradient's) when not null.
    /// dO and o rows are ldo apart.</summary>
    public static void Backward(float* dq, float* dk, float* dv, int ldq, float beta, float* delta, float* partial,
        float* dO, float* o, int ldo, float* lse, float* q, float* k, float* v, int ld, float* bias, float* mask,
        int T, int HD, float scale, float* scratch)
    {
        int tv = (T + 7) / 8, tp = tv * 8;
        float* kt = scratch, vt = kt + HD * tp, p = vt + HD * tp, ds = p + T * tp;
        Prefetch(q, ld, T, HD);
        Prefetch(dO, ldo, T, HD);
        Prefetch(o, ldo, T, HD);
        PackTransposed(kt, k, ld, T, HD, tp);
        PackTransposed(vt, v, ld, T, HD, tp);
        for (int i = 0; i < T; i++)
        {
            float* pi = p + i * tp, dsi = ds + i * tp, doi = dO + (long)i * ldo, oi = o + (long)i * ldo;
            Row(tv, pi, scale, 0f, q + (long)i * ld, 1, HD, kt, tp);
            Softmax(pi, bias == null ? null : bias + i * T, mask == null ? null : mask + i * T, T, tv, lse[i]);
            Row(tv, dsi, 1f, 0f, doi, 1, HD, vt, tp);
            float d = 0f;
            for (int c = 0; c < HD; c += 8) d += Vector256.Sum(Vector256.Load(doi + c) * Vector256.Load(oi + c));
            delta[i] = d;
            var dv8 = Vector256.Create(d);
            for (int j = 0; j < tp; j += 8) // padded keys: p = 0, so dS = 0 there
                Vector256.Store(Vector256.Load(pi + j) * (Vector256.Load(dsi + j) - dv8), dsi + j);
            if (partial == null) continue;
            float* acc = partial + i * T;
            int jv = 0;
            for (; jv + 8 <= T; jv += 8) Vector256.Store(Vector256.Load(acc + jv) + Vector256.Load(dsi + jv), acc + jv);
            for (; jv < T; jv++) acc[jv] += dsi[jv];
        }
        if (dq == null) return; // the bias gradient only
        int hv = HD / 8;
        for (int i = 0; i < T; i++)
        {
            Row(hv, dq + (long)i * ldq, scale, beta, ds + i * tp, 1, T, k, ld);  // dq = scale·dS·k
            Row(hv, dk + (long)i * ldq, scale, beta, ds + i, tp, T, q, ld);      // dk = scale·dSᵀ·q
            Row(hv, dv + (long)i * ldq, 1f, beta, p + i, tp, T, dO, ldo);        // dv = Pᵀ·dO
        }
    }

    /// <summary>Asks for rows [T, HD] (ld apart) in cache at once: read one after the other in a row loop, the rows of a
    /// head (a few hundred bytes each, from L3 or memory right after the qkv product) would each wait out their miss.</summary>
    static void Prefetch(float* rows, int ld, int T, int HD)
    {
        for (int t = 0; t < T; t++)
            for (int c = 0; c < HD; c += 16) Sse.Prefetch0(rows + (long)t * ld + c);
    }

    /// <summary>dst [T, HD] contiguous = src rows ld apart.</summary>
    static void Copy(float* dst, float* src, int ld, int T, int HD)
    {
        for (int t = 0; t < T; t++)
            for (int c = 0; c < HD; c += 8) Vector256.Store(Vector256.Load(src + (long)t * ld + c), dst + t * HD + c);
    }

    /// <summary>dst [HD, tp] = src [T, HD]ᵀ (rows ld apart), zero past column T.</summary>
    static void PackTransposed(float* dst, float* src, int ld, int T, int HD, int tp)
    {
        int t8 = T & ~7;
        for (int d = 0; d < HD; d += 8)
        {
            for (int t = 0; t < t8; t += 8) CpuGemm.Transpose8x8(src + (long)t * ld + d, ld, dst + (long)d * tp + t, tp);
            for (int dd = d; dd < d + 8; dd++)
            {
                float* row = dst + (long)dd * tp;
                for (int t = t8; t < T; t++) row[t] = src[(long)t * ld + dd];
                for (int t = T; t < tp; t++) row[t] = 0f;
            }
        }
    }

    /// <summary>Row z [tp] of scores in place: z += bias + mask (rows of T, either null), lanes past T out; with lse NaN,
    /// z = softmax(z) and its log-sum-exp returned; else z = exp(z − lse) (the forward's probabilities again).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float Softmax(float* z, float* bias, float* mask, int T, int tv, float lse)
    {
        int full = T / 8;
        var tail = Vector256.LessThan(Vector256.Create(0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f), Vector256.Create((float)(T - full * 8)));
        var ninf = Vector256.Create(float.NegativeInfinity);
        var max = ninf;
        for (int j = 0; j < tv; j++)
        {
            var x = Vector256.Load(z + j * 8);
            if (j < full)
            {
                if (bias != null) x += Vector256.Load(bias + j * 8);
                if (mask != null) x += Vector256.Load(mask + j * 8);
            }
            else
            {
                if (bias != null) x += Avx.MaskLoad(bias + j * 8, tail);
                if (mask != null) x += Avx.MaskLoad(mask + j * 8, tail);
                x = Vector256.ConditionalSelect(tail, x, ninf);
            }
            Vector256.Store(x, z + j * 8);
            max = Vector256.Max(max, x);
        }
        bool forward = float.IsNaN(lse);
        var shift = Vector256.Create(forward ? W256.Max(max) : lse);
        var sum = Vector256<float>.Zero;
        for (int j = 0; j < tv; j++)
        {
            var e = Simd.Exp<Vector256<float>, W256>(Vector256.Load(z + j * 8) - shift);
            Vector256.Store(e, z + j * 8);
            sum += e;
        }
        if (!forward) return lse;
        float total = Vector256.Sum(sum);
        var inv = Vector256.Create(1f / total);
        for (int j = 0; j < tv; j++) Vector256.Store(Vector256.Load(z + j * 8) * inv, z + j * 8);
        return shift[0] + MathF.Log(total);
    }

    /// <summary>dst [8·n] = alpha·Σ_{t&lt;count} a[t·aStride]·b[t·ldb .. +8n] + beta·dst, n = 1..8 vectors (beta 0: dst
    /// is not read).</summary>
    static void Row(int n, float* dst, float alpha, float beta, float* a, long aStride, int count, float* b, long ldb)
    {
        switch (n)
        {
            case 1: Row<N1>(dst, alpha, beta, a, aStride, count, b, ldb); break;
            case 2: Row<N2>(dst, alpha, beta, a, aStride, count, b, ldb); break;
            case 3: Row<N3>(dst, alpha, beta, a, aStride, count, b, ldb); break;
            case 4: Row<N4>(dst, alpha, beta, a, aStride, count, b, ldb); break;
            case 5: Row<N5>(dst, alpha, beta, a, aStride, count, b, ldb); break;
            case 6: Row<N6>(dst, alpha, beta, a, aStride, count, b, ldb); break;
            case 7: Row<N7>(dst, alpha, beta, a, aStride, count, b, ldb); break;
            default: Row<N8>(dst, alpha, beta, a, aStride, count, b, ldb); break;
        }
    }

    interface IVectors { static abstract int N { get; } }
    struct N1 : IVectors { public static int N => 1; }
    struct N2 : IVectors { public static int N => 2; }
    struct N3 : IVectors { public static int N => 3; }
    struct N4 : IVectors { public static int N => 4; }
    struct N5 : IVectors { public static int N => 5; }
    struct N6 : IVectors { public static int N => 6; }
    struct N7 : IVectors { public static int N => 7; }
    struct N8 : IVectors { public static int N => 8; }

    /// <summary><see cref="Row"/> with n fixed at compile time, so the accumulators live in registers. Up to 4 vectors,
    /// odd and even t go to separate accumulators: 4 dependent FMA chains alone would wait on the FMA latency.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Row<TN>(float* dst, float alpha, float beta, float* a, long aStride, int count, float* b, long ldb) where TN : struct, IVectors
    {
        int n = TN.N;
        bool split = n <= 4;
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
        Vector256<float> e0 = default, e1 = default, e2 = default, e3 = default;
        int t = 0;
        for (; t + 2 <= count; t += 2)
        {
            var x = Vector256.Create(a[t * aStride]);
            float* r = b + t * ldb;
            c0 = Fma.MultiplyAdd(x, Vector256.Load(r), c0);
            if (n > 1) c1 = Fma.MultiplyAdd(x, Vector256.Load(r + 8), c1);
            if (n > 2) c2 = Fma.MultiplyAdd(x, Vector256.Load(r + 16), c2);
            if (n > 3) c3 = Fma.MultiplyAdd(x, Vector256.Load(r + 24), c3);
            if (n > 4) c4 = Fma.MultiplyAdd(x, Vector256.Load(r + 32), c4);
            if (n > 5) c5 = Fma.MultiplyAdd(x, Vector256.Load(r + 40), c5);
            if (n > 6) c6 = Fma.MultiplyAdd(x, Vector256.Load(r + 48), c6);
            if (n > 7) c7 = Fma.MultiplyAdd(x, Vector256.Load(r + 56), c7);
            var y = Vector256.Create(a[(t + 1) * aStride]);
            r += ldb;
            if (split)
            {
                e0 = Fma.MultiplyAdd(y, Vector256.Load(r), e0);
                if (n > 1) e1 = Fma.MultiplyAdd(y, Vector256.Load(r + 8), e1);
                if (n > 2) e2 = Fma.MultiplyAdd(y, Vector256.Load(r + 16), e2);
                if (n > 3) e3 = Fma.MultiplyAdd(y, Vector256.Load(r + 24), e3);
            }
            else
            {
                c0 = Fma.MultiplyAdd(y, Vector256.Load(r), c0);
                c1 = Fma.MultiplyAdd(y, Vector256.Load(r + 8), c1);
                c2 = Fma.MultiplyAdd(y, Vector256.Load(r + 16), c2);
                c3 = Fma.MultiplyAdd(y, Vector256.Load(r + 24), c3);
                c4 = Fma.MultiplyAdd(y, Vector256.Load(r + 32), c4);
                if (n > 5) c5 = Fma.MultiplyAdd(y, Vector256.Load(r + 40), c5);
                if (n > 6) c6 = Fma.MultiplyAdd(y, Vector256.Load(r + 48), c6);
                if (n > 7) c7 = Fma.MultiplyAdd(y, Vector256.Load(r + 56), c7);
            }
        }
        if (t < count)
        {
            var x = Vector256.Create(a[t * aStride]);
            float* r = b + t * ldb;
            c0 = Fma.MultiplyAdd(x, Vector256.Load(r), c0);
            if (n > 1) c1 = Fma.MultiplyAdd(x, Vector256.Load(r + 8), c1);
            if (n > 2) c2 = Fma.MultiplyAdd(x, Vector256.Load(r + 16), c2);
            if (n > 3) c3 = Fma.MultiplyAdd(x, Vector256.Load(r + 24), c3);
            if (n > 4) c4 = Fma.MultiplyAdd(x, Vector256.Load(r + 32), c4);
            if (n > 5) c5 = Fma.MultiplyAdd(x, Vector256.Load(r + 40), c5);
            if (n > 6) c6 = Fma.MultiplyAdd(x, Vector256.Load(r + 48), c6);
            if (n > 7) c7 = Fma.MultiplyAdd(x, Vector256.Load(r + 56), c7);
        }
        if (split)
        {
            c0 += e0; c1 += e1; c2 += e2; c3 += e3;
        }
        Store(dst, c0, alpha, beta);
        if (n > 1) Store(dst + 8, c1, alpha, beta);
        if (n > 2) Store(dst + 16, c2, alpha, beta);
        if (n > 3) Store(dst + 24, c3, alpha, beta);
        if (n > 4) Store(dst + 32, c4, alpha, beta);
        if (n > 5) Store(dst + 40, c5, alpha, beta);
        if (n > 6) Store(dst + 48, c6, alpha, beta);
        if (n > 7) Store(dst + 56, c7, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store(float* dst, Vector256<float> c, float alpha, float beta)
    {
        var r = c * Vector256.Create(alpha);
        if (beta != 0f) r = Fma.MultiplyAdd(Vector256.Load(dst), Vector256.Create(beta), r);
        Vector256.Store(r, dst);
    }
}
