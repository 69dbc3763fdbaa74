using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Cpu;

/// <summary>
/// The float vector operations of one register width, as static members of a struct: a kernel written once against a
/// type parameter <c>W : ISimd&lt;TV&gt;</c> is compiled by the JIT for each width with no indirection, and
/// <see cref="Simd"/> runs it at the widest width this CPU accelerates. (Vector&lt;T&gt; stays 256 bits wide on AVX-512
/// CPUs, which halves the throughput of the transcendental kernels there.)
/// </summary>
internal unsafe interface ISimd<TV> where TV : struct
{
    static abstract int Count { get; }
    static abstract TV Load(float* p);
    static abstract void Store(float* p, TV v);
    static abstract TV Splat(float x);
    static abstract TV Add(TV a, TV b);
    static abstract TV Sub(TV a, TV b);
    static abstract TV Mul(TV a, TV b);
    static abstract TV Div(TV a, TV b);
    /// <summary>√a, correctly rounded (as MathF.Sqrt).</summary>
    static abstract TV Sqrt(TV a);
    /// <summary>a·b + c in one rounding.</summary>
    static abstract TV Fma(TV a, TV b, TV c);
    static abstract TV Abs(TV a);
    /// <summary>max(lo, min(x, hi)) with the CPU's own min/max (NaN handling left to the caller).</summary>
    static abstract TV Clamp(TV x, TV lo, TV hi);
    static abstract TV Floor(TV a);
    /// <summary>2ⁿ for integral n in [−126, 127], built in the exponent bits.</summary>
    static abstract TV Pow2(TV n);
    static abstract TV LessThan(TV a, TV b);
    static abstract TV GreaterThan(TV a, TV b);
    static abstract TV IsNaN(TV a);
    static abstract TV Equals(TV a, TV b);
    /// <summary>Per lane: mask set ? a : b.</summary>
    static abstract TV Select(TV mask, TV a, TV b);
    /// <summary>|magnitude| with the sign of <paramref name="sign"/>.</summary>
    static abstract TV CopySign(TV magnitude, TV sign);
    static abstract TV Max(TV a, TV b);
    static abstract float Sum(TV a);
    static abstract float Max(TV a);
}

