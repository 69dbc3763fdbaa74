using Engine.Kernels.Cuda;
using Engine.Models.Training;
using Engine.Optim;

namespace Engine.Tests;

/// <summary>A kernel that faults on a GPU (an illegal or misaligned address) loses the CUDA context: the call after it
/// and every call from then on fail with the same error, and only a new process can use the GPU. Rehearsed on the
/// emulated device (<see cref="EmulatedRuntime.FaultingKernel"/>): the error says the context is lost, the disposals
/// after it never hide it, and a kernel that merely computes nothing (<see cref="EmulatedRuntime.FaultingKernelSkips"/>)
/// leaves the context usable.</summary>
[TestFixture, NonParallelizable]
public class KernelFaultTests
{
    static CudaDevice OpenFresh()
    {
        if (!CudaDevice.TryOpenEmulated(out var device, out var reason)) Assert.Ignore($"emulated CUDA device unavailable: {reason}");
        return device!;
    }

    static EmulatedRuntime Emulator(CudaDevice device) => (EmulatedRuntime)device.Runtime;

    [Test]
    public void TheDriversStickyErrorsSayTheContextIsLost()
    {
        foreach (int code in new[] { 214, 700, 702, 714, 715, 716, 717, 718, 719 })
        {
            var e = new CudaException("cuStreamSynchronize", code, "CUDA_ERROR_X: x");
            Assert.That(e.LosesContext, Is.True, $"{code}");
            Assert.That(e.Message, Does.StartWith($"cuStreamSynchronize failed with {code} (CUDA_ERROR_X: x); the GPU context is lost"));
        }
        // Out of memory, an invalid value, cuBLAS's execution failure, an unknown error: the context may still be usable.
        foreach (int code in new[] { 1, 2, 13, 701, 720, 999 })
        {
            var e = new CudaException("cuLaunchKernel", code, "x");
            Assert.That(e.LosesContext, Is.False, $"{code}");
            Assert.That(e.Message, Is.EqualTo($"cuLaunchKernel failed with {code} (x)"));
        }
    }

    /// <summary>The faulting launch returns, as an asynchronous fault lets it on a GPU; the copy after it reports the
    /// fault, and so does every later call of any kind. Freeing memory then does nothing (the context took it), so a
    /// parameter's, the pool's and the device's disposals throw nothing that would hide the fault.</summary>
    [Test]
    public void AFaultedKernelFailsEveryLaterCallAndItsMemoryNeedsNoFreeing()
    {
        var device = OpenFresh();
        var emulator = Emulator(device);
        var x = Tensor.FromArray(device, [1f, -2f, 3f], 3);
        var weight = Tensor.Parameter(device, "weight", 4);
        var wide = Tensor.Zeros(device, 1000);
        Tensor.Zeros(device, 1000).Dispose(); // cached by the pool: GELU of wide rents it, so its launch is the next call
        Assert.That(emulator.ContextLost(out var none), Is.False);
        Assert.That(none, Is.Null);

        emulator.FaultingKernel = "gelu_forward";
        var y = Ops.Gelu(x);
        var fault = Assert.Throws<CudaException>(() => y.ToArray())!;
        Assert.That(fault.Code, Is.EqualTo(CudaDriver.IllegalAddress));
        Assert.That(fault.LosesContext, Is.True);
        Assert.That(fault.Message, Does.StartWith("cuMemcpyDtoHAsync_v2 failed with 700 (CUDA_ERROR_ILLEGAL_ADDRESS")
            .And.Contain("PEFT_EMULATED_CUDA_FAULT=gelu_forward").And.Contain("the GPU context is lost"));

        // Every later call fails too, with the same error: a copy back, a launch, a GEMM, an allocation, a wait.
        var later = new (string Call, Action Run)[]
        {
            ("cuMemcpyDtoHAsync_v2", () => x.ToArray()),
            ("cuLaunchKernel (gelu_forward)", () => Ops.Gelu(wide).Dispose()),
            ("cuMemcpyHtoDAsync_v2", () => weight.CopyFrom([1f, 2f, 3f, 4f])),
            ("cuMemAlloc_v2", () => Tensor.Parameter(device, "big", 1 << 20).Dispose()),
            ("cuStreamSynchronize", device.Synchronize),
        };
        foreach (var (call, run) in later)
        {
            var e = Assert.Throws<CudaException>(() => run(), call)!;
            Assert.That(e.Message, Does.StartWith($"{call} failed with 700"), call);
        }
        Assert.That(emulator.ContextLost(out var found), Is.True);
        Assert.That(found!.Code, Is.EqualTo(CudaDriver.IllegalAddress));

        Assert.DoesNotThrow(() =>
        {
            y.Dispose();
            x.Dispose();
            wide.Dispose();
            weight.Dispose();
            device.Dispose();
        });
    }

