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
        SetHandle((IntPtr)Allocate(bytes));
    }

    /// <summary>2 MiB: one transparent huge page on x86-64 Linux.</summary>
    const long HugePage = 2 << 20;

    /// <summary>Allocates <paramref name="bytes"/> bytes aligned to 64 (free with <see cref="NativeMemory.AlignedFree"/>).
    /// On Linux, a buffer of one huge page or more starts on a huge-page boundary and asks for transparent huge pages
    /// over its whole 2 MiB pages (the tail stays on 4 KiB pages, so resident memory is what is used): where the kernel
    /// grants them only on request (THP "madvise", Debian's default), activations, weights and their gradients would
    /// otherwise sit on 4 KiB pages, and the GEMMs, AdamW and the row kernels that stream them take a TLB miss every
    /// 4 KiB (a ViT-B/16 training step at batch 8 ran 1–7% faster with them, see docs/benchmarks.md).</summary>
    internal static void* Allocate(long bytes)
    {
        if (bytes < HugePage || !OperatingSystem.IsLinux()) return NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 64), 64);
        void* p = NativeMemory.AlignedAlloc((nuint)bytes, (nuint)HugePage);
        _ = madvise(p, (nuint)(bytes & ~(HugePage - 1)), MadvHugePage); // advice: a refusal leaves 4 KiB pages
        return p;
    }

    const int MadvHugePage = 14;

    [DllImport("libc", EntryPoint = "madvise")]
    static extern int madvise(void* address, nuint length, int advice);

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
