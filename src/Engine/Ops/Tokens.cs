using Engine.Autograd;

namespace Engine;

// Token ops: class token, position embedding, taking the class token, mean over tokens.
public static unsafe partial class Ops
{
    /// <summary>Prepends a learned token: x [B,T,C], token [1,1,C] (or [C]) → [B,T+1,C].</summary>
    public static Tensor PrependToken(Tensor x, Tensor token)
    {
        const string op = "PrependToken";
        Check(op, "input", x, 3);
        Check(op, "token", token, device: x.Device);
        int B = x.Shape[0], T = x.Shape[1], C = x.Shape[2];
        if (token.Count != C) throw new ArgumentException($"{op}: token {token.Describe()} must hold {C} values for input {x.Describe()}");
        var y = Tensor.Empty(x.Device, DType.F32, B, T + 1, C);
        x.Device.Kernels.PrependToken(y.Data, x.Data, token.Data, B, T, C);
        if (Tape.ShouldRecord(x, token))
        {
            ref var n = ref Tape.Push(&PrependTokenBackward, y);
            n.In0 = x;
            n.In1 = token;
        }
        return y;
    }

    static void PrependTokenBackward(ref Node n)
    {
        int B = n.Out.Shape[0], T = n.Out.Shape[1] - 1, C = n.Out.Shape[2];
        float* dx = Tape.GradOutputIfNeeded(n.In0, out bool acc);
        n.Out.Device.Kernels.PrependTokenBackward(dx, Tape.GradAccumulatorIfNeeded(n.In1), n.Out.Grad!.Data, B, T, C, acc);
    }

    /// <summary>Adds a learned position embedding: x [B,T,C] + pos [1,T,C] (or [T,C]), broadcast over B.</summary>
    public static Tensor AddPositionEmbedding(Tensor x, Tensor pos)
    {
        const string op = "AddPositionEmbedding";
        Check(op, "input", x, 3);
        Check(op, "pos", pos, device: x.Device);
        int B = x.Shape[0], TC = x.Shape[1] * x.Shape[2];
        if (pos.Count != TC || pos.Shape[^1] != x.Shape[2])
            throw new ArgumentException($"{op}: position embedding {pos.Describe()} does not match input {x.Describe()}");
        var y = NewLike(x);
        x.Device.Kernels.AddBias(y.Data, x.Data, pos.Data, B, TC);
        if (Tape.ShouldRecord(x, pos))
        {
            ref var n = ref Tape.Push(&AddPositionEmbeddingBackward, y);
            n.In0 = x;
            n.In1 = pos;
        }
        return y;
    }

    static void AddPositionEmbeddingBackward(ref Node n)
    {
        var k = n.Out.Device.Kernels;
        float* dy = n.Out.Grad!.Data;
        float* dx = Tape.GradOutputIfNeeded(n.In0, out bool acc);
        if (dx != null) k.Copy(dx, dy, n.Out.Count, acc);
        float* dpos = Tape.GradAccumulatorIfNeeded(n.In1);
        if (dpos != null) k.BiasGrad(dpos, dy, n.Out.Shape[0], n.Out.Shape[1] * n.Out.Shape[2]);
    }

    /// <summary>Takes token <paramref name="index"/> of x [B,T,C] → [B,C] (the class token at 0).</summary>
    public static Tensor TakeToken(Tensor x, int index = 0)
    {
        const string op = "TakeToken";
        Check(op, "input", x, 3);
        int B = x.Shape[0], T = x.Shape[1], C = x.Shape[2];
        if ((uint)index >= (uint)T) throw new ArgumentOutOfRangeException(nameof(index), index, $"{op}: input {x.Describe()} has {T} tokens");
        var y = Tensor.Empty(x.Device, DType.F32, B, C);
        x.Device.Kernels.TakeToken(y.Data, x.Data, B, T, C, index);
        if (Tape.ShouldRecord(x))
        {
            ref var n = ref Tape.Push(&TakeTokenBackward, y);
            n.In0 = x;
            n.I0 = T;
            n.I1 = index;
        }
        return y;
    }

    static void TakeTokenBackward(ref Node n)
    {
        float* dx = Tape.GradOutput(n.In0!, out bool acc);
        n.Out.Device.Kernels.TakeTokenBackward(dx, n.Out.Grad!.Data, n.Out.Shape[0], n.I0, n.Out.Shape[1], n.I1, acc);
    }

    /// <summary>Mean over the token dimensions: x [B, ..., C] (e.g. [B,T,C] or [B,H,W,C]) → [B,C].</summary>
    public static Tensor MeanTokens(Tensor x)
    {
        const string op = "MeanTokens";
        Check(op, "input", x);
        if (x.Rank < 3) throw new ArgumentException($"{op}: input {x.Describe()} must be [B, tokens..., C]");
        int B = x.Shape[0], C = LastDim(x), T = (int)(x.Count / ((long)B * C));
        var y = Tensor.Empty(x.Device, DType.F32, B, C);
        x.Device.Kernels.MeanTokens(y.Data, x.Data, B, T, C);
        if (Tape.ShouldRecord(x))
        {
            ref var n = ref Tape.Push(&MeanTokensBackward, y);
            n.In0 = x;
            n.I0 = T;
        }
        return y;
    }

    static void MeanTokensBackward(ref Node n)
    {
        float* dx = Tape.GradOutput(n.In0!, out bool acc);
        n.Out.Device.Kernels.MeanTokensBackward(dx, n.Out.Grad!.Data, n.Out.Shape[0], n.I0, n.Out.Shape[1], acc);
    }
}
