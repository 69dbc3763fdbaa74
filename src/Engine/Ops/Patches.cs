using Engine.Autograd;

namespace Engine;

// Patch layouts: patchify (the input of a kernel = stride conv) and Swin's 2×2 patch merging.
// Kernels: CpuKernels.Patches.cs, cuda/patches.cu.
public static unsafe partial class Ops
{
    /// <summary>Cuts non-overlapping p×p patches: x [N,C,H,W] (or [N,H,W,C] when <paramref name="channelsLast"/>)
    /// → [N, (H/p)·(W/p), C·p·p], inner index c·p·p + ky·p + kx (a flattened conv weight [O,C,p,p]).</summary>
    public static Tensor Patchify(Tensor x, int patch, bool channelsLast)
    {
        const string op = "Patchify";
        Check(op, "input", x, 4);
        int N = x.Shape[0], C = channelsLast ? x.Shape[3] : x.Shape[1], H = channelsLast ? x.Shape[1] : x.Shape[2],
            W = channelsLast ? x.Shape[2] : x.Shape[3];
        if (patch <= 0 || H % patch != 0 || W % patch != 0)
            throw new ArgumentException($"{op}: input {x.Describe()} is not divisible into {patch}×{patch} patches");
        var y = Tensor.Empty(x.Device, DType.F32, N, H / patch * (W / patch), C * patch * patch);
        x.Device.Kernels.Patchify(y.Data, x.Data, N, C, H, W, patch, channelsLast);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new PatchifySaved { X = x, Patch = patch, ChannelsLast = channelsLast });
        return y;
    }

    /// <summary>Patchify's backward state: the input's layout and the patch side.</summary>
    struct PatchifySaved : IBackward<PatchifySaved>
    {
        public Tensor X;
        public int Patch;
        public bool ChannelsLast;

        public static void Backward(ref PatchifySaved s, Tensor y)
        {
            var x = s.X;
            bool last = s.ChannelsLast;
            int N = x.Shape[0], C = last ? x.Shape[3] : x.Shape[1], H = last ? x.Shape[1] : x.Shape[2], W = last ? x.Shape[2] : x.Shape[3];
            float* dx = Tape.GradOutput(x, out bool acc);
            y.Device.Kernels.PatchifyBackward(dx, y.Grad!.Data, N, C, H, W, s.Patch, last, acc);
        }
    }

    /// <summary>2×2 patch merging gather: x [B,H,W,C] → [B,H/2,W/2,4C] with channel blocks
    /// x[2i,2j], x[2i+1,2j], x[2i,2j+1], x[2i+1,2j+1] (timm and the original Swin).</summary>
    public static Tensor PatchMerge(Tensor x)
    {
        const string op = "PatchMerge";
        Check(op, "input", x, 4);
        int B = x.Shape[0], H = x.Shape[1], W = x.Shape[2], C = x.Shape[3];
        if (H % 2 != 0 || W % 2 != 0) throw new ArgumentException($"{op}: input {x.Describe()} needs even height and width");
        var y = Tensor.Empty(x.Device, DType.F32, B, H / 2, W / 2, 4 * C);
        x.Device.Kernels.PatchMerge(y.Data, x.Data, B, H, W, C);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new PatchMergeSaved { X = x });
        return y;
    }

    /// <summary>PatchMerge's backward state: x [B,H,W,C].</summary>
    struct PatchMergeSaved : IBackward<PatchMergeSaved>
    {
        public Tensor X;

        public static void Backward(ref PatchMergeSaved s, Tensor y)
        {
            var x = s.X;
            float* dx = Tape.GradOutput(x, out bool acc);
            y.Device.Kernels.PatchMergeBackward(dx, y.Grad!.Data, x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3], acc);
        }
    }
}
