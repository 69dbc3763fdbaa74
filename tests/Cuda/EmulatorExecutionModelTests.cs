using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Engine.Kernels;
using Engine.Kernels.Cuda;

namespace Engine.Tests;

/// <summary>
/// The emulated device's execution model on kernels written to probe it (built here with g++ against the shipped
/// emu/cuemu.h and emu/launcher.h): barriers and shuffles across fibers, partial warps, early returns, per-block
/// shared memory while blocks run on several workers, and a deadlock reported as a failed launch.
/// </summary>
[TestFixture]
public unsafe class EmulatorExecutionModelTests
{
    // Each block of 100 threads reduces its 96-element slice through shared memory and warp shuffles (threads 96..99,
    // a partial warp, return before any barrier), then every thread checks it reads its left neighbour's shared slot after the barrier.
    const string ProbeKernels = """
        #include "emu/cuemu.h"
        #include "common.cuh"
        extern "C" __global__ void slice_sums(float* sums, int* neighbour_ok, const float* x)
        {
            __shared__ float slots[128];
            __shared__ float warp_totals[4];
            int t = threadIdx.x;
            if (t >= 96) return;
            float v = x[blockIdx.x * 96 + t];
            slots[t] = v;
            __syncthreads();
            neighbour_ok[blockIdx.x * 96 + t] = slots[(t + 95) % 96] == x[blockIdx.x * 96 + (t + 95) % 96];
            for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
            if (t % 32 == 0) warp_totals[t / 32] = v;
            __syncthreads();
            if (t == 0) sums[blockIdx.x] = warp_totals[0] + warp_totals[1] + warp_totals[2];
        }
        extern "C" __global__ void divergent_barriers(int* reached)
        {
            if (threadIdx.x < 16) __syncthreads(); else __syncwarp();
            reached[threadIdx.x] = 1;
        }
        // The thread's linear index within its block, read in a frame 64 KiB below the kernel's.
        __attribute__((noinline)) unsigned deep_rank(int depth)
        {
            volatile char pad[4096];
            pad[0] = 0;
            if (depth > 0) return deep_rank(depth - 1) + pad[0];
            return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
        }
        // Per thread: its block's and its own linear index, read at the start, after a barrier (every other thread of
        // the block has run since) and from deep in its stack; and the grid's and block's shapes.
        extern "C" __global__ void builtins(unsigned* out)
        {
            unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
            unsigned rank = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
            unsigned* o = out + ((size_t)block * blockDim.x * blockDim.y * blockDim.z + rank) * 5;
            o[0] = block * 10000 + rank;
            __syncthreads();
            o[1] = ((blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x) * 10000 + (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
            o[2] = block * 10000 + deep_rank(16);
            o[3] = (gridDim.x * 100 + gridDim.y) * 100 + gridDim.z;
            o[4] = (blockDim.x * 100 + blockDim.y) * 100 + blockDim.z;
        }
        // Each lane's result of five xor shuffles with a step that commutes but does not associate, from the shuffles
        // themselves and from cuemu's one-barrier butterfly (common.cuh's warp_sum and warp_max).
        // Each warp multiplies its own tiles, D (16×8 floats) += A (16×16) · B (16×8) `repeats` times with
        // mma_16x8x16, loading the 16-bit operands' bits and D into the fragments of the hardware's layout and storing
        // D from them: tile w of A, B, D and out for warp w of the launch. A barrier after each product makes the
        // block's warps take turns.
        extern "C" __global__ void mma_tiles(float* out, const unsigned short* A, const unsigned short* B, const float* D,
                                             long long precision, long long repeats)
        {
            int w = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
            A += w * 256, B += w * 128, D += w * 128, out += w * 128;
            auto pair = [](const unsigned short* p) { return (unsigned)p[0] | (unsigned)p[1] << 16; };
            unsigned short column[4] = {B[2 * t * 8 + g], B[(2 * t + 1) * 8 + g], B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]};
            unsigned a[4] = {pair(A + g * 16 + 2 * t), pair(A + (g + 8) * 16 + 2 * t), pair(A + g * 16 + 2 * t + 8), pair(A + (g + 8) * 16 + 2 * t + 8)};
            unsigned b[2] = {pair(column), pair(column + 2)};
            float d[4] = {D[g * 8 + 2 * t], D[g * 8 + 2 * t + 1], D[(g + 8) * 8 + 2 * t], D[(g + 8) * 8 + 2 * t + 1]};
            for (int r = 0; r < repeats; r++)
            {
                mma_16x8x16(d, a, b, (int)precision);
                __syncthreads(); // the block's warps take turns between products
            }
            out[g * 8 + 2 * t] = d[0], out[g * 8 + 2 * t + 1] = d[1], out[(g + 8) * 8 + 2 * t] = d[2], out[(g + 8) * 8 + 2 * t + 1] = d[3];
        }
        extern "C" __global__ void butterflies(int* out, const int* x)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x, v = x[i], shuffled = v;
            for (int mask = 16; mask > 0; mask >>= 1) shuffled = (shuffled * __shfl_xor_sync(0xffffffffu, shuffled, mask) + 1) % 1009;
            out[2 * i] = shuffled;
            out[2 * i + 1] = cuemu::warp_butterfly(v, [](int a, int b) { return (a * b + 1) % 1009; });
        }
        // Two reads with a barrier missing before them: each thread publishes its rank, then reads both neighbours' slots
        // at once. Thread 0 of each block also notes when its block ran among the launch's blocks.
        extern "C" __global__ void racy_neighbours(int* right, int* left, int* block_turn, int* turns)
        {
            __shared__ int slots[64];
            int t = threadIdx.x, n = blockDim.x, i = blockIdx.x * n + t;
            slots[t] = -1;
            __syncthreads();
            slots[t] = t;
            right[i] = slots[(t + 1) % n];
            left[i] = slots[(t + n - 1) % n];
            if (t == 0) block_turn[blockIdx.x] = atomicAdd(turns, 1);
        }
        // Four values a thread with common.cuh's wide loads, from x + offset.
        extern "C" __global__ void wide_loads(float* out, const float* x, long long offset)
        {
            float v[4];
            load_values(v, x + offset, 4 * threadIdx.x, 4);
            out[threadIdx.x] = v[0] + v[1] + v[2] + v[3];
        }
        // What a block finds in a shared slot before it writes there (its index, for the next block on its worker).
        extern "C" __global__ void shared_at_start(float* found)
        {
            __shared__ float slots[2];
            if (threadIdx.x == 0)
            {
                found[blockIdx.x] = slots[1];
                slots[1] = (float)blockIdx.x;
            }
        }
        // Shuffles that read lanes which are not there: in warp 0 every lane swaps with its neighbour (a), then the odd
        // lanes return and the even ones swap again (b) and sum the warp (c, cuemu's one-barrier butterfly); warp 1
        // has 16 lanes (a block of 48) and swaps across 16 (d, lanes that do not exist) and with its neighbour (e).
        extern "C" __global__ void inactive_lanes(float* out)
        {
            int t = threadIdx.x;
            float v = (float)(t + 1), *o = out + 5 * t;
            if (t < 32)
            {
                o[0] = __shfl_xor_sync(0xffffffffu, v, 1);
                if (t % 2) return;
                o[1] = __shfl_xor_sync(0xffffffffu, v, 1);
                o[2] = warp_sum(v);
            }
            else
            {
                o[3] = __shfl_xor_sync(0xffffffffu, v, 16);
                o[4] = __shfl_xor_sync(0xffffffffu, v, 1);
            }
        }
        #define CUEMU_KERNEL_LIST(X) X(slice_sums) X(divergent_barriers) X(builtins) X(butterflies) X(racy_neighbours) X(wide_loads) X(shared_at_start) \
            X(inactive_lanes) X(mma_tiles)
        #include "emu/launcher.h"
        """;

