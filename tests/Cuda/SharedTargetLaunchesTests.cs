using Engine.Kernels;
using Engine.Kernels.Cuda;

namespace Engine.Tests;

/// <summary>How <see cref="CudaKernels.ScaleShiftManyBackward"/> places vectors into launches
/// (<see cref="CudaKernels.SharedTargetLaunches"/>): no two vectors of a launch write one gradient (they would race), a
/// gradient's additions run in the span's order, no launch takes more than its share, and SSF's folded vectors on
/// ViT-B/16 take a handful of launches, not one each.</summary>
public unsafe class SharedTargetLaunchesTests
{
    /// <summary>SSF's vectors on ViT-B/16 in the order its backward hands them over (the last site first): per site a
    /// Linear's shift (its own γ and β), or a norm's bias then weight (both scaled by the norm's γ).</summary>
    static ScaleShiftVectorGrad[] VitBaseSsfBackward()
    {
        var vectors = new List<ScaleShiftVectorGrad>();
        long next = 0x1000;
        float* Target() => (float*)(next += 0x1000);
        var sites = new List<bool> { false }; // patch_embed (a Linear), then per block norm1, qkv, proj, norm2, fc1, fc2; the final norm
        for (int b = 0; b < 12; b++) sites.AddRange([true, false, false, true, false, false]);
        sites.Add(true);
        var dy = Target();
        foreach (bool norm in Enumerable.Reverse(sites))
        {
            float* dScale = Target(), dShift = Target();
            vectors.Add(new ScaleShiftVectorGrad(null, false, dScale, dShift, dy, dy, dy, 768));
            if (norm) vectors.Add(new ScaleShiftVectorGrad(null, false, dScale, null, dy, dy, dy, 768));
        }
        return [.. vectors];
    }

    static void AssertValid(ScaleShiftVectorGrad[] vectors, int[] launchOf, int perLaunch)
    {
        Assert.That(launchOf, Has.Length.EqualTo(vectors.Length));
        Assert.That(launchOf.GroupBy(l => l).Max(g => g.Count()), Is.LessThanOrEqualTo(perLaunch), "vectors in one launch");
        var last = new Dictionary<nint, (int Launch, int Vector)>();
        for (int i = 0; i < vectors.Length; i++)
            foreach (var target in new[] { (nint)vectors[i].Dx, (nint)vectors[i].DScale, (nint)vectors[i].DShift }.Where(t => t != 0))
            {
                if (last.TryGetValue(target, out var before))
                    Assert.That(launchOf[i], Is.GreaterThan(before.Launch), $"vector {i} adds to a target of vector {before.Vector}, so it must run after it");
                last[target] = (launchOf[i], i);
            }
    }

    [Test]
    public void SsfOnVitBaseTakesFourLaunchesWithSharedScalesInOrder()
    {
        var vectors = VitBaseSsfBackward();
        Assert.That(vectors, Has.Length.EqualTo(99), "the patch embedding's shift, 8 vectors a block, the final norm's two");
        var launchOf = CudaKernels.SharedTargetLaunches(vectors, 32);
        AssertValid(vectors, launchOf, 32);
        Assert.That(launchOf.Max() + 1, Is.EqualTo(4), "launches for 99 vectors, 32 to a launch");
    }

    [Test]
    public void EveryTargetsAdditionsKeepTheirOrderWhateverTheSharing([Values(1, 3, 32)] int perLaunch)
    {
        var rng = new Random(11);
        var pool = Enumerable.Range(1, 9).Select(i => (nint)(i * 0x1000)).ToArray();
        ScaleShiftVectorGrad Draw()
        {
            // Three distinct targets of the nine (a vector's own gradients are different tensors), each present or not.
            var t = pool.OrderBy(_ => rng.Next()).Take(3).Select(p => rng.Next(3) == 0 ? 0 : p).ToArray();
            return new ScaleShiftVectorGrad((float*)t[0], false, (float*)t[1], (float*)t[2], null, null, null, 5);
        }
        var vectors = Enumerable.Range(0, 200).Select(_ => Draw()).ToArray();
        AssertValid(vectors, CudaKernels.SharedTargetLaunches(vectors, perLaunch), perLaunch);
    }

    [Test]
    public void VectorsWithNothingInCommonShareLaunchesUpToTheLimit()
    {
        var vectors = Enumerable.Range(1, 70).Select(i => new ScaleShiftVectorGrad(null, false, (float*)(i * 0x1000L), null, null, null, null, 5)).ToArray();
        Assert.That(CudaKernels.SharedTargetLaunches(vectors, 32), Is.EqualTo(Enumerable.Range(0, 70).Select(i => i / 32).ToArray()));
    }
}
