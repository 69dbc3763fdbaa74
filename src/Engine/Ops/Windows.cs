using Engine.Autograd;

namespace Engine;

// Swin's windows: cyclic shift + window partition, window reverse, relative position bias.
// Kernels: CpuKernels.Windows.cs, cuda/windows.cu.
public static unsafe partial class Ops
{
    /// <summary>Rolls x [B,H,W,C] by (−shift, −shift) and cuts ws×ws windows → [B·(H/ws)·(W/ws), ws·ws, C]
    /// (timm's torch.roll + window_partition).</summary>
    public static Tensor WindowPartition(Tensor x, int window, int shift)
    {
        const string op = "WindowPartition";
        Check(op, "input", x, 4);
        int B = x.Shape[0], H = x.Shape[1], W = x.Shape[2], C = x.Shape[3];
        CheckWindows(op, x, H, W, window, shift);
        var y = Tensor.Empty(x.Device, DType.F32, B * (H / window) * (W / window), window * window, C);
        x.Device.Kernels.WindowPartition(y.Data, x.Data, B, H, W, C, window, shift, false);
        if (Tape.ShouldRecord(x))
            Tape.Push(y, new WindowPartitionSaved { X = x, Window = window, Shift = shift });
        return y;
    }

    /// <summary>WindowPartition's backward state: x [B,H,W,C], the window side and the shift.</summary>
    struct WindowPartitionSaved : IBackward<WindowPartitionSaved>
    {
        public Tensor X;
        public int Window, Shift;

        public static void Backward(ref WindowPartitionSaved s, Tensor y)
        {
            var x = s.X;
            float* dx = Tape.GradOutput(x, out bool acc);
            y.Device.Kernels.WindowReverse(dx, y.Grad!.Data, x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3], s.Window, s.Shift, acc);
        }
    }

    /// <summary>Inverse of <see cref="WindowPartition"/>: windows [B·nW, ws·ws, C] → [B,H,W,C], rolled back by +shift.</summary>
    public static Tensor WindowReverse(Tensor windows, int height, int width, int shift)
    {
        const string op = "WindowReverse";
        Check(op, "windows", windows, 3);
        int ws = (int)Math.Round(Math.Sqrt(windows.Shape[1])), C = windows.Shape[2];
        if (ws * ws != windows.Shape[1]) throw new ArgumentException($"{op}: windows {windows.Describe()} are not square");
        CheckWindows(op, windows, height, width, ws, shift);
        int nW = height / ws * (width / ws);
        if (windows.Shape[0] % nW != 0)
            throw new ArgumentException($"{op}: {windows.Shape[0]} windows are not a multiple of the {nW} per {height}×{width} image");
        int B = windows.Shape[0] / nW;
        var y = Tensor.Empty(windows.Device, DType.F32, B, height, width, C);
        windows.Device.Kernels.WindowReverse(y.Data, windows.Data, B, height, width, C, ws, shift, false);
        if (Tape.ShouldRecord(windows))
            Tape.Push(y, new WindowReverseSaved { Windows = windows, Window = ws, Shift = shift });
        return y;
    }

    /// <summary>WindowReverse's backward state: the windows [B·nW, ws·ws, C], the window side and the shift.</summary>
    struct WindowReverseSaved : IBackward<WindowReverseSaved>
    {
        public Tensor Windows;
        public int Window, Shift;

        public static void Backward(ref WindowReverseSaved s, Tensor y)
        {
            float* dw = Tape.GradOutput(s.Windows, out bool acc);
            y.Device.Kernels.WindowPartition(dw, y.Grad!.Data, y.Shape[0], y.Shape[1], y.Shape[2], y.Shape[3], s.Window, s.Shift, acc);
        }
    }

    static void CheckWindows(string op, Tensor t, int H, int W, int window, int shift)
    {
        if (window <= 0 || H % window != 0 || W % window != 0)
            throw new ArgumentException($"{op}: {H}×{W} grid of {t.Describe()} is not divisible into {window}×{window} windows");
        if (shift < 0 || shift >= window) throw new ArgumentOutOfRangeException(nameof(shift), shift, $"{op}: shift must be in [0, {window})");
    }

    /// <summary>Swin's relative position bias for <paramref name="window"/>×<paramref name="window"/> windows: table
    /// [(2·ws−1)², NH] (timm's <c>relative_position_bias_table</c>) → bias [NH, T, T], T = ws², with bias[h,i,j] =
    /// table[(yi−yj+ws−1)·(2ws−1) + (xi−xj+ws−1), h]. The index (timm's <c>relative_position_index</c>) is computed,
    /// never stored; the backward sums each entry's token pairs.</summary>
    public static Tensor RelativePositionBias(Tensor table, int window)
    {
        const string op = "RelativePositionBias";
        Check(op, "table", table, 2);
        int side = 2 * window - 1, NH = table.Shape[1], T = window * window;
        if (window <= 0 || table.Shape[0] != side * side)
            throw new ArgumentException($"{op}: table {table.Describe()} must be [{side}·{side}, heads] for window {window}");
        var y = Tensor.Empty(table.Device, DType.F32, NH, T, T);
        table.Device.Kernels.RelativePositionBias(y.Data, table.Data, NH, window);
        if (Tape.ShouldRecord(table))
            Tape.Push(y, new RelativePositionBiasSaved { Table = table, Window = window });
        return y;
    }

    /// <summary>RelativePositionBias's backward state: the table [(2ws−1)², NH] and the window side.</summary>
    struct RelativePositionBiasSaved : IBackward<RelativePositionBiasSaved>
    {
        public Tensor Table;
        public int Window;

        public static void Backward(ref RelativePositionBiasSaved s, Tensor y)
        {
            float* dtable = Tape.GradOutput(s.Table, out bool acc);
            y.Device.Kernels.RelativePositionBiasBackward(dtable, y.Grad!.Data, s.Table.Shape[1], s.Window, acc);
        }
    }
}