    static IntPtr _library;
    static delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, uint, int, void**, long*, int, byte*, int, int> _launch;

    static string? _dir;

    [OneTimeSetUp]
    public void Build()
    {
        string dir = _dir = Files.TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "emu"));
        foreach (var name in new[] { "emu/cuemu.h", "emu/launcher.h", KernelSources.CommonHeader }) File.WriteAllText(Path.Combine(dir, name), KernelSources.Files[name]);
        File.WriteAllText(Path.Combine(dir, "probe.cpp"), ProbeKernels);
        Process? process;
        try
        {
            process = Process.Start(new ProcessStartInfo("g++", $"{EmulatedRuntime.CompilerFlags} -I. probe.cpp -o libprobe.so")
            {
                WorkingDirectory = dir,
                RedirectStandardError = true,
            });
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Assert.Ignore($"g++ unavailable: {e.Message}");
            return;
        }
        string errors = process!.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.Zero, errors);
        _library = NativeLibrary.Load(Path.Combine(dir, "libprobe.so"));
        _launch = (delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, uint, int, void**, long*, int, byte*, int, int>)
            NativeLibrary.GetExport(_library, "cuemu_launch");
        _setWorkers = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(_library, "cuemu_set_workers");
    }

    static delegate* unmanaged<int, void> _setWorkers;

    /// <summary>The build folder goes; the loaded library stays mapped until the process ends.</summary>
    [OneTimeTearDown]
    public void RemoveBuild()
    {
        if (_dir != null && Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    static (int Code, string Error) Launch(string kernel, uint grid, uint block, params ulong[] pointers) =>
        Launch(kernel, (grid, 1, 1), (block, 1, 1), false, pointers);

    static (int Code, string Error) Launch(string kernel, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, bool descending,
        params ulong[] pointers)
    {
        var name = Encoding.UTF8.GetBytes(kernel + "\0");
        void** args = stackalloc void*[pointers.Length];
        long* sizes = stackalloc long[pointers.Length];
        ulong* values = stackalloc ulong[pointers.Length];
        for (int i = 0; i < pointers.Length; i++)
        {
            values[i] = pointers[i];
            args[i] = &values[i];
            sizes[i] = sizeof(ulong);
        }
        byte* error = stackalloc byte[512];
        int code;
        fixed (byte* n = name) code = _launch(n, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, 0, descending ? 1 : 0, args, sizes,
            pointers.Length, error, 512);
        return (code, code == 0 ? "" : Marshal.PtrToStringUTF8((IntPtr)error)!);
    }

    [Test]
    public void BlocksOnSeveralWorkersKeepTheirOwnSharedMemoryAndReduceExactly([Values] bool descending)
    {
        const int Blocks = 37;
        var x = new float[Blocks * 96];
        for (int i = 0; i < x.Length; i++) x[i] = (i * 7919 % 1000) / 8f; // multiples of 1/8 below 125: exact sums in float
        var sums = new float[Blocks];
        var ok = new int[x.Length];
        for (int repeat = 0; repeat < 6; repeat++)
        {
            _setWorkers(1 + repeat % 3); // one worker, then two and three running blocks at once (pool threads made as needed)
            fixed (float* px = x, ps = sums)
            fixed (int* pok = ok)
            {
                var (code, error) = Launch("slice_sums", (Blocks, 1, 1), (100, 1, 1), descending, (ulong)ps, (ulong)pok, (ulong)px);
                Assert.That(code, Is.Zero, error);
            }
            for (int b = 0; b < Blocks; b++)
                Assert.That(sums[b], Is.EqualTo(x.Skip(b * 96).Take(96).Sum()), $"block {b}, launch {repeat}");
            Assert.That(ok, Is.All.EqualTo(1), "every thread saw its neighbour's shared slot after __syncthreads");
        }
    }

    /// <summary>threadIdx, blockIdx, blockDim and gridDim in three dimensions, as each thread of each block sees them
    /// at its start, after a barrier and deep in its own stack (where the emulator finds them), with blocks on one to
    /// three workers.</summary>
    [Test]
    public void EveryThreadSeesItsOwnIndicesAndTheLaunchShape([Values] bool descending)
    {
        (uint X, uint Y, uint Z) grid = (3, 2, 2), block = (5, 4, 3);
        int blocks = 12, threads = 60;
        var values = new uint[blocks * threads * 5];
        for (int workers = 1; workers <= 3; workers++)
        {
            _setWorkers(workers);
            Array.Fill(values, uint.MaxValue);
            fixed (uint* p = values)
            {
                var (code, error) = Launch("builtins", grid, block, descending, (ulong)p);
                Assert.That(code, Is.Zero, error);
            }
            for (int b = 0; b < blocks; b++)
                for (int t = 0; t < threads; t++)
                {
                    var v = values.AsSpan((b * threads + t) * 5, 5).ToArray();
                    uint expected = (uint)(b * 10000 + t);
                    Assert.That(v, Is.EqualTo(new[] { expected, expected, expected, 30202u, 50403u }), $"block {b}, thread {t}, {workers} workers");
                }
        }
    }

    /// <summary>The butterfly that warp_sum and warp_max take on the emulated device gives every lane what its five
    /// shuffles give, in whole warps (gathered, computed once for the warp) and in a partial one (shuffled). The op,
    /// (a·b + 1) mod 1009, commutes as + and max do, so the five shuffles leave every lane of a whole warp the same
    /// value; it does not associate, so that value is one tree's and no other order's.</summary>
    [Test]
    public void TheGatheredButterflyIsTheShuffledOne([Values(64u, 48u)] uint threads, [Values] bool descending)
    {
        var x = Enumerable.Range(0, 2 * (int)threads).Select(i => i * 7919 % 1000 - 500).ToArray();
        var results = new int[2 * x.Length];
        fixed (int* px = x, pr = results)
        {
            var (code, error) = Launch("butterflies", (2, 1, 1), (threads, 1, 1), descending, (ulong)pr, (ulong)px);
            Assert.That(code, Is.Zero, error);
        }
        var shuffled = results.Where((_, i) => i % 2 == 0).ToArray();
        Assert.That(results.Where((_, i) => i % 2 == 1), Is.EqualTo(shuffled));
        Assert.That(shuffled.Take(32).Distinct().Count(), Is.EqualTo(1), "a whole warp's lanes agree");
        int inOrder = x.Take(32).Aggregate((a, b) => (a * b + 1) % 1009);
        Assert.That(shuffled[0], Is.Not.EqualTo(inOrder), "the butterfly's tree, not the lanes in order");
    }

    /// <summary>The emulated tensor-core product, computed once per warp, gives each warp of each block its own tile's
    /// D + repeats·A·B, bit for bit, in bf16 and fp16 (small integers: every product and sum exact, so any order of the
    /// sums gives them, as a GPU's would); a lane or half of the fragment layout taken wrongly fails it, and so does one
    /// warp's product read by another.</summary>
    [Test]
    public void TheTensorCoreProductGivesEachWarpItsOwnTile([Values(Precision.BF16, Precision.FP16)] Precision precision, [Values] bool descending)
    {
        const int Warps = 4, Repeats = 3; // two blocks of two warps
        var a = new float[Warps * 256];
        var b = new float[Warps * 128];
        var d = new float[Warps * 128];
        for (int i = 0; i < a.Length; i++) a[i] = i * 7919 % 9 - 4;
        for (int i = 0; i < b.Length; i++) b[i] = i * 104729 % 7 - 3;
        for (int i = 0; i < d.Length; i++) d[i] = i * 31 % 200 - 100;
        ushort Bits(float x) => precision == Precision.BF16 ? (ushort)(BitConverter.SingleToUInt32Bits(x) >> 16) : BitConverter.HalfToUInt16Bits((Half)x);
        var aBits = a.Select(Bits).ToArray();
        var bBits = b.Select(Bits).ToArray();
        var output = new float[d.Length];
        fixed (float* po = output, pd = d)
        fixed (ushort* pa = aBits, pb = bBits)
        {
            var (code, error) = Launch("mma_tiles", (2, 1, 1), (64, 1, 1), descending, (ulong)po, (ulong)pa, (ulong)pb, (ulong)pd, (ulong)precision, Repeats);
            Assert.That(code, Is.Zero, error);
        }
        for (int w = 0; w < Warps; w++)
            for (int m = 0; m < 16; m++)
                for (int n = 0; n < 8; n++)
                {
                    double product = 0;
                    for (int k = 0; k < 16; k++) product += a[w * 256 + m * 16 + k] * b[w * 128 + k * 8 + n];
                    Assert.That(output[w * 128 + m * 8 + n], Is.EqualTo(d[w * 128 + m * 8 + n] + Repeats * product), $"warp {w}, D[{m}][{n}]");
                }
    }

    [Test]
    public void BarriersThatTheBlockNeverReachesFailTheLaunchAndTheNextLaunchStillRuns()
    {
        var reached = new int[64];
        fixed (int* p = reached)
        {
            var (code, error) = Launch("divergent_barriers", 1, 64, (ulong)p);
            Assert.That(code, Is.Not.Zero);
            Assert.That(error, Does.Contain("divergent_barriers deadlocked"));
        }
        Assert.That(reached.Take(32), Is.All.Zero, "warp 0 is stuck: half at __syncthreads, half at __syncwarp");

        var x = Enumerable.Range(0, 96).Select(i => (float)i).ToArray();
        var sums = new float[1];
        var ok = new int[96];
        fixed (float* px = x, ps = sums)
        fixed (int* pok = ok)
            Assert.That(Launch("slice_sums", 1, 100, (ulong)ps, (ulong)pok, (ulong)px).Code, Is.Zero);
        Assert.That(sums[0], Is.EqualTo(95 * 96 / 2));
    }

    /// <summary>A missing barrier shows in one order or the other: ascending, each thread runs to its end before its
    /// right neighbour writes (so it reads the stale -1 there) and after its left one did; descending, the reverse.
    /// Blocks run first to last, or last to first.</summary>
    [Test]
    public void EachOrderShowsTheRacesTheOtherHides([Values] bool descending)
    {
        const int Blocks = 3, Threads = 64, N = Blocks * Threads;
        _setWorkers(1); // one worker: the blocks' turns are the order they were handed out in
        var (right, left, turn) = (new int[N], new int[N], new int[Blocks]);
        var turns = new int[1];
        fixed (int* pr = right, pl = left, pt = turn, pn = turns)
        {
            var (code, error) = Launch("racy_neighbours", (Blocks, 1, 1), (Threads, 1, 1), descending, (ulong)pr, (ulong)pl, (ulong)pt, (ulong)pn);
            Assert.That(code, Is.Zero, error);
        }
        for (int i = 0; i < N; i++)
        {
            int t = i % Threads;
            bool last = t == Threads - 1, first = t == 0; // the wrapping reads go the other way
            bool rightWritten = descending ? !last : last, leftWritten = descending ? first : !first;
            Assert.That(right[i], Is.EqualTo(rightWritten ? (t + 1) % Threads : -1), $"thread {t}: its right neighbour's slot");
            Assert.That(left[i], Is.EqualTo(leftWritten ? (t + Threads - 1) % Threads : -1), $"thread {t}: its left neighbour's slot");
        }
        Assert.That(turn, Is.EqualTo(descending ? new[] { 2, 1, 0 } : new[] { 0, 1, 2 }), "the blocks' turns");
    }

    /// <summary>Every block finds its shared memory filled with NaN bytes, not what the block before it on the same
    /// worker left there (a GPU guarantees nothing, so a kernel that reads shared memory before writing it is wrong).</summary>
    [Test]
    public void EachBlockFindsItsSharedMemoryNaN([Values(1, 2)] int workers, [Values] bool descending)
    {
        const int Blocks = 9;
        _setWorkers(workers);
        var found = new float[Blocks];
        fixed (float* p = found)
        {
            var (code, error) = Launch("shared_at_start", (Blocks, 1, 1), (32, 1, 1), descending, (ulong)p);
            Assert.That(code, Is.Zero, error);
        }
        Assert.That(found, Is.All.NaN);
    }

    /// <summary>A value shuffled from a lane that did not take part is undefined on a GPU ("inactive" source lane): a
    /// lane that returned before the shuffle, or one a partial warp does not have. The emulated device gives all-ones
    /// bits (NaN), where it gave the lane's last value or the reader's own, so a sum built on one fails its checks;
    /// a shuffle the lane took part in before returning still reads its value.</summary>
    [Test]
    public void ShufflesFromLanesThatAreNotThereReadNaN([Values] bool descending)
    {
        var found = new float[48 * 5];
        Array.Fill(found, -7f);
        fixed (float* p = found)
        {
            var (code, error) = Launch("inactive_lanes", (1, 1, 1), (48, 1, 1), descending, (ulong)p);
            Assert.That(code, Is.Zero, error);
        }
        for (int t = 0; t < 48; t++)
        {
            var o = found.AsSpan(5 * t, 5).ToArray();
            if (t < 32)
            {
                Assert.That(o[0], Is.EqualTo((float)((t ^ 1) + 1)), $"lane {t}: the swap every lane took part in");
                if (t % 2 == 0) Assert.That(new[] { o[1], o[2] }, Is.All.NaN, $"lane {t}: after the odd lanes returned");
                else Assert.That(new[] { o[1], o[2] }, Is.All.EqualTo(-7f), $"lane {t} returned");
            }
            else
            {
                Assert.That(o[3], Is.NaN, $"lane {t % 32} of a 16-lane warp, from lane {t % 32 ^ 16}");
                Assert.That(o[4], Is.EqualTo((float)((t ^ 1) + 1)), $"lane {t % 32} of a 16-lane warp, from its neighbour");
            }
        }
    }

    /// <summary>A float4 load at an address 4 bytes past a 16-byte boundary fails the launch, as it faults on a GPU (x86
    /// would allow it), naming the kernel and the access; from the boundary itself it runs, and so does the next launch.</summary>
    [Test]
    public void AMisalignedWideAccessFailsTheLaunch()
    {
        float* x = (float*)NativeMemory.AlignedAlloc(33 * sizeof(float), 16);
        var sums = new float[8];
        try
        {
            for (int i = 0; i < 33; i++) x[i] = i;
            fixed (float* ps = sums)
            {
                var (code, error) = Launch("wide_loads", 1, 8, (ulong)ps, (ulong)x, 1UL);
                Assert.That(code, Is.Not.Zero);
                Assert.That(error, Does.Contain("kernel wide_loads made a 16-byte access at").And.Contain("not aligned to its size"));
                Assert.That(error, Does.Contain($"{(ulong)(x + 1):x}"), "the address");
                (code, error) = Launch("wide_loads", 1, 8, (ulong)ps, (ulong)x, 0UL);
                Assert.That(code, Is.Zero, error);
            }
            Assert.That(sums, Is.EqualTo(Enumerable.Range(0, 8).Select(t => (float)(16 * t + 6))));
        }
        finally
        {
            NativeMemory.AlignedFree(x);
        }
    }
}
