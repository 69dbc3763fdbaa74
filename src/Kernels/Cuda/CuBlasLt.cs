using System.Runtime.InteropServices;

namespace Engine.Kernels.Cuda;

/// <summary>
/// Our own bindings to cuBLASLt (libcublasLt.so.13/.12/.11) for one product: a row-major Linear layer, y[M, N] =
/// x[M, K]·W[N, K]ᵀ (+ bias[N]), the bias added in the GEMM's epilogue and y stored in float32 or 16 bits straight
/// from the accumulators, so no float32 product is written and read again by a bias pass. Column-major, as cuBLASLt
/// sees it: D[N, M] = op(W)·x with W stored K×N (transposed) and x stored K×M, the bias one value per row of D.
/// Each shape, type and alignment gets its descriptors and the heuristic's first algorithm once (a plan); a
/// combination the library offers no algorithm for is remembered as declined, and the caller runs its GEMM and
/// bias pass instead. Nothing here stops a run: a handle the library cannot make (no GPU, an entry point an old
/// library lacks) or a call it refuses declines the product with the library's reason, which
/// <see cref="Declined"/> reports.
/// </summary>
public sealed unsafe partial class CuBlasLt : IDisposable
{
    const string Lib = "cublasLt";
    const int OpN = 0, OpT = 1, R32F = 0, Compute32F = 68, Compute32FFastTf32 = 77;
    const int DescTransA = 3, DescTransB = 4, DescEpilogue = 7, DescBiasPointer = 8, DescBiasDataType = 26;
    const int EpilogueDefault = 1, EpilogueBias = 4;
    const int PrefMaxWorkspaceBytes = 1, PrefMinAlignmentA = 5, PrefMinAlignmentB = 6, PrefMinAlignmentC = 7, PrefMinAlignmentD = 8;

    /// <summary>cublasLtMatmulAlgo_t (8 × uint64) and the heuristic's other fields (cublasLtMatmulHeuristicResult_t).</summary>
    [StructLayout(LayoutKind.Sequential)]
    struct HeuristicResult
    {
        public fixed ulong Algo[8];
        public nuint WorkspaceSize;
        public int State;
        public float WavesCount;
        public fixed int Reserved[4];
    }

    [LibraryImport(Lib)] private static partial int cublasLtCreate(out IntPtr handle);
    [LibraryImport(Lib)] private static partial int cublasLtDestroy(IntPtr handle);
    [LibraryImport(Lib)] private static partial IntPtr cublasLtGetStatusString(int status);
    [LibraryImport(Lib)] private static partial int cublasLtMatmulDescCreate(out IntPtr desc, int computeType, int scaleType);
    [LibraryImport(Lib)] private static partial int cublasLtMatmulDescDestroy(IntPtr desc);
    [LibraryImport(Lib)] private static partial int cublasLtMatmulDescSetAttribute(IntPtr desc, int attribute, void* value, nuint bytes);
    [LibraryImport(Lib)] private static partial int cublasLtMatrixLayoutCreate(out IntPtr layout, int type, ulong rows, ulong cols, long ld);
    [LibraryImport(Lib)] private static partial int cublasLtMatrixLayoutDestroy(IntPtr layout);
    [LibraryImport(Lib)] private static partial int cublasLtMatmulPreferenceCreate(out IntPtr preference);
    [LibraryImport(Lib)] private static partial int cublasLtMatmulPreferenceDestroy(IntPtr preference);
    [LibraryImport(Lib)] private static partial int cublasLtMatmulPreferenceSetAttribute(IntPtr preference, int attribute, void* value, nuint bytes);
    [LibraryImport(Lib)] private static partial int cublasLtMatmulAlgoGetHeuristic(IntPtr handle, IntPtr desc, IntPtr a, IntPtr b, IntPtr c, IntPtr d,
        IntPtr preference, int requested, HeuristicResult* results, out int returned);
    [LibraryImport(Lib)] private static partial int cublasLtMatmul(IntPtr handle, IntPtr desc, float* alpha, void* a, IntPtr aLayout, void* b, IntPtr bLayout,
        float* beta, void* c, IntPtr cLayout, void* d, IntPtr dLayout, HeuristicResult* algo, void* workspace, nuint workspaceBytes, IntPtr stream);

    /// <summary>One product's descriptors and algorithm (null descriptors: declined, with the reason).</summary>
    sealed class Plan
    {
        public IntPtr Desc, W, X, Y;
        public HeuristicResult Algo;
        public string? Declined;
    }

    /// <summary>What makes two products share a plan: the shape, the types and every pointer's alignment (the algorithms
    /// the heuristic may pick depend on it).</summary>
    readonly record struct PlanKey(int M, int N, int K, Precision Precision, bool SixteenBitOutput, bool Bias, uint AlignX, uint AlignW, uint AlignY, uint AlignBias);

    readonly Dictionary<PlanKey, Plan> _plans = new();
    readonly IntPtr _stream;
    readonly ulong _workspace;
    IntPtr _handle;

