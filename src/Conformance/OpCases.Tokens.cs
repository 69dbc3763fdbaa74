using Engine.Autograd;
using Engine.Kernels;

namespace Engine.Conformance;

// The Tokens family's cases (Ops/Tokens.cs).
public static partial class OpCases
{
    static void PrependToken(Device dev)
    {
        int B = 2, T = 7, C = 3;
        GradCheck.Run(dev, "PrependToken",
            [new("x", [B, T, C]), new("cls", [1, 1, C])],
            t => Ops.PrependToken(t[0], t[1]),
            v => Enumerable.Range(0, B).SelectMany(b => v[1].Concat(v[0].Skip(b * T * C).Take(T * C))).ToArray());
    }

    static void AddPositionEmbedding(Device dev)
    {
        int B = 3, T = 5, C = 7;
        GradCheck.Run(dev, "AddPositionEmbedding",
            [new("x", [B, T, C]), new("pos", [1, T, C])],
            t => Ops.AddPositionEmbedding(t[0], t[1]),
            v => Enumerable.Range(0, v[0].Length).Select(i => v[0][i] + v[1][i % (T * C)]).ToArray());
    }

    static void ConcatTokens(Device dev)
    {
        int B = 2, T1 = 5, T2 = 3, C = 4;
        GradCheck.Run(dev, "ConcatTokens",
            [new("a", [B, T1, C]), new("b", [B, T2, C])],
            t => Ops.ConcatTokens(t[0], t[1]),
            v => Enumerable.Range(0, B).SelectMany(b => v[0].Skip(b * T1 * C).Take(T1 * C).Concat(v[1].Skip(b * T2 * C).Take(T2 * C))).ToArray());
    }

    static void SliceTokens(Device dev)
    {
        int B = 3, T = 6, C = 5;
        foreach (var (start, count) in new[] { (0, 4), (2, 3), (5, 1) })
            GradCheck.Run(dev, $"SliceTokens {start}+{count}",
                [new("x", [B, T, C])],
                t => Ops.SliceTokens(t[0], start, count),
                v => Enumerable.Range(0, B).SelectMany(b => v[0].Skip((b * T + start) * C).Take(count * C)).ToArray());
    }

    static void TakeToken(Device dev)
    {
        int B = 3, T = 5, C = 7;
        foreach (int index in new[] { 0, 4 })
        {
            GradCheck.Run(dev, $"TakeToken {index}",
                [new("x", [B, T, C])],
                t => Ops.TakeToken(t[0], index),
                v => Enumerable.Range(0, B).SelectMany(b => v[0].Skip((b * T + index) * C).Take(C)).ToArray());
        }
    }

    static void MeanTokens(Device dev)
    {
        int B = 2, H = 3, W = 5, C = 7;
        GradCheck.Run(dev, "MeanTokens",
            [new("x", [B, H, W, C])],
            t => Ops.MeanTokens(t[0]),
            v => Enumerable.Range(0, B * C).Select(i =>
                Enumerable.Range(0, H * W).Average(t => v[0][(i / C * H * W + t) * C + i % C])).ToArray());
    }
}
