using Engine.Kernels;

namespace Engine.Conformance;

// The Attention family's cases (Ops/Attention.cs): the unfused reference path and the fused kernels, each plain and
// Swin-style (relative position bias that trains, shift mask).
public static partial class OpCases
{
    static void Attention(Device dev) => PlainAttention(dev, "Attention", B: 2, T: 13, NH: 2, HD: 3, fused: false);

    // 33 tokens: two 32-key tiles (the second partial) and several row blocks on CUDA; head dim 34: a partial second
    // 32-lane chunk of dimensions. (Two heads and images with bias and mask in the next case.)
    static void FusedAttention(Device dev) => PlainAttention(dev, "FusedAttention", B: 2, T: 33, NH: 1, HD: 34, fused: true);

    // Swin-style: 2 images × 2 windows, a bias per head, −100 mask entries per window.
    static void AttentionWithBiasAndMask(Device dev) =>
        WindowAttention(dev, "Attention bias+mask", B: 4, T: 4, NH: 2, HD: 2, nW: 2, maskSeed: 99, fused: false);

    static void FusedAttentionWithBiasAndMask(Device dev) =>
        WindowAttention(dev, "FusedAttention bias+mask", B: 4, T: 9, NH: 2, HD: 5, nW: 2, maskSeed: 98, fused: true);

    static void PlainAttention(Device dev, string name, int B, int T, int NH, int HD, bool fused) =>
        GradCheck.Run(dev, name,
            [new("qkv", [B, T, 3 * NH * HD], -1, 1)],
            t => Ops.Attention(t[0], NH, fused: fused),
            v => Reference.Attention(v[0], B, T, NH, HD, null, null, 1));

    static void WindowAttention(Device dev, string name, int B, int T, int NH, int HD, int nW, ulong maskSeed, bool fused)
    {
        var maskValues = new double[nW * T * T];
        for (int i = 0; i < maskValues.Length; i++) maskValues[i] = CounterRng.Uniform(maskSeed, (ulong)i) < 0.3 ? -100 : 0;
        using var mask = Tensor.FromArray(dev, maskValues.Select(m => (float)m).ToArray(), nW, T, T);
        GradCheck.Run(dev, name,
            [new("qkv", [B, T, 3 * NH * HD], -2, 2), new("bias", [NH, T, T])],
            t => Ops.Attention(t[0], NH, t[1], mask, fused: fused),
            v => Reference.Attention(v[0], B, T, NH, HD, v[1], maskValues, nW));
    }
}
