using System.Diagnostics;
using Engine.Kernels;
using Engine.Kernels.Cuda;

namespace Engine;

/// <summary>One benchmark result: time per call and, where it applies, achieved bandwidth (bytes the kernel must
/// read and write at least, per second) as a share of the device's own copy bandwidth, or GEMM throughput.</summary>
public sealed record BenchmarkRow(string Name, string Shape, double Milliseconds, double? GBps = null, double? PercentOfCopy = null,
    double? Tflops = null, double? Microseconds = null);

/// <summary>
/// Device benchmarks for the CUDA backend: device-to-device copy bandwidth (the yardstick), each memory-bound kernel's
/// achieved GB/s against it, cuBLAS GEMM TFLOP/s at ViT-B/16 shapes (FP32 and TF32), and the host-side cost of one
/// kernel launch. Timed with GPU events on a real device. On the emulated device the same code runs at tiny sizes
/// (CI checks that it works); its numbers measure the emulator, not a GPU.
/// </summary>
public static unsafe class DeviceBenchmarks
{
    /// <summary>Runs every benchmark and prints a markdown table row by row as results arrive.</summary>
    public static void RunAndPrint(CudaDevice device, bool full, TextWriter output)
    {
        output.WriteLine($"\ndevice benchmarks on {device.Runtime.Description}, {(full ? "ViT-B/16 training sizes (batch 64)" : "small sizes")}" +
                         (device.Runtime is EmulatedRuntime ? "; emulated device: these numbers time the emulator, not a GPU" : ""));
        output.WriteLine("\n| benchmark | shape | ms | GB/s | % of copy | TFLOP/s | µs |\n|---|---|---|---|---|---|---|");
        static string Cell(double? v, string format) => v.HasValue ? v.Value.ToString(format, System.Globalization.CultureInfo.InvariantCulture) : "";
        Run(device, full, row => output.WriteLine(
            $"| {row.Name} | {row.Shape} | {Cell(row.Milliseconds, "F4")} | {Cell(row.GBps, "F1")} | {Cell(row.PercentOfCopy, "F0")} | " +
            $"{Cell(row.Tflops, "F2")} | {Cell(row.Microseconds, "F2")} |"));
    }

