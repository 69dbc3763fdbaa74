namespace Engine;

/// <summary>Element types. Kernels run on F32 today; F16/BF16 are storage types that later kernels will read.</summary>
public enum DType
{
    /// <summary>IEEE float32.</summary>
    F32,
    /// <summary>IEEE float16 (storage only for now).</summary>
    F16,
    /// <summary>bfloat16 (storage only for now).</summary>
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