#pragma warning disable CS1591 // the members are ISimd's
internal unsafe struct W128 : ISimd<Vector128<float>>
{
    public static int Count => Vector128<float>.Count;
    public static Vector128<float> Load(float* p) => Vector128.Load(p);
    public static void Store(float* p, Vector128<float> v) => v.Store(p);
    public static Vector128<float> Splat(float x) => Vector128.Create(x);
    public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    public static Vector128<float> Sub(Vector128<float> a, Vector128<float> b) => a - b;
    public static Vector128<float> Mul(Vector128<float> a, Vector128<float> b) => a * b;
    public static Vector128<float> Div(Vector128<float> a, Vector128<float> b) => a / b;
    public static Vector128<float> Sqrt(Vector128<float> a) => Vector128.Sqrt(a);
    public static Vector128<float> Fma(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.FusedMultiplyAdd(a, b, c);
    public static Vector128<float> Abs(Vector128<float> a) => Vector128.Abs(a);
    public static Vector128<float> Clamp(Vector128<float> x, Vector128<float> lo, Vector128<float> hi) => Vector128.MaxNative(lo, Vector128.MinNative(x, hi));
    public static Vector128<float> Floor(Vector128<float> a) => Vector128.Floor(a);
    public static Vector128<float> Pow2(Vector128<float> n) => ((Vector128.ConvertToInt32Native(n) + Vector128.Create(127)) << 23).AsSingle();
    public static Vector128<float> LessThan(Vector128<float> a, Vector128<float> b) => Vector128.LessThan(a, b);
    public static Vector128<float> GreaterThan(Vector128<float> a, Vector128<float> b) => Vector128.GreaterThan(a, b);
    public static Vector128<float> IsNaN(Vector128<float> a) => ~Vector128.Equals(a, a);
    public static Vector128<float> Equals(Vector128<float> a, Vector128<float> b) => Vector128.Equals(a, b);
    public static Vector128<float> Select(Vector128<float> mask, Vector128<float> a, Vector128<float> b) => Vector128.ConditionalSelect(mask, a, b);
    public static Vector128<float> CopySign(Vector128<float> magnitude, Vector128<float> sign) => Vector128.CopySign(magnitude, sign);
    public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.MaxNative(a, b);
    public static float Sum(Vector128<float> a) => Vector128.Sum(a);
    public static float Max(Vector128<float> a) => MathF.Max(MathF.Max(a[0], a[1]), MathF.Max(a[2], a[3]));
}

internal unsafe struct W256 : ISimd<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;
    public static Vector256<float> Load(float* p) => Vector256.Load(p);
    public static void Store(float* p, Vector256<float> v) => v.Store(p);
    public static Vector256<float> Splat(float x) => Vector256.Create(x);
    public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    public static Vector256<float> Sub(Vector256<float> a, Vector256<float> b) => a - b;
    public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;
    public static Vector256<float> Div(Vector256<float> a, Vector256<float> b) => a / b;
    public static Vector256<float> Sqrt(Vector256<float> a) => Vector256.Sqrt(a);
    public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);
    public static Vector256<float> Abs(Vector256<float> a) => Vector256.Abs(a);
    public static Vector256<float> Clamp(Vector256<float> x, Vector256<float> lo, Vector256<float> hi) => Vector256.MaxNative(lo, Vector256.MinNative(x, hi));
    public static Vector256<float> Floor(Vector256<float> a) => Vector256.Floor(a);
    public static Vector256<float> Pow2(Vector256<float> n) => ((Vector256.ConvertToInt32Native(n) + Vector256.Create(127)) << 23).AsSingle();
    public static Vector256<float> LessThan(Vector256<float> a, Vector256<float> b) => Vector256.LessThan(a, b);
    public static Vector256<float> GreaterThan(Vector256<float> a, Vector256<float> b) => Vector256.GreaterThan(a, b);
    public static Vector256<float> IsNaN(Vector256<float> a) => ~Vector256.Equals(a, a);
    public static Vector256<float> Equals(Vector256<float> a, Vector256<float> b) => Vector256.Equals(a, b);
    public static Vector256<float> Select(Vector256<float> mask, Vector256<float> a, Vector256<float> b) => Vector256.ConditionalSelect(mask, a, b);
    public static Vector256<float> CopySign(Vector256<float> magnitude, Vector256<float> sign) => Vector256.CopySign(magnitude, sign);
    public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.MaxNative(a, b);
    public static float Sum(Vector256<float> a) => Vector256.Sum(a);
    public static float Max(Vector256<float> a) => W128.Max(Vector128.MaxNative(a.GetLower(), a.GetUpper()));
}

internal unsafe struct W512 : ISimd<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;
    public static Vector512<float> Load(float* p) => Vector512.Load(p);
    public static void Store(float* p, Vector512<float> v) => v.Store(p);
    public static Vector512<float> Splat(float x) => Vector512.Create(x);
    public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    public static Vector512<float> Sub(Vector512<float> a, Vector512<float> b) => a - b;
    public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;
    public static Vector512<float> Div(Vector512<float> a, Vector512<float> b) => a / b;
    public static Vector512<float> Sqrt(Vector512<float> a) => Vector512.Sqrt(a);
    public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
    public static Vector512<float> Abs(Vector512<float> a) => Vector512.Abs(a);
    public static Vector512<float> Clamp(Vector512<float> x, Vector512<float> lo, Vector512<float> hi) => Vector512.MaxNative(lo, Vector512.MinNative(x, hi));
    public static Vector512<float> Floor(Vector512<float> a) => Vector512.Floor(a);
    public static Vector512<float> Pow2(Vector512<float> n) => ((Vector512.ConvertToInt32Native(n) + Vector512.Create(127)) << 23).AsSingle();
    public static Vector512<float> LessThan(Vector512<float> a, Vector512<float> b) => Vector512.LessThan(a, b);
    public static Vector512<float> GreaterThan(Vector512<float> a, Vector512<float> b) => Vector512.GreaterThan(a, b);
    public static Vector512<float> IsNaN(Vector512<float> a) => ~Vector512.Equals(a, a);
    public static Vector512<float> Equals(Vector512<float> a, Vector512<float> b) => Vector512.Equals(a, b);
    public static Vector512<float> Select(Vector512<float> mask, Vector512<float> a, Vector512<float> b) => Vector512.ConditionalSelect(mask, a, b);
    public static Vector512<float> CopySign(Vector512<float> magnitude, Vector512<float> sign) => Vector512.CopySign(magnitude, sign);
    public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.MaxNative(a, b);
    public static float Sum(Vector512<float> a) => Vector512.Sum(a);
    public static float Max(Vector512<float> a) => W256.Max(Vector256.MaxNative(a.GetLower(), a.GetUpper()));
}
#pragma warning restore CS1591