    /// <summary>A kernel that never runs (<c>KERNEL:skip</c>) leaves its output as the device handed it out (NaN here),
    /// so the op's values are wrong, and the context stays usable.</summary>
    [Test]
    public void AKernelThatNeverRunsLeavesItsOutputAndTheContextUsable()
    {
        using var device = OpenFresh();
        var emulator = Emulator(device);
        using var x = Tensor.FromArray(device, [1f, -2f, 3f], 3);
        (emulator.FaultingKernel, emulator.FaultingKernelSkips) = ("gelu_forward", true);
        using (var y = Ops.Gelu(x))
            Assert.That(y.ToArray(), Has.All.NaN);
        using (var y = Ops.Gelu(x))
            Assert.That(y.ToArray(), Has.All.NaN, "on every launch");
        Assert.That(emulator.ContextLost(out _), Is.False);
        using var z = Ops.Relu(x);
        Assert.That(z.ToArray(), Is.EqualTo(new[] { 1f, 0f, 3f }));
    }

    /// <summary>A training step whose backward meets a faulting kernel throws the fault itself, not an error of the
    /// cleanup after it, and the model, the optimizer and the device can still be disposed.</summary>
    [Test]
    public void AStepThatMeetsAFaultReportsTheFault()
    {
        var device = OpenFresh();
        var model = TinyModels.Create("vit", device);
        var adam = new Adam(model.Parameters, new AdamOptions { LearningRate = 1e-2f });
        var step = new TrainStep(adam) { Context = "fault" };
        int batch = 2, size = TinyModels.Size;
        using var images = Tensor.FromArray(device, Enumerable.Range(0, batch * 3 * size * size).Select(j => (j % 7) / 7f).ToArray(), batch, 3, size, size);
        using var targets = Tensor.FromArray(device, [0, 1], batch);
        float Run() => step.Run(images, targets, t => model.Forward(t), (logits, t) => Ops.CrossEntropy(logits, t));
        Assert.That(float.IsFinite(Run()));
        Emulator(device).FaultingKernel = "cross_entropy_backward";
        var e = Assert.Throws<CudaException>(() => Run())!;
        Assert.That(e.LosesContext, Is.True, e.Message);
        Assert.That(e.Message, Does.Contain("cross_entropy_backward"));
        Assert.DoesNotThrow(() =>
        {
            step.Dispose();
            adam.Dispose();
            model.Dispose();
            device.Dispose();
        });
    }

    /// <summary>The environment variable names the kernel for every emulated device a process opens; a name the device
    /// does not have is refused, naming the variable.</summary>
    [Test]
    public void TheEnvironmentNamesTheFaultingKernel()
    {
        string? before = Environment.GetEnvironmentVariable(EmulatedRuntime.FaultVariable);
        try
        {
            Environment.SetEnvironmentVariable(EmulatedRuntime.FaultVariable, "sparse_weight_grad:skip");
            using (var device = OpenFresh())
            {
                Assert.That((Emulator(device).FaultingKernel, Emulator(device).FaultingKernelSkips), Is.EqualTo(("sparse_weight_grad", true)));
                Assert.That(device.Runtime.Description, Does.Contain("sparse_weight_grad never runs (PEFT_EMULATED_CUDA_FAULT)"));
            }
            Environment.SetEnvironmentVariable(EmulatedRuntime.FaultVariable, "gelu_forwards");
            Assert.That(CudaDevice.TryOpenEmulated(out _, out var reason), Is.False);
            Assert.That(reason, Does.StartWith("PEFT_EMULATED_CUDA_FAULT='gelu_forwards' names no kernel of this device"));
        }
        finally
        {
            Environment.SetEnvironmentVariable(EmulatedRuntime.FaultVariable, before);
        }
    }
}