    /// <summary>A handle that queues on <paramref name="stream"/> and lets the algorithms use
    /// <see cref="CuBlas.WorkspaceBytes"/> of device memory at <paramref name="workspace"/> (the buffer the cuBLAS handle
    /// on the same stream uses); the caller's context must be current. Where the library makes no handle,
    /// <see cref="Unavailable"/> says why and every product is declined.</summary>
    public CuBlasLt(IntPtr stream, ulong workspace)
    {
        _stream = stream;
        _workspace = workspace;
        try
        {
            int status = cublasLtCreate(out _handle);
            if (status != 0)
            {
                _handle = IntPtr.Zero;
                Unavailable = Failure("cublasLtCreate", status);
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            Unavailable = e.Message;
        }
    }

    /// <summary>Why the library makes no handle here (every product is declined with it), or null when it does.</summary>
    public string? Unavailable { get; }

    /// <summary>The products the library declined, one line each: shape and types first ("M×N×K ..."), then the reason
    /// (no algorithm, the heuristic's status, a call it refused, or <see cref="Unavailable"/>).</summary>
    public IEnumerable<string> Declined => _plans.Values.Where(p => p.Declined != null).Select(p => p.Declined!);

    /// <summary>
    /// Queues y[M, N] = x[M, K]·w[N, K]ᵀ (+ bias[N], float32) with fp32 accumulation, row-major: operands float32
    /// (fp32, or TF32 tensor cores) or 16-bit (bf16/fp16, <paramref name="precision"/>); y float32, or in the 16-bit
    /// precision when <paramref name="sixteenBitOutput"/>. Returns false, queueing nothing, where the library declines
    /// this product (<see cref="Declined"/> says why).
    /// </summary>
    public bool Linear(int M, int N, int K, void* x, void* w, float* bias, void* y, bool sixteenBitOutput, Precision precision)
    {
        var key = KeyOf(M, N, K, x, w, bias, y, sixteenBitOutput, precision);
        var plan = PlanFor(key, bias);
        if (plan.Declined != null) return false;
        float alpha = 1f, beta = 0f;
        var algo = plan.Algo;
        int status = bias == null ? 0 : cublasLtMatmulDescSetAttribute(plan.Desc, DescBiasPointer, &bias, (nuint)sizeof(float*));
        string call = status != 0 ? $"cublasLtMatmulDescSetAttribute({DescBiasPointer})" : "cublasLtMatmul";
        if (status == 0)
            status = cublasLtMatmul(_handle, plan.Desc, &alpha, w, plan.W, x, plan.X, &beta, y, plan.Y, y, plan.Y, &algo,
                (void*)_workspace, (nuint)CuBlas.WorkspaceBytes, _stream);
        if (status == 0) return true;
        plan.Declined = $"{Shape(key)}: {Failure(call, status)}"; // refused before anything was queued: the caller's GEMM and bias pass run
        return false;
    }

    /// <summary>Whether <see cref="Linear"/> would run this product (the plan is made now if it is new).</summary>
    public bool Offers(int M, int N, int K, void* x, void* w, float* bias, void* y, bool sixteenBitOutput, Precision precision) =>
        PlanFor(KeyOf(M, N, K, x, w, bias, y, sixteenBitOutput, precision), bias).Declined == null;

    Plan PlanFor(PlanKey key, float* bias)
    {
        if (!_plans.TryGetValue(key, out var plan)) _plans[key] = plan = MakePlan(key, bias);
        return plan;
    }

    static PlanKey KeyOf(int M, int N, int K, void* x, void* w, float* bias, void* y, bool sixteenBitOutput, Precision precision) =>
        new(M, N, K, precision, sixteenBitOutput, bias != null, Alignment(x), Alignment(w), Alignment(y), Alignment(bias));

    /// <summary>How a declined line names a product: "M×N×K precision → y's type (+ float32 bias)".</summary>
    static string Shape(PlanKey key) =>
        $"{key.M}×{key.N}×{key.K} {key.Precision.Name()} → {(key.SixteenBitOutput ? "16-bit" : "float32")} y{(key.Bias ? " + float32 bias" : "")}";

    /// <summary>The descriptors of <paramref name="key"/>'s product, then the heuristic's first algorithm for them. A call
    /// the library refuses, no algorithm, or no handle (<see cref="Unavailable"/>; the descriptors are still made, which
    /// checks them against the library) declines the product with the reason.</summary>
    Plan MakePlan(PlanKey key, float* bias)
    {
        var plan = new Plan();
        IntPtr preference = IntPtr.Zero;
        try
        {
            int operandType = TypeOf(key.Precision), outputType = key.SixteenBitOutput ? TypeOf(key.Precision) : R32F;
            Check(cublasLtMatmulDescCreate(out plan.Desc, key.Precision == Precision.TF32 ? Compute32FFastTf32 : Compute32F, R32F), "cublasLtMatmulDescCreate");
            int transW = OpT, transX = OpN, epilogue = key.Bias ? EpilogueBias : EpilogueDefault, biasType = R32F;
            SetAttribute(plan.Desc, DescTransA, &transW, sizeof(int));
            SetAttribute(plan.Desc, DescTransB, &transX, sizeof(int));
            SetAttribute(plan.Desc, DescEpilogue, &epilogue, sizeof(int));
            if (key.Bias) SetAttribute(plan.Desc, DescBiasPointer, &bias, sizeof(float*)); // the heuristic reads its alignment
            // A 16-bit y takes a bias of its own type unless told otherwise (a library without this attribute declines).
            if (key.Bias && key.SixteenBitOutput) SetAttribute(plan.Desc, DescBiasDataType, &biasType, sizeof(int));
            Check(cublasLtMatrixLayoutCreate(out plan.W, operandType, (ulong)key.K, (ulong)key.N, key.K), "cublasLtMatrixLayoutCreate");
            Check(cublasLtMatrixLayoutCreate(out plan.X, operandType, (ulong)key.K, (ulong)key.M, key.K), "cublasLtMatrixLayoutCreate");
            Check(cublasLtMatrixLayoutCreate(out plan.Y, outputType, (ulong)key.N, (ulong)key.M, key.N), "cublasLtMatrixLayoutCreate");
            Check(cublasLtMatmulPreferenceCreate(out preference), "cublasLtMatmulPreferenceCreate");
            ulong workspace = (ulong)CuBlas.WorkspaceBytes;
            uint alignW = key.AlignW, alignX = key.AlignX, alignY = key.AlignY;
            SetPreference(preference, PrefMaxWorkspaceBytes, &workspace, sizeof(ulong));
            SetPreference(preference, PrefMinAlignmentA, &alignW, sizeof(uint));
            SetPreference(preference, PrefMinAlignmentB, &alignX, sizeof(uint));
            SetPreference(preference, PrefMinAlignmentC, &alignY, sizeof(uint));
            SetPreference(preference, PrefMinAlignmentD, &alignY, sizeof(uint));
            if (Unavailable != null) plan.Declined = $"{Shape(key)}: {Unavailable}";
            else
            {
                HeuristicResult result = default;
                int status = cublasLtMatmulAlgoGetHeuristic(_handle, plan.Desc, plan.W, plan.X, plan.Y, plan.Y, preference, 1, &result, out int found);
                if (status != 0) plan.Declined = $"{Shape(key)}: {Failure("cublasLtMatmulAlgoGetHeuristic", status)}";
                else if (found == 0) plan.Declined = $"{Shape(key)}: no algorithm";
                else if (result.State != 0) plan.Declined = $"{Shape(key)}: {Failure("the heuristic's algorithm", result.State)}";
                else plan.Algo = result;
            }
        }
        catch (Exception e) when (e is CudaException or DllNotFoundException or EntryPointNotFoundException)
        {
            plan.Declined = $"{Shape(key)}: {e.Message}";
        }
        finally
        {
            if (preference != IntPtr.Zero) cublasLtMatmulPreferenceDestroy(preference);
        }
        return plan;
    }

    /// <summary>A pointer's alignment in bytes, up to the 256 the heuristic assumes by default (a null bias: 256).</summary>
    static uint Alignment(void* p) => p == null ? 256u : (uint)Math.Min(256UL, (ulong)p & (~(ulong)p + 1));

    static int TypeOf(Precision precision) => precision switch
    {
        Precision.FP32 or Precision.TF32 => R32F,
        Precision.BF16 => 14, // CUDA_R_16BF
        Precision.FP16 => 2,  // CUDA_R_16F
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "no such GEMM precision"),
    };