/// <summary>A kernel body written once over the vector width: <see cref="Simd.Run"/> calls it at the width in use.</summary>
internal interface IVectorRange
{
    /// <summary>Processes items [start, end) with W-wide vectors; returns where the caller's scalar tail begins (end
    /// when nothing is left).</summary>
    long Run<TV, W>(long start, long end) where TV : struct where W : ISimd<TV>;
}

/// <summary>Register width of the CPU's element-wise transcendental kernels (GELU, softmax).</summary>
public enum SimdWidth
{
    /// <summary>128-bit vectors (SSE, NEON).</summary>
    W128,
    /// <summary>256-bit vectors (AVX2).</summary>
    W256,
    /// <summary>512-bit vectors (AVX-512).</summary>
    W512,
}

/// <summary>Transcendental functions over any <see cref="ISimd{TV}"/> width, and the width the kernels run at.</summary>
public static class Simd
{
    /// <summary>The widest width this CPU accelerates (512 bits only where the runtime enables Vector512, i.e. not on
    /// CPUs that slow down on 512-bit code).</summary>
    public static SimdWidth Best { get; } =
        Vector512.IsHardwareAccelerated ? SimdWidth.W512 : Vector256.IsHardwareAccelerated ? SimdWidth.W256 : SimdWidth.W128;

    /// <summary>The width in use. Tests force each one to check it (software-emulated when not accelerated).</summary>
    public static SimdWidth Width { get; set; } = Best;

    /// <summary>0, 1, …, 15: each lane's index, for masks over the lanes of a vector of any width (never freed).</summary>
    internal static unsafe float* LaneIndices { get; } = MakeLaneIndices();

    static unsafe float* MakeLaneIndices()
    {
        var p = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(16 * sizeof(float), 64);
        for (int i = 0; i < 16; i++) p[i] = i;
        return p;
    }

    /// <summary>Runs <paramref name="body"/> over [start, end) at <see cref="Width"/>; returns where its scalar tail begins.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static long Run<T>(ref T body, long start, long end) where T : struct, IVectorRange => Width switch
    {
        SimdWidth.W512 => body.Run<Vector512<float>, W512>(start, end),
        SimdWidth.W256 => body.Run<Vector256<float>, W256>(start, end),
        _ => body.Run<Vector128<float>, W128>(start, end),
    };

    /// <summary>eˣ to within 2 ulp: x = n·ln2 + r with |r| ≤ ln2/2, eʳ by its degree-6 Taylor polynomial (error below
    /// r⁷/7! ≈ 1.2e-7 relative), 2ⁿ built in the exponent bits. Below −87.3 (where 2ⁿ leaves the normal range) it
    /// gives 0, above 88.72 +∞, and NaN stays NaN. (The runtime's vector Exp runs element by element on some CPUs.)</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TV Exp<TV, W>(TV x) where TV : struct where W : ISimd<TV>
    {
        TV lo = W.Splat(-87.33654f), hi = W.Splat(88.72283f);
        var clamped = W.Clamp(x, lo, hi);
        var n = W.Floor(W.Fma(clamped, W.Splat(1.44269504088896341f), W.Splat(0.5f)));
        var r = W.Fma(n, W.Splat(-0.693145751953125f), clamped);
        r = W.Fma(n, W.Splat(-1.428606765330187e-06f), r);
        var p = W.Splat(1f / 720f);
        p = W.Fma(p, r, W.Splat(1f / 120f));
        p = W.Fma(p, r, W.Splat(1f / 24f));
        p = W.Fma(p, r, W.Splat(1f / 6f));
        p = W.Fma(p, r, W.Splat(0.5f));
        p = W.Fma(p, r, W.Splat(1f));
        p = W.Fma(p, r, W.Splat(1f));
        var e = W.Mul(p, W.Pow2(n));
        e = W.Select(W.LessThan(x, lo), W.Splat(0f), e);
        e = W.Select(W.GreaterThan(x, hi), W.Splat(float.PositiveInfinity), e);
        return W.Select(W.IsNaN(x), x, e);
    }