    /// <summary>Runs every benchmark; <paramref name="full"/> uses ViT-B/16 training sizes (batch 64), otherwise tiny ones.</summary>
    public static List<BenchmarkRow> Run(CudaDevice device, bool full, Action<BenchmarkRow>? progress = null)
    {
        var rows = new List<BenchmarkRow>();
        void Add(BenchmarkRow row)
        {
            rows.Add(row);
            progress?.Invoke(row);
        }

        var runtime = device.Runtime;
        var k = device.Kernels;
        int repeats = full ? 20 : 2;
        // ViT-B/16 at batch 64: tokens × channels, and the attention scores.
        int tokens = full ? 64 * 197 : 2 * 17, C = full ? 768 : 40, heads = full ? 12 : 2, T = full ? 197 : 17, batch = full ? 64 : 2;
        long n = (long)tokens * C * 4; // the MLP hidden activation
        using var a = Tensor.Zeros(device, (int)n);
        using var b = Tensor.Zeros(device, (int)n);
        using var c = Tensor.Zeros(device, (int)n);
        using var d = Tensor.Zeros(device, (int)n);
        using var e = Tensor.Zeros(device, (int)n);
        using var rowStats = Tensor.Zeros(device, 2 * tokens * 4);
        k.Fill(a.Data, n, 0.5f);
        k.Fill(b.Data, n, 0.25f);
        k.Fill(e.Data, n, 1f);

        double Time(Action work) => runtime.TimeMilliseconds(work, repeats);
        double copyGBps = 0;
        void Bandwidth(string name, string shape, long bytes, Action work)
        {
            double ms = Time(work), gbps = bytes / (ms * 1e6);
            Add(new BenchmarkRow(name, shape, ms, gbps, copyGBps > 0 ? 100 * gbps / copyGBps : null));
        }

        double copyMs = Time(() => runtime.CopyDeviceToDevice((ulong)b.Data, (ulong)a.Data, n * 4));
        copyGBps = 2.0 * n * 4 / (copyMs * 1e6);
        Add(new BenchmarkRow("device-to-device copy", $"{n:N0} floats", copyMs, copyGBps, 100));

        string flat = $"{n:N0}", rowsShape = $"{tokens}×{C}";
        long bc = (long)tokens * C;
        Bandwidth("copy", flat, 2 * n * 4, () => k.Copy(b.Data, a.Data, n, false));
        Bandwidth("add (residual)", flat, 3 * n * 4, () => k.Add(c.Data, a.Data, b.Data, n));
        Bandwidth("gelu forward", flat, 2 * n * 4, () => k.GeluForward(b.Data, a.Data, n));
        Bandwidth("gelu backward", flat, 3 * n * 4, () => k.GeluBackward(c.Data, b.Data, a.Data, n, false));
        Bandwidth("dropout", flat, 2 * n * 4, () => k.DropPathForward(b.Data, a.Data, n, 1, 0.1f, 1));
        Bandwidth("adam step", flat, 7 * n * 4, () => k.AdamStep(a.Data, b.Data, c.Data, e.Data, null, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 1, true));
        Bandwidth("sum of squares", flat, n * 4, () => k.SumSquares(a.Data, n));
        Bandwidth("add bias", rowsShape, 2 * bc * 4, () => k.AddBias(b.Data, a.Data, c.Data, tokens, C));
        Bandwidth("bias gradient", rowsShape, bc * 4, () => k.BiasGrad(c.Data, a.Data, tokens, C));
        Bandwidth("scale-shift forward", rowsShape, 2 * bc * 4, () => k.ScaleShiftForward(b.Data, a.Data, c.Data, d.Data, tokens, C));
        Bandwidth("layernorm forward", rowsShape, 2 * bc * 4,
            () => k.LayerNormForward(b.Data, rowStats.Data, rowStats.Data + tokens, a.Data, e.Data, d.Data, tokens, C, 1e-6f));
        Bandwidth("layernorm backward (input)", rowsShape, 3 * bc * 4,
            () => k.LayerNormBackward(c.Data, null, null, b.Data, a.Data, e.Data, rowStats.Data, rowStats.Data + tokens, tokens, C, false));
        Bandwidth("split heads", $"{tokens}×3×{C}", 2 * 3 * bc * 4, () => k.SplitHeads(b.Data, b.Data + bc, b.Data + 2 * bc, a.Data, batch, T, heads, C / heads));
        long scores = (long)batch * heads * T * T;
        if (scores <= n)
        {
            string shape = $"{batch * heads * T}×{T}";
            Bandwidth("softmax forward", shape, 2 * scores * 4, () => k.SoftmaxForward(b.Data, a.Data, batch * heads * T, T));
            Bandwidth("softmax backward", shape, 3 * scores * 4, () => k.SoftmaxBackward(d.Data, b.Data, a.Data, batch * heads * T, T, false));
        }
        int side = full ? 14 : 4, convC = full ? 1024 : 8, convN = full ? 64 : 2; // ConvNeXt-B stage 4 at batch 64
        long convElements = (long)convN * side * side * convC;
        Bandwidth("depthwise conv 7×7 forward", $"{convN}×{side}×{side}×{convC}", 2 * convElements * 4,
            () => k.DepthwiseConvForward(b.Data, a.Data, e.Data, null, convN, side, side, convC, 7, 3));

        // cuBLAS: the ViT-B/16 linear layers at batch 32 (6304 tokens), row-major y = x·Wᵀ.
        int M = full ? 6304 : 34;
        foreach (var (name, N, K) in new[] { ("GEMM attn proj", C, C), ("GEMM mlp fc1", 4 * C, C) })
        {
            if ((long)M * K > n || (long)N * K > n || (long)M * N > n) continue;
            double ms = Time(() => k.Gemm(false, true, M, N, K, 1f, a.Data, K, b.Data, K, 0f, c.Data, N));
            Add(new BenchmarkRow($"{name} FP32", $"{M}×{N}×{K}", ms, Tflops: 2.0 * M * N * K / (ms * 1e9)));
            if (runtime is DriverRuntime gpu && gpu.ComputeCapability.Major >= 8)
            {
                gpu.AllowTf32 = true;
                ms = Time(() => k.Gemm(false, true, M, N, K, 1f, a.Data, K, b.Data, K, 0f, c.Data, N));
                gpu.AllowTf32 = false;
                Add(new BenchmarkRow($"{name} TF32", $"{M}×{N}×{K}", ms, Tflops: 2.0 * M * N * K / (ms * 1e9)));
            }
        }

        // Host-side cost of one launch: queue many tiny kernels, time the queueing only.
        int launches = full ? 10_000 : 20;
        runtime.Synchronize();
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < launches; i++) k.Fill(d.Data, 1, 0f);
        double hostUs = Stopwatch.GetElapsedTime(start).TotalMicroseconds / launches;
        runtime.Synchronize();
        Add(new BenchmarkRow("launch overhead (host)", $"{launches:N0} launches", hostUs / 1000, Microseconds: hostUs));
        return rows;
    }
}
