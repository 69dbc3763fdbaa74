using System.Runtime.CompilerServices;
namespace Engine.Kernels.Cpu;

// Attention on the CPU (cuda/attention.cu): head split/merge permutes. The GEMMs between them go through
// Gemm/GemmStridedBatched; the biased, masked softmax is in CpuKernels.Softmax.cs.
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
}