    // Φ(x) = (1 + erf(x/√2)) / 2 as 1/2 + z·P(z²)/Q(z²), z = x/√2 clamped to ±3.92 (where erf rounds to ±1 in float):
    // a degree (11, 10) rational fitted to erf/2 on [0, 3.92] by tools/fit-normal-cdf.py (least squares reweighted
    // towards minimax, max error 3.5e-8; it lands just above 1/2 at 3.92, so Φ is exactly 0 and 1 beyond |x| ≈ 5.54).
    // Evaluated in float with FMAs, Φ is within 2.1e-7 of the exact value on [-8, 8] (the erf polynomial with an exp
    // that it replaced: 3.0e-7), in half the time.
    const float CdfClamp = 3.92f;
    const float P0 = 0.5641895532608032f, P1 = 0.09336871653795242f, P2 = 0.02616732567548752f,
        P3 = 0.0018143592169508338f, P4 = 0.00014268833911046386f, P5 = 1.0623632533679483e-06f;
    const float Q1 = 0.4988245368003845f, Q2 = 0.11265763640403748f, Q3 = 0.014690844342112541f,
        Q4 = 0.0011360746575519443f, Q5 = 3.889154686476104e-05f;

    /// <summary>Φ(x), the standard normal CDF (GELU's gate), to within 2.1e-7; NaN in gives a finite value, which GELU
    /// multiplies by x (NaN out).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TV NormalCdf<TV, W>(TV x) where TV : struct where W : ISimd<TV>
    {
        var z = W.Clamp(W.Mul(x, W.Splat(0.70710678118654752f)), W.Splat(-CdfClamp), W.Splat(CdfClamp));
        var s = W.Mul(z, z);
        var p = W.Fma(W.Splat(P5), s, W.Splat(P4));
        p = W.Fma(p, s, W.Splat(P3));
        p = W.Fma(p, s, W.Splat(P2));
        p = W.Fma(p, s, W.Splat(P1));
        p = W.Fma(p, s, W.Splat(P0));
        var q = W.Fma(W.Splat(Q5), s, W.Splat(Q4));
        q = W.Fma(q, s, W.Splat(Q3));
        q = W.Fma(q, s, W.Splat(Q2));
        q = W.Fma(q, s, W.Splat(Q1));
        q = W.Fma(q, s, W.Splat(1f));
        return W.Clamp(W.Add(W.Splat(0.5f), W.Div(W.Mul(z, p), q)), W.Splat(0f), W.Splat(1f));
    }

    /// <summary>Φ(x), scalar (the vector loops' tails): the same operations as the vector form.</summary>
    internal static float NormalCdf(float x)
    {
        float z = Math.Clamp(x * 0.70710678118654752f, -CdfClamp, CdfClamp), s = z * z;
        float p = MathF.FusedMultiplyAdd(P5, s, P4);
        p = MathF.FusedMultiplyAdd(p, s, P3);
        p = MathF.FusedMultiplyAdd(p, s, P2);
        p = MathF.FusedMultiplyAdd(p, s, P1);
        p = MathF.FusedMultiplyAdd(p, s, P0);
        float q = MathF.FusedMultiplyAdd(Q5, s, Q4);
        q = MathF.FusedMultiplyAdd(q, s, Q3);
        q = MathF.FusedMultiplyAdd(q, s, Q2);
        q = MathF.FusedMultiplyAdd(q, s, Q1);
        q = MathF.FusedMultiplyAdd(q, s, 1f);
        return Math.Clamp(0.5f + z * p / q, 0f, 1f);
    }
}

/// <summary>A count the JIT knows when it compiles a generic instantiation (the rows of a GEMM register tile, the channel
/// vectors of a depthwise tile): each count gets its own code, with the unused registers, loads and stores gone.</summary>
internal interface ICount { static abstract int N { get; } }
internal readonly struct N1 : ICount { public static int N => 1; }
internal readonly struct N2 : ICount { public static int N => 2; }
internal readonly struct N3 : ICount { public static int N => 3; }
internal readonly struct N4 : ICount { public static int N => 4; }
internal readonly struct N5 : ICount { public static int N => 5; }
internal readonly struct N6 : ICount { public static int N => 6; }
internal readonly struct N7 : ICount { public static int N => 7; }
internal readonly struct N8 : ICount { public static int N => 8; }
internal readonly struct N9 : ICount { public static int N => 9; }
internal readonly struct N10 : ICount { public static int N => 10; }
internal readonly struct N11 : ICount { public static int N => 11; }
internal readonly struct N12 : ICount { public static int N => 12; }
