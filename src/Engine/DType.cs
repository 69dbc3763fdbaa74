namespace Engine;

/// <summary>Element types. Kernels compute in F32; F16 and BF16 hold values kept in 16 bits under mixed precision (GEMM
/// operands, saved activations).</summary>
public enum DType
{
    /// <summary>IEEE float32.</summary>
    F32,
    /// <summary>IEEE float16 (storage).</summary>
    F16,
    /// <summary>bfloat16 (storage).</summary>
    BF16,
    /// <summary>int32 (class targets, selected indices).</summary>
    I32,
}

/// <summary>Helpers for <see cref="DType"/>.</summary>
public static class DTypes
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this DType t) => t switch { DType.F32 or DType.I32 => 4, _ => 2 };
}
