using System.Diagnostics;
using System.Globalization;
using Engine.Kernels;
using Engine.Kernels.Cpu;
using Engine.Kernels.Cuda;

namespace Engine;

/// <summary>One benchmark result: time per call (median) and, where it applies, achieved bandwidth (the bytes the kernel
/// must read and write at least, per second) with its share of the device's own copy bandwidth for the same bytes, or
/// GEMM throughput with OpenBLAS's at the same shape on the CPU when it is installed.</summary>
public sealed record BenchmarkRow(string Name, string Shape, double Milliseconds, double? GBps = null, double? PercentOfCopy = null,
    double? Tflops = null, double? Microseconds = null, double? PeerTflops = null);

/// <summary>A kernel that <see cref="DeviceBenchmarks"/> can time at any shape.</summary>
/// <param name="Name">What <c>peft bench --op</c> calls it.</param>
/// <param name="ShapeForm">How its shape is written (<c>ROWSxCOLS</c>, <c>MxNxK</c>, ...).</param>
/// <param name="Dimensions">How many numbers the shape has (a count alone is also accepted where it is 2: one row).</param>
/// <param name="What">One line for the list.</param>
public sealed record BenchmarkOp(string Name, string ShapeForm, int Dimensions, string What);

/// <summary>
/// Kernel benchmarks on any device (CPU, CUDA, emulated CUDA): each memory-bound kernel's achieved GB/s against the
/// device's copy bandwidth for the same bytes, GEMM GFLOP/s (with OpenBLAS beside it on the CPU, and TF32 on Ampere and
/// newer GPUs), and on CUDA the host-side cost of one kernel launch. <see cref="Measure"/> times one op at any shape
/// (<c>peft bench</c>); <see cref="Run"/> times them all at ViT-B/16 training sizes (<c>peft selftest --bench</c>).
/// Every call is synchronised and the median of the repeats is reported. On the emulated device the numbers time the
/// emulator, not a GPU.
/// </summary>
public static unsafe class DeviceBenchmarks
{
    /// <summary>The ops, in the order <see cref="Run"/> times them.</summary>
    public static IReadOnlyList<BenchmarkOp> Ops { get; } =
    [
        new("copy", "N", 1, "y = x (the yardstick of the others)"),
        new("copy-driver", "N", 1, "y = x by the device's own copy (cuMemcpyDtoD on a GPU, memcpy on the CPU): the bar for the copy kernel"),
        new("add", "N", 1, "y = a + b (residual)"),
        new("gelu", "N", 1, "exact GELU forward"),
        new("gelu-backward", "N", 1, "GELU backward"),
        new("gelu-bf16", "N", 1, "fc2's input computed again in the backward: GELU of fc1's bf16 pre-activation, written in bf16"),
        new("drop-path", "N", 1, "dropout: a mask drawn per value"),
        new("drop-path-add", "SAMPLESxPER", 2, "a block's residual join after stochastic depth: y = residual + DropPath(x), a draw per sample"),
        new("adam", "N", 1, "one AdamW step of N parameters"),
        new("pack-bf16", "N", 1, "a 16-bit GEMM operand: y = x rounded to bfloat16 (4 bytes read, 2 written per value)"),
        new("unpack-bf16", "N", 1, "a kept bfloat16 activation widened back to float32"),
        new("pack-weights-bf16", "BLOCKSxC", 2, "a training step's weight copies: the four Linear weights of each ViT block of width C converted to bfloat16 in one call (WeightCopies)"),
        new("bias", "ROWSxCOLS", 2, "y = x + bias per column"),
        new("bias-grad", "ROWSxCOLS", 2, "a bias gradient: column sums of dy over the rows"),
        new("bias-gelu-backward", "ROWSxCOLS", 2, "fc1's GELU and bias backward in bf16 in one pass: dh in bf16 for the products from dy and the bf16 pre-activation, the bias summed"),
        new("scale-shift", "ROWSxCOLS", 2, "SSF: y = x·scale + shift per column"),
        new("scale-shift-backward", "ROWSxCOLS", 2, "its backward: dx = dy·scale, dscale and dshift summed over the rows"),
        new("scale-shift-gelu-backward", "ROWSxCOLS", 2, "the backward of GELU after SSF in one pass (an MLP's first layer): dx, dscale, dshift"),
        new("layernorm", "ROWSxCOLS", 2, "LayerNorm forward over each row"),
        new("layernorm-backward", "ROWSxCOLS", 2, "its backward: dx, and dweight and dbias summed over the rows"),
        new("layernorm-backward-input", "ROWSxCOLS", 2, "a frozen norm's backward (GPS, SCT, the adapters): dx alone"),
        new("softmax", "ROWSxCOLS", 2, "softmax over each row"),
        new("softmax-backward", "ROWSxCOLS", 2, "softmax backward over each row"),
        new("sparse-weight-grad", "MxNxK", 3, "GPS's selected entries of dW, one input per output row, from bf16 dy [M, N] and x [M, K]"),
        new("softmax-backward-bf16", "ROWSxCOLS", 2, "the unfused attention's under bf16: dZ in bf16 for its products from float32 dP and the bf16 probabilities"),
        new("depthwise-conv", "NxHxWxC", 4, "7×7 depthwise conv, channels last (ConvNeXt)"),
        new("depthwise-conv-backward", "NxHxWxC", 4, "its backward: input, weight and bias gradients (full fine-tuning)"),
        new("patchify", "NxHxWxC", 4, "2×2 patches of a channels-last image into rows (ConvNeXt's downsampling)"),
        new("split-heads", "BxTxNHxHD", 4, "the unfused attention's head split: q, k, v [B, NH, T, HD] from qkv [B, T, 3·NH·HD]"),
        new("merge-heads", "BxTxNHxHD", 4, "its head merge: y [B, T, NH·HD] from o [B, NH, T, HD]"),
        new("gemm", "MxNxK", 3, "y = x·Wᵀ, x [M, K], W [N, K]"),
        new("gemm-packed", "MxNxK", 3, "the same from x and W already in 16 bits (--precision bf16 or fp16), y in float32: the library's product alone, no conversion"),
        new("linear-gelu", "MxNxK", 3, "y = GELU(x·Wᵀ + b), the activation in the GEMM's epilogue (inference: no pre-activation kept)"),
        new("linear-gelu-unfused", "MxNxK", 3, "the same as the Linear layer (bias in the store) then a GELU pass"),
        new("linear-scale-shift", "MxNxK", 3, "SSF at a Linear: y = (x·Wᵀ)·scale + shift in the GEMM's epilogue, the product kept too (training)"),
        new("linear-scale-shift-unfused", "MxNxK", 3, "the same as the Linear layer without its bias, then a scale-shift pass"),
        new("linear-scale-shift-gelu", "MxNxK", 3, "SSF at an MLP's first layer and its GELU in the GEMM's epilogue, the product kept too (training)"),
        new("linear-scale-shift-gelu-unfused", "MxNxK", 3, "the same as linear-scale-shift, then a GELU pass"),
        new("linear-bf16", "MxNxK", 3, "y = x·Wᵀ + b written in bf16 from a bf16 x, the qkv layer in training (CUDA: the bias in cuBLASLt's epilogue)"),
        new("linear-bf16-unfused", "MxNxK", 3, "the same as a GEMM into float32, then the bias pass writing bf16 (CUDA: the epilogue turned off)"),
        new("linear-gelu-bf16", "MxNxK", 3, "fc1 in training under bf16: the pre-activation kept in bf16, GELU of it in bf16 (CUDA: the pre-activation from cuBLASLt's epilogue, then GELU)"),
        new("linear-gelu-bf16-unfused", "MxNxK", 3, "the same as a GEMM into float32, then one pass writing both (CUDA: the epilogue turned off)"),
        new("linear-scale-shift-bf16", "MxNxK", 3, "SSF's qkv site in training under bf16: the product kept in bf16, its scale-shift written in bf16 (CUDA: the product from cuBLASLt in bf16)"),
        new("linear-scale-shift-bf16-unfused", "MxNxK", 3, "the same as a GEMM into float32, then one pass writing both (CUDA: the epilogue turned off)"),
        new("linear-residual", "MxNxK", 3, "y = r + (x·Wᵀ + b), a block's proj or fc2 joining the residual stream: the add with the bias"),
        new("linear-residual-unfused", "MxNxK", 3, "the same as the Linear layer, then an add pass"),
        new("attention", "BxTxNHxHD", 4, "fused multi-head attention, forward and backward (GFLOP/s: its 6 products)"),
        new("attention-unfused", "BxTxNHxHD", 4, "the same through the unfused path (head permutes, batched GEMMs, softmax)"),
        new("attention-forward", "BxTxNHxHD", 4, "fused multi-head attention, forward only (inference; tensor cores at head dim 64 or 32 in bf16/fp16 on a GPU)"),
        new("attention-forward-unfused", "BxTxNHxHD", 4, "the same forward through the unfused path"),
        new("attention-products", "BxTxNHxHD", 4, "the unfused path's six batched products alone, operands packed beforehand under bf16/fp16 (cuBLAS's share)"),
        new("attention-products-padded", "BxTxNHxHD", 4, "the same with the [T, T] matrices' rows padded to a multiple of 8 elements (16-byte aligned rows)"),
    ];