    static void SetAttribute(IntPtr desc, int attribute, void* value, int bytes) =>
        Check(cublasLtMatmulDescSetAttribute(desc, attribute, value, (nuint)bytes), $"cublasLtMatmulDescSetAttribute({attribute})");

    static void SetPreference(IntPtr preference, int attribute, void* value, int bytes) =>
        Check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, value, (nuint)bytes), $"cublasLtMatmulPreferenceSetAttribute({attribute})");

    static string Describe(int status) => Marshal.PtrToStringUTF8(cublasLtGetStatusString(status)) ?? $"cuBLASLt status {status}";

    /// <summary>A refused call as <see cref="CudaException"/> words it: "call failed with status (the library's words)".</summary>
    static string Failure(string call, int status) => new CudaException(call, status, Describe(status)).Message;

    static void Check(int status, string call)
    {
        if (status != 0) throw new CudaException(call, status, Describe(status));
    }

    /// <summary>Destroys the plans and the handle (the owning context must be current).</summary>
    public void Dispose()
    {
        foreach (var plan in _plans.Values)
        {
            if (plan.Desc != IntPtr.Zero) cublasLtMatmulDescDestroy(plan.Desc);
            foreach (var layout in new[] { plan.W, plan.X, plan.Y })
                if (layout != IntPtr.Zero) cublasLtMatrixLayoutDestroy(layout);
        }
        _plans.Clear();
        if (_handle != IntPtr.Zero) cublasLtDestroy(_handle);
        _handle = IntPtr.Zero;
    }
}
