using Engine.Kernels.Cpu;

namespace Engine.Tests;

/// <summary>CPU buffers: 64-byte aligned; on Linux, buffers of a huge page or more start on a 2 MiB boundary and are
/// advised for transparent huge pages over their whole pages (the kernel's VmFlags "hg" on the mapping). (Their 4 KiB
/// tail is not advised, but memory that the allocator reuses keeps the flags of an earlier buffer, so a test cannot
/// tell.)</summary>
[TestFixture]
public unsafe class NativeBufferTests
{
    [Test]
    public void SmallBuffersAre64ByteAligned()
    {
        foreach (long bytes in new long[] { 0, 1, 4096, (2 << 20) - 64 })
        {
            using var b = new NativeBuffer(bytes);
            Assert.That((long)b.Pointer % 64, Is.EqualTo(0L), $"{bytes} bytes");
        }
    }

    [Test]
    public void LargeBuffersAskForHugePagesOverTheirWholePages()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("transparent huge pages are a Linux feature");
        const long hugePage = 2 << 20;
        using var b = new NativeBuffer(17 * hugePage + 4096); // above glibc's largest mmap threshold (32 MiB): a fresh mapping, never reused memory
        nint start = (nint)b.Pointer;
        Assert.That((long)start % hugePage, Is.EqualTo(0L), "a large buffer starts on a huge-page boundary");
        Assert.That(VmFlags(start), Does.Contain("hg"), "its whole 2 MiB pages are advised MADV_HUGEPAGE");
    }

    /// <summary>The VmFlags of the mapping in /proc/self/smaps that contains <paramref name="address"/>.</summary>
    static string[] VmFlags(nint address)
    {
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-'), space = line.IndexOf(' ');
            if (dash > 0 && space > dash && ulong.TryParse(line[..dash], System.Globalization.NumberStyles.HexNumber, null, out ulong lo)
                && ulong.TryParse(line[(dash + 1)..space], System.Globalization.NumberStyles.HexNumber, null, out ulong hi))
                inside = (ulong)address >= lo && (ulong)address < hi;
            else if (inside && line.StartsWith("VmFlags:")) return line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        }
        throw new InvalidOperationException($"no mapping in /proc/self/smaps holds 0x{address:x}");
    }
}
