using Engine.Kernels.Cpu;

namespace Engine.Tests;

/// <summary>The CPU thread pool's hand-off: every task of every job runs exactly once, whether the workers are
/// spinning, blocked (after an idle gap longer than their spin), or still waking when the caller has taken every task
/// and returned; results never leak from one job into the next.</summary>
[TestFixture]
public unsafe class CpuParallelTests
{
    struct CountBody : IParallelBody
    {
        public int* Hits;
        public void Run(int index) => Interlocked.Increment(ref Hits[index]);
    }

    [Test]
    public void EveryTaskRunsOnceAcrossIdleGapsAndTinyJobs()
    {
        if (Environment.ProcessorCount < 2) Assert.Ignore("one processor: the pool runs every job inline");
        int saved = CpuParallel.Threads;
        CpuParallel.Threads = Environment.ProcessorCount;
        var hits = new int[64];
        try
        {
            fixed (int* h = hits)
                for (int job = 0; job < 3000; job++)
                {
                    int count = 1 + job % 64;
                    Array.Clear(hits);
                    var body = new CountBody { Hits = h };
                    CpuParallel.For(count, ref body);
                    for (int i = 0; i < hits.Length; i++)
                        Assert.That(hits[i], Is.EqualTo(i < count ? 1 : 0), $"job {job} ({count} tasks), task {i}");
                    // Now and then an idle gap longer than the workers' spin, so that the next job must wake them.
                    if (job % 500 == 499) Thread.Sleep(2 * CpuParallel.SpinMicroseconds / 1000 + 5);
                }
        }
        finally { CpuParallel.Threads = saved; }
    }
}
