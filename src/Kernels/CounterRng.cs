using System.Runtime.CompilerServices;

namespace Engine.Kernels;

/// <summary>
/// Counter-based random numbers: uniform(seed, i) depends only on its arguments, so dropout masks are
/// recomputed in backward instead of stored, and every backend and thread count draws the same values.
/// The mixer is SplitMix64's finaliser; CUDA kernels use the same function.
/// </summary>
public static class CounterRng
{
    /// <summary>A 64-bit hash of (seed, counter).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Hash(ulong seed, ulong counter)
    {
        ulong z = seed + (counter + 1) * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform float in [0, 1) with 24 random bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Uniform(ulong seed, ulong counter) => (Hash(seed, counter) >> 40) * (1.0f / (1 << 24));
}