    /// <summary>Parses <c>1576x3072</c> (or <c>1576×3072</c>) for <paramref name="op"/>; a single count is one row.</summary>
    /// <exception cref="ArgumentException">Not the op's form, or a size below 1.</exception>
    public static int[] ParseShape(BenchmarkOp op, string text)
    {
        var parts = text.Split(['x', '×', 'X']);
        var dims = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out dims[i]) || dims[i] < 1)
                throw new ArgumentException($"--shape {text}: '{parts[i]}' is not a size ≥ 1 ({op.Name} takes {op.ShapeForm})");
        if (op.Dimensions == 1) return dims.Aggregate(1L, (a, b) => a * b) <= int.MaxValue ? dims
            : throw new ArgumentException($"--shape {text}: more than {int.MaxValue} elements");
        if (op.Dimensions == 2 && dims.Length == 1) return [1, dims[0]];
        if (dims.Length != op.Dimensions) throw new ArgumentException($"--shape {text}: {op.Name} takes {op.ShapeForm}");
        if (op.Name == "patchify" && (dims[1] % 2 != 0 || dims[2] % 2 != 0))
            throw new ArgumentException($"--shape {text}: patchify cuts 2×2 patches, so H and W must be even");
        return dims;
    }

    /// <summary>Times <paramref name="op"/> at <paramref name="shape"/> on <paramref name="device"/> (median of
    /// <paramref name="repeats"/> synchronised calls after two warm-up calls).</summary>
    /// <exception cref="CudaException">A CUDA call failed (a kernel that faulted, say); the message names the benchmark
    /// and its shape before the call.</exception>
    public static BenchmarkRow Measure(Device device, string op, int[] shape, int repeats = 10)
    {
        try
        {
            return MeasureOp(device, op, shape, repeats);
        }
        catch (CudaException e)
        {
            throw new CudaException($"benchmark {op} at {string.Join("×", shape)}: {e.Call}", e.Code, e.Description);
        }
    }

    static BenchmarkRow MeasureOp(Device device, string op, int[] shape, int repeats)
    {
        var info = Ops.FirstOrDefault(o => o.Name == op) ?? throw new ArgumentException($"unknown op '{op}' (known: {string.Join(", ", Ops.Select(o => o.Name))})");
        var k = device.Kernels;
        string shapeText = string.Join("×", shape);
        long elements = shape.Aggregate(1L, (a, b) => a * b);
        if (op.StartsWith("linear-", StringComparison.Ordinal) && op.Contains("-bf16", StringComparison.Ordinal))
            return SixteenBitLinear(device, op, shape[0], shape[1], shape[2], repeats);
        if (op == "gemm" || op.StartsWith("linear-", StringComparison.Ordinal))
        {
            int M = shape[0], N = shape[1], K = shape[2];
            using var x = Filled(device, (long)M * K, 0.5f);
            using var w = Filled(device, (long)N * K, 0.25f);
            using var bias = Filled(device, N, 0.125f);
            using var y = Tensor.Zeros(device, checked(M * N));
            using var u = op.StartsWith("linear-scale-shift", StringComparison.Ordinal) || op.StartsWith("linear-residual", StringComparison.Ordinal)
                ? Tensor.Zeros(device, checked(M * N)) : null; // SSF's kept product, or the residual stream
            double flops = 2.0 * M * N * K;
            Action call = op switch
            {
                "gemm" => () => k.Gemm(false, true, M, N, K, 1f, x.Data, K, w.Data, K, 0f, y.Data, N),
                "linear-gelu" => () => k.LinearGeluForward(y.Data, null, null, null, x.Data, null, w.Data, bias.Data, M, N, K),
                "linear-scale-shift" => () => k.LinearScaleShiftForward(y.Data, null, u!.Data, null, x.Data, null, w.Data, bias.Data, bias.Data, null, M, N, K),
                "linear-scale-shift-unfused" => () =>
                {
                    k.LinearForward(u!.Data, null, x.Data, null, w.Data, null, null, M, N, K);
                    k.ScaleShiftForward(y.Data, u.Data, bias.Data, bias.Data, M, N);
                },
                "linear-scale-shift-gelu" => () => k.LinearScaleShiftGeluForward(y.Data, null, u!.Data, null, x.Data, null, w.Data, bias.Data, bias.Data, M, N, K),
                "linear-scale-shift-gelu-unfused" => () =>
                {
                    k.LinearScaleShiftForward(y.Data, null, u!.Data, null, x.Data, null, w.Data, bias.Data, bias.Data, null, M, N, K);
                    k.GeluForward(y.Data, null, y.Data, (long)M * N);
                },
                "linear-residual" => () => k.LinearForward(y.Data, null, x.Data, null, w.Data, bias.Data, u!.Data, M, N, K),
                "linear-residual-unfused" => () =>
                {
                    k.LinearForward(y.Data, null, x.Data, null, w.Data, bias.Data, null, M, N, K);
                    k.Add(y.Data, u!.Data, y.Data, (long)M * N);
                },
                _ => () =>
                {
                    k.LinearForward(y.Data, null, x.Data, null, w.Data, bias.Data, null, M, N, K);
                    k.GeluForward(y.Data, null, y.Data, (long)M * N);
                },
            };
            double ms = Time(device, repeats, call);
            double? peer = null;
            if (op == "gemm" && device is not CudaDevice && OpenBlas.TryLoad(out _) is { } blas)
            {
                blas.SetThreads(CpuParallel.Threads); // the same threads as ours, not OpenBLAS's default of all cores
                peer = flops / (Time(device, repeats, () => blas.Sgemm(false, true, M, N, K, 1f, x.Data, K, w.Data, K, 0f, y.Data, N)) * 1e9);
            }
            return new BenchmarkRow(op, shapeText, ms, Tflops: flops / (ms * 1e9), PeerTflops: peer);
        }
        if (op is "attention" or "attention-unfused")
        {
            int B = shape[0], T = shape[1], NH = shape[2], HD = shape[3];
            using var qkv = Tensor.Zeros(device, B, T, 3 * NH * HD);
            using var upstream = Tensor.Zeros(device, B, T, NH * HD);
            device.Kernels.Fill(qkv.Data, qkv.Count, 0.1f);
            device.Kernels.Fill(upstream.Data, upstream.Count, 0.01f);
            qkv.RequiresGrad = true;
            var tape = new Autograd.Tape();
            void Step()
            {
                using (tape.Record())
                {
                    using var y = Engine.Ops.Attention(qkv, NH, fused: op == "attention");
                    tape.Backward(y, upstream);
                }
            }
            // qkv's gradient is kept from step to step (the backward adds into it): a fresh one per step would be a zeroed
            // leaf gradient with its own, newly faulted-in memory, which cost more than the kernels at Swin's window shapes.
            double attentionMs = Time(device, repeats, Step);
            qkv.Grad?.Dispose();
            qkv.Grad = null;
            double flops = 12.0 * B * NH * T * (double)T * HD; // q·kᵀ and P·v, then four products in the backward
            return new BenchmarkRow(op, shapeText, attentionMs, Tflops: flops / (attentionMs * 1e9));
        }
        if (op is "attention-forward" or "attention-forward-unfused")
        {
            int B = shape[0], T = shape[1], NH = shape[2], HD = shape[3];
            using var qkv = Filled(device, (long)B * T * 3 * NH * HD, 0.1f);
            using var qkvShaped = qkv.Reshape(B, T, 3 * NH * HD);
            double forwardMs = Time(device, repeats, () => Engine.Ops.Attention(qkvShaped, NH, fused: op == "attention-forward").Dispose());
            return new BenchmarkRow(op, shapeText, forwardMs, Tflops: 4.0 * B * NH * T * (double)T * HD / (forwardMs * 1e9));
        }
        if (op.StartsWith("attention-products", StringComparison.Ordinal))
        {
            int B = shape[0], T = shape[1], NH = shape[2], HD = shape[3], batch = B * NH;
            int ld = op.EndsWith("-padded", StringComparison.Ordinal) ? (T + 7) / 8 * 8 : T;
            long tt = (long)T * ld, th = (long)T * HD;
            var precision = k.GemmPrecision;
            var half = precision switch { Precision.BF16 => DType.BF16, Precision.FP16 => DType.F16, _ => DType.F32 };
            using var heads = Filled(device, 4 * batch * th, 0.1f); // q | k | v | dO
            using var scores = Filled(device, batch * tt, 0.01f);   // P, and dZ
            using var packedHeads = half == DType.F32 ? null : Tensor.Empty(device, half, checked((int)heads.Count));
            using var packedScores = half == DType.F32 ? null : Tensor.Empty(device, half, checked((int)scores.Count));
            if (packedHeads != null) k.PackLowPrecision(packedHeads.HalfData, heads.Data, heads.Count, precision);
            if (packedScores != null) k.PackLowPrecision(packedScores.HalfData, scores.Data, scores.Count, precision);
            GemmOperand Head(int i) => packedHeads == null ? heads.Data + i * batch * th : GemmOperand.Packed(packedHeads.HalfData + i * batch * th);
            GemmOperand P = packedScores == null ? scores.Data : GemmOperand.Packed(packedScores.HalfData);
            using var outScores = Tensor.Zeros(device, checked((int)(batch * tt)));
            using var outHeads = Tensor.Zeros(device, checked((int)(batch * th)));
            float* sOut = outScores.Data, hOut = outHeads.Data;
            void Products()
            {
                k.GemmStridedBatched(false, true, T, T, HD, 1f, Head(0), HD, th, Head(1), HD, th, 0f, sOut, ld, tt, batch); // S = q·kᵀ
                k.GemmStridedBatched(false, false, T, HD, T, 1f, P, ld, tt, Head(2), HD, th, 0f, hOut, HD, th, batch);    // O = P·v
                k.GemmStridedBatched(false, true, T, T, HD, 1f, Head(3), HD, th, Head(2), HD, th, 0f, sOut, ld, tt, batch); // dP = dO·vᵀ
                k.GemmStridedBatched(true, false, T, HD, T, 1f, P, ld, tt, Head(3), HD, th, 0f, hOut, HD, th, batch);     // dv = Pᵀ·dO
                k.GemmStridedBatched(false, false, T, HD, T, 1f, P, ld, tt, Head(1), HD, th, 0f, hOut, HD, th, batch);    // dq = dZ·k
                k.GemmStridedBatched(true, false, T, HD, T, 1f, P, ld, tt, Head(0), HD, th, 0f, hOut, HD, th, batch);     // dk = dZᵀ·q
            }
            double productsMs = Time(device, repeats, Products);
            return new BenchmarkRow(op, shapeText, productsMs, Tflops: 12.0 * batch * T * (double)T * HD / (productsMs * 1e9));
        }
        if (op == "sparse-weight-grad") return SparseWeightGrad(device, shapeText, shape[0], shape[1], shape[2], repeats);
        if (op == "gemm-packed") return PackedGemm(device, shapeText, shape[0], shape[1], shape[2], repeats);
        if (op == "pack-weights-bf16") return PackedWeights(device, shapeText, shape[0], shape[1], repeats);
        bool rowOp = info.Dimensions == 2;
        int rows = rowOp ? shape[0] : 1, cols = rowOp ? shape[1] : (int)elements;
        long n = op == "split-heads" ? 3 * elements : elements; // q, k and v
        using var a = Filled(device, n, 0.5f);
        using var b = Filled(device, n, 0.25f);
        using var c = Tensor.Zeros(device, checked((int)n));
        using var d = Filled(device, n, 1f);
        using var vector = Filled(device, Math.Max(cols, 2 * rows), 1f);
        using var vector2 = Filled(device, Math.Max(2 * cols, 2 * rows), 0.1f); // also dscale and dshift [2, cols]
        bool conv = op.StartsWith("depthwise-conv", StringComparison.Ordinal);
        using var convWeights = conv ? Filled(device, 49L * shape[3], 0.02f) : null;
        using var convGrads = conv ? Tensor.Zeros(device, 50 * shape[3]) : null; // dw [C, 49] and dbias [C]
        bool readsBf16 = op is "gelu-bf16" or "bias-gelu-backward" or "softmax-backward-bf16";
        using var halves = op.EndsWith("-bf16", StringComparison.Ordinal) || readsBf16 ? Tensor.Empty(device, DType.BF16, checked((int)n)) : null;
        if (readsBf16) k.PackLowPrecision(halves!.HalfData, a.Data, n, Precision.BF16);
        using var bf16 = k.UseGemmPrecision(readsBf16 ? Precision.BF16 : k.GemmPrecision); // its 16-bit values are bf16
        (long bytes, Action work) = op switch
        {
            "copy" => (2 * n * 4, (Action)(() => k.Copy(b.Data, a.Data, n, false))),
            "copy-driver" => (2 * n * 4, () => DriverCopy(device, b.Data, a.Data, n)),
            "add" => (3 * n * 4, () => k.Add(c.Data, a.Data, b.Data, n)),
            "gelu" => (2 * n * 4, () => k.GeluForward(b.Data, null, a.Data, n)),
            "gelu-backward" => (3 * n * 4, () => k.GeluBackward(c.Data, null, b.Data, a.Data, n, false)),
            "gelu-bf16" => (n * 4, () => k.GeluForward(null, (ushort*)c.Data, GemmOperand.Packed(halves!.HalfData), n)),
            "drop-path" => (2 * n * 4, () => k.DropPathForward(b.Data, a.Data, n, 1, 0.1f, 1, null)),
            "drop-path-add" => (3 * n * 4, () => k.DropPathAdd(c.Data, a.Data, b.Data, rows, cols, 0.1f, 1, null)),
            "adam" => (7 * n * 4, () => k.AdamStep(a.Data, b.Data, c.Data, d.Data, null, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 1, true, null)),
            "pack-bf16" => (n * 6, () => k.PackLowPrecision(halves!.HalfData, a.Data, n, Precision.BF16)),
            "unpack-bf16" => (n * 6, () => k.UnpackLowPrecision(b.Data, halves!.HalfData, n, Precision.BF16)),
            "bias" => (2 * n * 4, () => k.AddBias(b.Data, a.Data, vector.Data, rows, cols)),
            "bias-grad" => (n * 4, () => k.BiasGrad(vector2.Data, a.Data, rows, cols)),
            "bias-gelu-backward" => (n * 8, () => k.BiasGeluBackward((ushort*)c.Data, vector2.Data, b.Data, GemmOperand.Packed(halves!.HalfData), rows, cols)),
            "scale-shift" => (2 * n * 4, () => k.ScaleShiftForward(b.Data, a.Data, vector.Data, vector2.Data, rows, cols)),
            "scale-shift-backward" => (3 * n * 4, () => k.ScaleShiftBackward(c.Data, null, vector2.Data, vector2.Data + cols, b.Data, a.Data, vector.Data, rows, cols, false)),
            "scale-shift-gelu-backward" => (3 * n * 4, () => k.ScaleShiftGeluBackward(c.Data, null, vector2.Data, vector2.Data + cols, b.Data, a.Data, vector.Data,
                d.Data, rows, cols, false)), // shift 1 (d is all ones)
            "layernorm" => (2 * n * 4, () => k.LayerNormForward(b.Data, null, vector2.Data, vector2.Data + rows, a.Data, vector.Data, vector2.Data, rows, cols, 1e-6f)),
            "layernorm-backward" => (3 * n * 4, () => k.LayerNormBackward(c.Data, null, vector2.Data, vector2.Data + cols, b.Data, a.Data, vector.Data,
                d.Data, d.Data + rows, rows, cols, false)), // mean 1 and rstd 1 (d is all ones)
            "layernorm-backward-input" => (3 * n * 4, () => k.LayerNormBackward(c.Data, null, null, null, b.Data, a.Data, vector.Data,
                d.Data, d.Data + rows, rows, cols, false)),
            "softmax" => (2 * n * 4, () => k.SoftmaxForward(b.Data, a.Data, rows, cols)),
            "softmax-backward" => (3 * n * 4, () => k.SoftmaxBackward(c.Data, null, b.Data, a.Data, rows, cols, false)),
            "softmax-backward-bf16" => (n * 8, () => k.SoftmaxBackward(null, (ushort*)c.Data, b.Data, GemmOperand.Packed(halves!.HalfData), rows, cols, false)),
            "depthwise-conv" => (2 * n * 4, () => k.DepthwiseConvForward(b.Data, a.Data, convWeights!.Data, null, shape[0], shape[1], shape[2], shape[3], 7, 3)),
            "depthwise-conv-backward" => (3 * n * 4, () => k.DepthwiseConvBackward(c.Data, convGrads!.Data, convGrads.Data + 49L * shape[3], b.Data, a.Data,
                convWeights!.Data, shape[0], shape[1], shape[2], shape[3], 7, 3, false)),
            "patchify" => (2 * n * 4, () => k.Patchify(b.Data, a.Data, shape[0], shape[3], shape[1], shape[2], 2, channelsLast: true)),
            "split-heads" => (2 * n * 4, () => k.SplitHeads(b.Data, null, a.Data, shape[0], shape[1], shape[2], shape[3])),
            "merge-heads" => (2 * n * 4, () => k.MergeHeads(b.Data, null, a.Data, shape[0], shape[1], shape[2], shape[3])),
            _ => throw new ArgumentException($"unknown op '{op}'"),
        };
        return MemoryBound(device, op, shapeText, bytes, repeats, work);
    }

    /// <summary>A memory-bound kernel's row: its time, the GB/s of the <paramref name="bytes"/> it must move, and that as
    /// a share of this device copying the same number of bytes (the yardstick).</summary>
    static BenchmarkRow MemoryBound(Device device, string op, string shapeText, long bytes, int repeats, Action work)
    {
        double time = Time(device, repeats, work);
        double gbps = bytes / (time * 1e6);
        long copyFloats = Math.Max(1, bytes / 8);
        double copyMs = op == "copy" ? time : CopyMilliseconds(device, copyFloats, repeats);
        return new BenchmarkRow(op, shapeText, time, gbps, 100 * gbps / (2.0 * copyFloats * 4 / (copyMs * 1e6)));
    }

    /// <summary>A training step's weight copies (<see cref="WeightCopies"/>): qkv, proj, fc1 and fc2 of each of
    /// <paramref name="blocks"/> ViT blocks of width <paramref name="C"/> (12·C² values a block) converted to bf16 by one
    /// <see cref="IKernels.PackLowPrecisionMany"/>: 6 bytes a value.</summary>
    static BenchmarkRow PackedWeights(Device device, string shapeText, int blocks, int C, int repeats)
    {
        long[] sizes = [.. Enumerable.Range(0, blocks).SelectMany(_ => new[] { 3L * C * C, (long)C * C, 4L * C * C, 4L * C * C })];
        long total = sizes.Sum();
        using var weights = Filled(device, total, 0.5f);
        using var copies = Tensor.Empty(device, DType.BF16, checked((int)total));
        var targets = new PackTarget[sizes.Length];
        long offset = 0;
        for (int i = 0; i < sizes.Length; offset += sizes[i++]) targets[i] = new PackTarget(copies.HalfData + offset, weights.Data + offset, sizes[i]);
        return MemoryBound(device, "pack-weights-bf16", shapeText, total * 6, repeats, () => device.Kernels.PackLowPrecisionMany(targets, Precision.BF16));
    }

    /// <summary>GPS's selected entries of a Linear's weight gradient, one input per output row (GPS's K = 1), from bf16 dy
    /// [M, N] and x [M, K], each read once at best: 2·(M·N + M·K) bytes.</summary>
    static BenchmarkRow SparseWeightGrad(Device device, string shapeText, int M, int N, int K, int repeats)
    {
        var k = device.Kernels;
        using var bf16 = k.UseGemmPrecision(Precision.BF16);
        using var dy = Packed(device, (long)M * N, 0.01f);
        using var x = Packed(device, (long)M * K, 0.5f);
        using var index = Tensor.FromArray(device, [.. Enumerable.Range(0, N).Select(o => (int)((o * 7L + o / K) % K))], N, 1); // spread over the columns
        using var dvalues = Tensor.Zeros(device, N);
        return MemoryBound(device, "sparse-weight-grad", shapeText, 2L * ((long)M * N + (long)M * K), repeats,
            () => k.SparseWeightGrad(dvalues.Data, GemmOperand.Packed(dy.HalfData), GemmOperand.Packed(x.HalfData), index.IntData, M, N, K, 1));
    }

    /// <summary>A Linear layer in training under bf16 GEMMs, its input the bf16 tensor the op before wrote: the qkv layer
    /// (y in bf16), fc1 (its pre-activation kept in bf16 and GELU of it in bf16) or SSF's qkv site (its product kept in
    /// bf16, the scale-shift of it in bf16). The "-unfused" rows turn CUDA's
    /// epilogue (<see cref="CudaRuntime.LinearEpilogues"/>) off: a GEMM into float32, then one elementwise pass. A row
    /// whose product cuBLASLt declined says so in its name.</summary>
    static BenchmarkRow SixteenBitLinear(Device device, string op, int M, int N, int K, int repeats)
    {
        var k = device.Kernels;
        using var bf16 = k.UseGemmPrecision(Precision.BF16);
        using var x = Packed(device, (long)M * K, 0.5f);
        using var w = Filled(device, (long)N * K, 0.25f);
        using var bias = Filled(device, N, 0.125f);
        using var product = Tensor.Zeros(device, checked(M * N)); // the float32 product where a pass turns it into the outputs
        using var y = Tensor.Empty(device, DType.BF16, checked(M * N));
        using var kept = Tensor.Empty(device, DType.BF16, checked(M * N));
        using var scale = Filled(device, N, 1.5f);
        Action call = op.StartsWith("linear-gelu", StringComparison.Ordinal)
            ? () => k.LinearGeluForward(product.Data, y.HalfData, null, kept.HalfData, null, x.HalfData, w.Data, bias.Data, M, N, K)
            : op.StartsWith("linear-scale-shift", StringComparison.Ordinal)
            ? () => k.LinearScaleShiftForward(product.Data, y.HalfData, null, kept.HalfData, null, x.HalfData, w.Data, scale.Data, bias.Data, null, M, N, K)
            : () => k.LinearForward(product.Data, y.HalfData, null, x.HalfData, w.Data, bias.Data, null, M, N, K);
        var runtime = (device as CudaDevice)?.Runtime;
        bool previous = runtime?.LinearEpilogues ?? true;
        try
        {
            if (runtime != null) runtime.LinearEpilogues = !op.EndsWith("-unfused", StringComparison.Ordinal);
            double ms = Time(device, repeats, call);
            string declined = runtime?.DeclinedLinearProduct(M, N, K) is { } reason ? $" (cuBLASLt declined {reason})" : "";
            return new BenchmarkRow(op + declined, string.Join("×", M, N, K), ms, Tflops: 2.0 * M * N * K / (ms * 1e9));
        }
        finally
        {
            if (runtime != null) runtime.LinearEpilogues = previous;
        }
    }

    static Tensor Packed(Device device, long n, float value, Precision precision = Precision.BF16)
    {
        using var wide = Filled(device, n, value);
        var packed = Tensor.Empty(device, precision == Precision.FP16 ? DType.F16 : DType.BF16, checked((int)n));
        device.Kernels.PackLowPrecision(packed.HalfData, wide.Data, n, precision);
        return packed;
    }

    /// <summary>y = x·Wᵀ with both operands packed beforehand in the device's 16-bit GEMM precision: what a training
    /// step's products read, timed without the conversions the <c>gemm</c> rows include.</summary>
    static BenchmarkRow PackedGemm(Device device, string shapeText, int M, int N, int K, int repeats)
    {
        var k = device.Kernels;
        var precision = k.GemmPrecision;
        if (precision is not (Precision.BF16 or Precision.FP16))
            throw new ArgumentException($"gemm-packed reads operands packed in 16 bits: time it under bf16 or fp16 (--precision), not {precision}");
        using var x = Packed(device, (long)M * K, 0.5f, precision);
        using var w = Packed(device, (long)N * K, 0.25f, precision);
        using var y = Tensor.Zeros(device, checked(M * N));
        double ms = Time(device, repeats, () => k.Gemm(false, true, M, N, K, 1f, GemmOperand.Packed(x.HalfData), K, GemmOperand.Packed(w.HalfData), K, 0f, y.Data, N));
        return new BenchmarkRow("gemm-packed", shapeText, ms, Tflops: 2.0 * M * N * K / (ms * 1e9));
    }

    /// <summary>dst = src by the device's own copy rather than a kernel of ours.</summary>
    static void DriverCopy(Device device, float* dst, float* src, long n)
    {
        if (device is CudaDevice cuda) cuda.Runtime.CopyDeviceToDevice((ulong)dst, (ulong)src, n * sizeof(float));
        else Buffer.MemoryCopy(src, dst, n * sizeof(float), n * sizeof(float));
    }

    static double CopyMilliseconds(Device device, long floats, int repeats)
    {
        using var src = Filled(device, floats, 0.5f);
        using var dst = Tensor.Zeros(device, checked((int)floats));
        return Time(device, repeats, () => device.Kernels.Copy(dst.Data, src.Data, floats, false));
    }

    static Tensor Filled(Device device, long n, float value)
    {
        var t = Tensor.Zeros(device, checked((int)n));
        device.Kernels.Fill(t.Data, n, value);
        return t;
    }

    /// <summary>Median of <paramref name="repeats"/> synchronised calls of <paramref name="work"/>, in ms, after two
    /// warm-ups.</summary>
    internal static double Time(Device device, int repeats, Action work)
    {
        for (int i = 0; i < 2; i++) work();
        device.Synchronize();
        var times = new double[Math.Max(1, repeats)];
        for (int i = 0; i < times.Length; i++)
        {
            long start = Stopwatch.GetTimestamp();
            work();
            device.Synchronize();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(times);
        return times[times.Length / 2];
    }

    /// <summary>The markdown header of <see cref="FormatRow"/>.</summary>
    public const string TableHeader = "| benchmark | shape | ms | GB/s | % of copy | GFLOP/s | OpenBLAS GFLOP/s | µs |\n|---|---|---|---|---|---|---|---|";

    /// <summary>One result as a markdown table row.</summary>
    public static string FormatRow(BenchmarkRow row)
    {
        static string Cell(double? v, string format) => v.HasValue ? v.Value.ToString(format, CultureInfo.InvariantCulture) : "";
        return $"| {row.Name} | {row.Shape} | {Cell(row.Milliseconds, "F4")} | {Cell(row.GBps, "F1")} | {Cell(row.PercentOfCopy, "F0")} | " +
               $"{Cell(row.Tflops * 1000, "F1")} | {Cell(row.PeerTflops * 1000, "F1")} | {Cell(row.Microseconds, "F2")} |";
    }

    /// <summary>Runs every benchmark and prints a markdown table row by row as results arrive.</summary>
    public static void RunAndPrint(Device device, bool full, TextWriter output)
    {
        string where = device is CudaDevice cuda ? cuda.Runtime.Description : $"the CPU ({CpuParallel.Threads} thread(s), GEMM {CpuGemm.BestIsa})";
        output.WriteLine($"\ndevice benchmarks on {where}, {(full ? "ViT-B/16 training sizes (batch 64)" : "small sizes")}" +
                         (device is CudaDevice { Runtime: EmulatedRuntime } ? "; emulated device: these numbers time the emulator, not a GPU" : ""));
        output.WriteLine("\n" + TableHeader);
        Run(device, full, row => output.WriteLine(FormatRow(row)));
    }

    /// <summary>Runs every op at ViT-B/16 training sizes (batch 64) when <paramref name="full"/>, otherwise tiny ones,
    /// then on CUDA the TF32 GEMMs (Ampere and newer) and the launch overhead.</summary>
    public static List<BenchmarkRow> Run(Device device, bool full, Action<BenchmarkRow>? progress = null)
    {
        var rows = new List<BenchmarkRow>();
        void Add(BenchmarkRow row)
        {
            rows.Add(row);
            progress?.Invoke(row);
        }
        int repeats = full ? 20 : 2;
        int tokens = full ? 64 * 197 : 2 * 17, C = full ? 768 : 40, heads = full ? 12 : 2, T = full ? 197 : 17, M = full ? 6304 : 34;
        long hidden = (long)tokens * C * 4; // the MLP hidden activation
        int side = full ? 14 : 4, convC = full ? 1024 : 8, convN = full ? 64 : 2; // ConvNeXt-B stage 4 at batch 64
        var shapes = new Dictionary<string, int[]>
        {
            ["copy"] = [(int)hidden], ["copy-driver"] = [(int)hidden], ["add"] = [(int)hidden], ["gelu"] = [(int)hidden], ["gelu-backward"] = [(int)hidden], ["gelu-bf16"] = [(int)hidden],
            ["drop-path"] = [(int)hidden], ["drop-path-add"] = [full ? 64 : 2, T * C], ["adam"] = [(int)hidden], ["pack-bf16"] = [(int)hidden], ["unpack-bf16"] = [(int)hidden],
            ["pack-weights-bf16"] = [full ? 12 : 2, C],
            ["bias"] = [tokens, C], ["bias-grad"] = [tokens, C], ["bias-gelu-backward"] = [tokens, 4 * C], ["scale-shift"] = [tokens, C], ["scale-shift-backward"] = [tokens, C],
            ["scale-shift-gelu-backward"] = [tokens, 4 * C],
            ["layernorm"] = [tokens, C], ["layernorm-backward"] = [tokens, C], ["layernorm-backward-input"] = [tokens, C], ["softmax"] = [(full ? 64 : 2) * heads * T, T], ["softmax-backward"] = [(full ? 64 : 2) * heads * T, T],
            ["softmax-backward-bf16"] = [(full ? 64 : 2) * heads * T, T], ["sparse-weight-grad"] = [tokens, 4 * C, C], // fc1's, at batch 64
            ["depthwise-conv"] = [convN, side, side, convC], ["depthwise-conv-backward"] = [convN, side, side, convC], ["patchify"] = [convN, 2 * side, 2 * side, convC / 2],
            ["split-heads"] = [tokens / T, T, heads, C / heads], ["merge-heads"] = [tokens / T, T, heads, C / heads],
            ["attention"] = [full ? 32 : 2, T, heads, C / heads], ["attention-unfused"] = [full ? 32 : 2, T, heads, C / heads],
            ["attention-forward"] = [full ? 32 : 2, T, heads, full ? 64 : 8], ["attention-forward-unfused"] = [full ? 32 : 2, T, heads, full ? 64 : 8],
            ["attention-products"] = [full ? 32 : 2, T, heads, C / heads], ["attention-products-padded"] = [full ? 32 : 2, T, heads, C / heads],
            ["linear-gelu"] = [M, 4 * C, C], ["linear-gelu-unfused"] = [M, 4 * C, C], // fc1 at batch 32
            ["linear-scale-shift"] = [M, 4 * C, C], ["linear-scale-shift-unfused"] = [M, 4 * C, C],
            ["linear-scale-shift-gelu"] = [M, 4 * C, C], ["linear-scale-shift-gelu-unfused"] = [M, 4 * C, C],
            ["linear-residual"] = [M, C, 4 * C], ["linear-residual-unfused"] = [M, C, 4 * C], // fc2 at batch 32
            ["linear-bf16"] = [M, 3 * C, C], ["linear-bf16-unfused"] = [M, 3 * C, C], // qkv at batch 32
            ["linear-gelu-bf16"] = [M, 4 * C, C], ["linear-gelu-bf16-unfused"] = [M, 4 * C, C],
            ["linear-scale-shift-bf16"] = [M, 3 * C, C], ["linear-scale-shift-bf16-unfused"] = [M, 3 * C, C],
        };
        foreach (var op in Ops.Where(o => o.Name is not ("gemm" or "gemm-packed"))) Add(Measure(device, op.Name, shapes[op.Name], repeats));
        // The ViT-B/16 linear layers at batch 32 (6304 tokens): proj, fc1, and fc2 (the shape of fc1's input gradient).
        foreach (var (N, K) in new[] { (C, C), (4 * C, C), (C, 4 * C) })
        {
            if (device is CudaDevice { Runtime: DriverRuntime { ComputeCapability.Major: >= 8 } })
                using (device.Kernels.UseGemmPrecision(Precision.BF16))
                    Add(Measure(device, "gemm-packed", [M, N, K], repeats) with { Name = "gemm-packed BF16" });
            if (K > C) continue; // the float32 rows keep their two shapes
            Add(Measure(device, "gemm", [M, N, K], repeats));
            if (device is CudaDevice { Runtime: DriverRuntime { ComputeCapability.Major: >= 8 } })
                foreach (var precision in new[] { Precision.TF32, Precision.BF16, Precision.FP16 })
                {
                    device.Kernels.GemmPrecision = precision;
                    try { Add(Measure(device, "gemm", [M, N, K], repeats) with { Name = $"gemm {precision}" }); }
                    finally { device.Kernels.GemmPrecision = Precision.FP32; }
                }
        }
        // The attention's batched products in tensor-core precisions, rows of T = 197 elements against padded rows; the
        // forward alone and forward with backward, fused (on tensor cores at head dim 64 in bf16) against unfused.
        if (device is CudaDevice { Runtime: DriverRuntime { ComputeCapability.Major: >= 8 } })
            foreach (var precision in new[] { Precision.TF32, Precision.BF16 })
                foreach (var op in new[] { "attention-products", "attention-products-padded", "attention-forward", "attention-forward-unfused", "attention", "attention-unfused" })
                {
                    device.Kernels.GemmPrecision = precision;
                    try { Add(Measure(device, op, shapes[op], repeats) with { Name = $"{op} {precision}" }); }
                    finally { device.Kernels.GemmPrecision = Precision.FP32; }
                }
        // Swin's window attention in bf16, fused (on tensor cores at head dim 32) against unfused, forward alone (inference
        // takes the fused one there unmeasured) and with backward: Swin-B's first stage at batch 32, 64 windows of 49
        // tokens an image, 4 heads of 32.
        if (device is CudaDevice { Runtime: DriverRuntime { ComputeCapability.Major: >= 8 } })
            foreach (var op in new[] { "attention-forward", "attention-forward-unfused", "attention", "attention-unfused" })
            {
                device.Kernels.GemmPrecision = Precision.BF16;
                try { Add(Measure(device, op, [full ? 32 * 64 : 8, 49, 4, 32], repeats) with { Name = $"{op} windows bf16" }); }
                finally { device.Kernels.GemmPrecision = Precision.FP32; }
            }
        if (device is CudaDevice cudaDevice)
        {
            // Host-side cost of one launch: queue many tiny kernels, time the queueing only.
            int launches = full ? 10_000 : 20;
            using var one = Tensor.Zeros(device, 1);
            cudaDevice.Synchronize();
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < launches; i++) device.Kernels.Fill(one.Data, 1, 0f);
            double hostUs = Stopwatch.GetElapsedTime(start).TotalMicroseconds / launches;
            cudaDevice.Synchronize();
            Add(new BenchmarkRow("launch overhead (host)", $"{launches:N0} launches", hostUs / 1000, Microseconds: hostUs));
        }
        return rows;
    }
}
