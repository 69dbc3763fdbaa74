using System.Globalization;

namespace Engine.Kernels;

/// <summary>
/// A device could not allocate memory, even after the engine freed the buffers its pool had cached and tried again.
/// The message says how much was asked for, what tensors hold, what was freed and, where the device reports it, its
/// free and total memory. A training step that runs out clears its tape, releases what it made and zeroes its
/// gradients, so a smaller batch can run next.
/// </summary>
public sealed class DeviceOutOfMemoryException : Exception
{
    /// <summary>An allocation of <paramref name="requestedBytes"/> on <paramref name="deviceName"/> failed, with tensors
    /// holding <paramref name="bytesInUse"/> and the pool <paramref name="cachedBytes"/> after it freed
    /// <paramref name="freedCacheBytes"/>; <paramref name="memory"/> is the device's free and total memory where known.</summary>
    public DeviceOutOfMemoryException(string deviceName, long requestedBytes, long bytesInUse, long cachedBytes, long freedCacheBytes,
        (long Free, long Total)? memory, Exception? inner = null)
        : base($"out of memory on {deviceName}", inner)
    {
        DeviceName = deviceName;
        RequestedBytes = requestedBytes;
        BytesInUse = bytesInUse;
        CachedBytes = cachedBytes;
        FreedCacheBytes = freedCacheBytes;
        DeviceFreeBytes = memory?.Free;
        DeviceTotalBytes = memory?.Total;
    }

    /// <summary>The device's name (<c>cuda</c>, <c>emulated-cuda</c>, <c>cpu</c>).</summary>
    public string DeviceName { get; }

    /// <summary>The allocation that failed, in bytes.</summary>
    public long RequestedBytes { get; }

    /// <summary>Bytes of tensor storage in use when it failed.</summary>
    public long BytesInUse { get; }

    /// <summary>Bytes of free buffers the pool still held when it failed: 0 once it has freed them (a CUDA graph's
    /// buffers stay, and nothing is freed while a graph is captured).</summary>
    public long CachedBytes { get; }

    /// <summary>Bytes of cached buffers freed before the second try (0 when there were none to free).</summary>
    public long FreedCacheBytes { get; }

    /// <summary>Free device memory as the device reported it after the failure, or null where it does not report it.</summary>
    public long? DeviceFreeBytes { get; }

    /// <summary>Total device memory, or null where the device does not report it.</summary>
    public long? DeviceTotalBytes { get; }

    /// <inheritdoc/>
    public override string Message
    {
        get
        {
            var text = $"out of memory on {DeviceName}: {Size(RequestedBytes)} could not be allocated; tensors hold {Size(BytesInUse)}";
            if (FreedCacheBytes > 0) text += $", and the {Size(FreedCacheBytes)} of buffers the pool had cached were freed before trying again";
            if (CachedBytes > 0) text += $"; {Size(CachedBytes)} of cached buffers stay (a CUDA graph's, or a capture is under way)";
            if (DeviceTotalBytes is long total) text += $"; the device has {Size(DeviceFreeBytes ?? 0)} free of {Size(total)}";
            return text + ". Use a smaller batch, or a 16-bit precision (bf16, fp16), which keeps less for the backward";
        }
    }

    /// <summary>Bytes in GiB, MiB or KiB (two decimals), whichever is the largest unit below them.</summary>
    static string Size(long bytes)
    {
        int shift = bytes >= 1L << 30 ? 30 : bytes >= 1L << 20 ? 20 : 10;
        return (bytes / (double)(1L << shift)).ToString("0.00", CultureInfo.InvariantCulture) + (shift == 30 ? " GiB" : shift == 20 ? " MiB" : " KiB");
    }
}
