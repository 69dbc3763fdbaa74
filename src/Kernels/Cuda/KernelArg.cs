using System.Runtime.InteropServices;

namespace Engine.Kernels.Cuda;

/// <summary>
/// One kernel argument, passed by value: a device pointer, an integer, a float, or a small struct held by the
/// caller. Launches take them as a <c>params ReadOnlySpan</c>, which lives on the stack, so a launch allocates
/// nothing managed. The size travels with the value so the emulated device can check it against the kernel's
/// signature.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public readonly unsafe struct KernelArg
{
    readonly ulong _bits;
    readonly void* _external;

    /// <summary>Size in bytes of the C parameter this argument binds to.</summary>
    public int Size { get; }

    KernelArg(ulong bits, int size)
    {
        _bits = bits;
        Size = size;
    }

    /// <summary>An argument whose bytes live elsewhere (a struct passed by value); <paramref name="value"/> must stay
    /// valid until the launch call returns (a local of the caller).</summary>
    public KernelArg(void* value, int size)
    {
        _external = value;
        Size = size;
    }

    /// <summary>Address of the argument's bytes, as cuLaunchKernel wants it. Only valid while the argument itself is
    /// pinned (it is, inside a stack-allocated span).</summary>
    internal void* Address(KernelArg* self) => _external != null ? _external : &self->_bits;

#pragma warning disable CS1591 // conversions: one per C parameter type
    public static implicit operator KernelArg(float* p) => new((ulong)p, sizeof(void*));
    public static implicit operator KernelArg(int* p) => new((ulong)p, sizeof(void*));
    public static implicit operator KernelArg(ushort* p) => new((ulong)p, sizeof(void*));
    public static implicit operator KernelArg(double* p) => new((ulong)p, sizeof(void*));
    public static implicit operator KernelArg(ulong* p) => new((ulong)p, sizeof(void*));
    public static implicit operator KernelArg(void* p) => new((ulong)p, sizeof(void*));
    public static implicit operator KernelArg(int v) => new((uint)v, sizeof(int));
    public static implicit operator KernelArg(long v) => new((ulong)v, sizeof(long));
    public static implicit operator KernelArg(ulong v) => new(v, sizeof(ulong));
    public static implicit operator KernelArg(float v) => new(BitConverter.SingleToUInt32Bits(v), sizeof(float));
    public static implicit operator KernelArg(bool v) => new(v ? 1u : 0u, sizeof(int));
#pragma warning restore CS1591
}

/// <summary>CUDA launch dimensions (x fastest).</summary>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    /// <summary>A 1-D dimension.</summary>
    public static implicit operator Dim3(int x) => new((uint)x);
}
