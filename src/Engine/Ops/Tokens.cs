using Engine.Autograd;

namespace Engine;

// Token ops: class token, position embedding, concatenating and slicing along tokens (VPT's prompts), taking the class
// token, mean over tokens.
// Kernels: CpuKernels.Tokens.cs, cuda/tokens.cu.
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
            Tape.Push(y, new PrependTokenSaved { X = x, Token = token });
        return y;
    }

    /// <summary>PrependToken's backward state: x [B,T,C] and the token [C].</summary>
    struct PrependTokenSaved : IBackward<PrependTokenSaved>
    {
        public Tensor X, Token;

        public static void Backward(ref PrependTokenSaved s, Tensor y)
        {
            int B = y.Shape[0], T = y.Shape[1] - 1, C = y.Shape[2];
            float* dx = Tape.GradOutputIfNeeded(s.X, out bool acc);
            y.Device.Kernels.PrependTokenBackward(dx, Tape.GradAccumulatorIfNeeded(s.Token), y.Grad!.Data, B, T, C, acc);
        }
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
            Tape.Push(y, new AddPositionEmbeddingSaved { X = x, Pos = pos });
        return y;
    }

    /// <summary>AddPositionEmbedding's backward state: x [B,T,C] and pos [T,C].</summary>
    struct AddPositionEmbeddingSaved : IBackward<AddPositionEmbeddingSaved>
    {
        public Tensor X, Pos;

        public static void Backward(ref AddPositionEmbeddingSaved s, Tensor y)
        {
            float* dpos = Tape.GradAccumulatorIfNeeded(s.Pos);
            if (dpos != null) y.Device.Kernels.BiasGrad(dpos, y.Grad!.Data, y.Shape[0], y.Shape[1] * y.Shape[2]);
            if (s.X.RequiresGrad) Tape.HandOverGradient(s.X, y.Grad!); // dx = dy, passed on last: x may take its storage
        }
    }

    /// <summary>Concatenates along tokens: a [B,T1,C], b [B,T2,C] → [B,T1+T2,C]. Each input gets its part of the gradient.</summary>
    public static Tensor ConcatTokens(Tensor a, Tensor b)
    {
        const string op = "ConcatTokens";
        Check(op, "a", a, 3);
        Check(op, "b", b, 3, a.Device);
        int B = a.Shape[0], T1 = a.Shape[1], T2 = b.Shape[1], C = a.Shape[2];
        if (b.Shape[0] != B || b.Shape[2] != C) throw new ArgumentException($"{op}: a {a.Describe()} and b {b.Describe()} differ in batch or channels");
        var y = Tensor.Empty(a.Device, DType.F32, B, T1 + T2, C);
        var k = a.Device.Kernels;
        k.CopyTokens(y.Data, T1 + T2, 0, a.Data, T1, 0, T1, B, C, false);
        k.CopyTokens(y.Data, T1 + T2, T1, b.Data, T2, 0, T2, B, C, false);
        if (Tape.ShouldRecord(a, b))
            Tape.Push(y, new ConcatTokensSaved { A = a, B = b });
        return y;
    }

    /// <summary>ConcatTokens's backward state: the two inputs (their token counts split dy).</summary>
    struct ConcatTokensSaved : IBackward<ConcatTokensSaved>
    {
        public Tensor A, B;

        public static void Backward(ref ConcatTokensSaved s, Tensor y)
        {
            var k = y.Device.Kernels;
            int batch = y.Shape[0], T = y.Shape[1], C = y.Shape[2], T1 = s.A.Shape[1];
            float* da = Tape.GradOutputIfNeeded(s.A, out bool accA);
            if (da != null) k.CopyTokens(da, T1, 0, y.Grad!.Data, T, 0, T1, batch, C, accA);
            float* db = Tape.GradOutputIfNeeded(s.B, out bool accB);
            if (db != null) k.CopyTokens(db, T - T1, 0, y.Grad!.Data, T, T1, T - T1, batch, C, accB);
        }
    }

    /// <summary>Tokens [start, start + count) of x [B,T,C] → [B,count,C]; the others get no gradient.</summary>
    public static Tensor SliceTokens(Tensor x, int start, int count)
    {
        const string op = "SliceTokens";
        Check(op, "input", x, 3);
        int B = x.Shape[0], T = x.Shape[1], C = x.Shape[2];
        if (start < 0 || count < 1 || start + count > T)
            throw new ArgumentOutOfRangeException(nameof(start), $"{op}: tokens [{start}, {start + count}) are not within input {x.Describe()}");
        var y = Tensor.Empty(x.Device, DType.F32, B, count, C);
        x.Device.Kernels.CopyTokens(y.Data, count, 0, x.Data, T, start, count, B, C, false);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new SliceTokensSaved { X = x, Start = start });
        return y;
    }

    /// <summary>SliceTokens's backward state: the input and where the slice starts.</summary>
    struct SliceTokensSaved : IBackward<SliceTokensSaved>
    {
        public Tensor X;
        public int Start;

        public static void Backward(ref SliceTokensSaved s, Tensor y)
        {
            var k = y.Device.Kernels;
            int B = y.Shape[0], count = y.Shape[1], C = y.Shape[2], T = s.X.Shape[1];
            float* dx = Tape.GradOutput(s.X, out bool acc);
            if (!acc) k.Fill(dx, (long)B * T * C, 0f);
            k.CopyTokens(dx, T, s.Start, y.Grad!.Data, count, 0, count, B, C, true);
        }
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
            Tape.Push(y, new TakeTokenSaved { X = x, Tokens = T, Index = index });
        return y;
    }

    /// <summary>TakeToken's backward state: the input's token count and the token taken.</summary>
    struct TakeTokenSaved : IBackward<TakeTokenSaved>
    {
        public Tensor X;
        public int Tokens, Index;

        public static void Backward(ref TakeTokenSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            y.Device.Kernels.TakeTokenBackward(dx, y.Grad!.Data, y.Shape[0], s.Tokens, y.Shape[1], s.Index, acc);
        }
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
            Tape.Push(y, new MeanTokensSaved { X = x, Tokens = T });
        return y;
    }

    /// <summary>MeanTokens's backward state: the token count averaged over.</summary>
    struct MeanTokensSaved : IBackward<MeanTokensSaved>
    {
        public Tensor X;
        public int Tokens;

        public static void Backward(ref MeanTokensSaved s, Tensor y)
        {
            float* dx = Tape.GradOutput(s.X, out bool acc);
            y.Device.Kernels.MeanTokensBackward(dx, y.Grad!.Data, y.Shape[0], s.Tokens, y.Shape[1], acc);
        }
    }
}
