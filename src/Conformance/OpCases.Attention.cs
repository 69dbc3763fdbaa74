using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Attention family's cases (Ops/Attention.cs).
public static partial class OpCases
{
    static void Attention(Device dev)
    {
        int B = 2, T = 13, NH = 2, HD = 3;
        GradCheck.Run(dev, "Attention",
            [new("qkv", [B, T, 3 * NH * HD], -2, 2)],
            t => Ops.Attention(t[0], NH, fused: false),
            v => Reference.Attention(v[0], B, T, NH, HD, null, null, 1));
    }

    static void AttentionWithBiasAndMask(Device dev)
    {
        // Swin-style: 2 images × 2 windows of 4 tokens, relative bias per head, −100 mask per window.
        int B = 4, T = 4, NH = 2, HD = 2, nW = 2;
        var maskValues = new double[nW * T * T];
        for (int i = 0; i < maskValues.Length; i++) maskValues[i] = CounterRng.Uniform(99, (ulong)i) < 0.3 ? -100 : 0;
        using var mask = Tensor.FromArray(dev, maskValues.Select(m => (float)m).ToArray(), nW, T, T);
        GradCheck.Run(dev, "Attention bias+mask",
            [new("qkv", [B, T, 3 * NH * HD], -2, 2), new("bias", [NH, T, T])],
            t => Ops.Attention(t[0], NH, t[1], mask, fused: false),
            v => Reference.Attention(v[0], B, T, NH, HD, v[1], maskValues, nW));
    }

    static void FusedAttention(Device dev)
    {
        // 33 tokens: two 32-key tiles (the second partial) and several row blocks on CUDA; head dim 34: a partial
        // second 32-lane chunk of dimensions. (Two heads and images with bias and mask in the next case.)
        int B = 2, T = 33, NH = 1, HD = 34;
        GradCheck.Run(dev, "FusedAttention",
            [new("qkv", [B, T, 3 * NH * HD], -1, 1)],
            t => Ops.Attention(t[0], NH),
            v => Reference.Attention(v[0], B, T, NH, HD, null, null, 1));
    }

    static void FusedAttentionWithBiasAndMask(Device dev)
    {
        // Swin-style: 2 images × 2 windows of 9 tokens, a trainable bias per head, −100 mask entries per window.
        int B = 4, T = 9, NH = 2, HD = 5, nW = 2;
        var maskValues = new double[nW * T * T];
        for (int i = 0; i < maskValues.Length; i++) maskValues[i] = CounterRng.Uniform(98, (ulong)i) < 0.3 ? -100 : 0;
        using var mask = Tensor.FromArray(dev, maskValues.Select(m => (float)m).ToArray(), nW, T, T);
        GradCheck.Run(dev, "FusedAttention bias+mask",
            [new("qkv", [B, T, 3 * NH * HD], -2, 2), new("bias", [NH, T, T])],
            t => Ops.Attention(t[0], NH, t[1], mask),
            v => Reference.Attention(v[0], B, T, NH, HD, v[1], maskValues, nW));
    }
}
