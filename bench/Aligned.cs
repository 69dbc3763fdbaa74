using System.Runtime.InteropServices;

namespace Engine.Bench;

/// <summary>64-byte aligned benchmark operands with a small repeating pattern (no denormals, no overflow).</summary>
internal static unsafe class Aligned
{
    /// <summary>Allocates n floats filled with (i mod 23 − 11)·0.01; free with NativeMemory.AlignedFree.</summary>
    public static float* Filled(long n)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(n * sizeof(float)), 64);
        for (long i = 0; i < n; i++) p[i] = (i % 23 - 11) * 0.01f;
        return p;
    }

    /// <summary>Frees buffers from <see cref="Filled"/>.</summary>
    public static void Free(params float*[] buffers)
    {
        foreach (var p in buffers) NativeMemory.AlignedFree(p);
    }
}
