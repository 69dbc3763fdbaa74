using System.Runtime.InteropServices;

namespace Engine.Kernels.Cpu;

/// <summary>64-byte aligned native memory owned by a SafeHandle; freed exactly once.</summary>
public sealed unsafe class NativeBuffer : SafeHandle
{
    /// <summary>Allocates <paramref name="bytes"/> bytes (uninitialised) aligned to 64 bytes.</summary>
    public NativeBuffer(long bytes) : base(IntPtr.Zero, ownsHandle: true)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Bytes = bytes;
        SetHandle((IntPtr)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 64), 64));
    }

    /// <summary>Size in bytes.</summary>
    public long Bytes { get; }

    /// <summary>Start address.</summary>
    public void* Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            return (void*)handle;
        }
    }

    /// <inheritdoc/>
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <inheritdoc/>
    protected override bool ReleaseHandle()
    {
        NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}

/// <summary>Per-thread growable native scratch memory for kernels (GEMM packing, reduction partials).</summary>
internal sealed unsafe class ThreadScratch
{
    [ThreadStatic] static ThreadScratch? _current;
    readonly NativeBuffer?[] _slots = new NativeBuffer?[6];

    /// <summary>A buffer of at least <paramref name="bytes"/> bytes in slot <paramref name="slot"/> of this thread.</summary>
    public static void* Get(int slot, long bytes)
    {
        var s = _current ??= new ThreadScratch();
        var b = s._slots[slot];
        if (b == null || b.Bytes < bytes)
        {
            b?.Dispose();
            b = s._slots[slot] = new NativeBuffer(bytes + bytes / 4);
        }
        return b.Pointer;
    }
}
