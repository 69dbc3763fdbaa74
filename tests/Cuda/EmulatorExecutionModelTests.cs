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
        extern "C" __global__ void block_sum(float* sums, int* neighbour_ok, const float* x)
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
        #define CUEMU_KERNEL_LIST(X) X(block_sum) X(divergent_barriers)
        #include "emu/launcher.h"
        """;

    static IntPtr _library;
    static delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, uint, void**, long*, int, byte*, int, int> _launch;

    static string? _dir;

    [OneTimeSetUp]
    public void Build()
    {
        string dir = _dir = Files.TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "emu"));
        foreach (var name in new[] { "emu/cuemu.h", "emu/launcher.h" }) File.WriteAllText(Path.Combine(dir, name), KernelSources.Files[name]);
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
        _launch = (delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, uint, void**, long*, int, byte*, int, int>)
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

    static (int Code, string Error) Launch(string kernel, uint grid, uint block, params ulong[] pointers)
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
        fixed (byte* n = name) code = _launch(n, grid, 1, 1, block, 1, 1, 0, args, sizes, pointers.Length, error, 512);
        return (code, code == 0 ? "" : Marshal.PtrToStringUTF8((IntPtr)error)!);
    }

    [Test]
    public void BlocksOnSeveralWorkersKeepTheirOwnSharedMemoryAndReduceExactly()
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
                var (code, error) = Launch("block_sum", Blocks, 100, (ulong)ps, (ulong)pok, (ulong)px);
                Assert.That(code, Is.Zero, error);
            }
            for (int b = 0; b < Blocks; b++)
                Assert.That(sums[b], Is.EqualTo(x.Skip(b * 96).Take(96).Sum()), $"block {b}, launch {repeat}");
            Assert.That(ok, Is.All.EqualTo(1), "every thread saw its neighbour's shared slot after __syncthreads");
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
            Assert.That(Launch("block_sum", 1, 100, (ulong)ps, (ulong)pok, (ulong)px).Code, Is.Zero);
        Assert.That(sums[0], Is.EqualTo(95 * 96 / 2));
    }
}
