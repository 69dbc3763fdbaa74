using Engine.Conformance;
using Engine.Kernels;
using Engine.Kernels.Cuda;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>
/// The CUDA kernels have no data races the emulated device can show, and run correctly in the grids an H200 gives
/// them: every op case passes with the launches' threads and blocks run in descending order
/// (<see cref="EmulatedThreadOrder"/>; the other tests run them ascending, and each order hides the races the other
/// shows) on an emulated device that sizes its grids for an H200's 132 multiprocessors (the other tests' one
/// multiprocessor never reaches the reductions' many partials and slices), and training steps give the same bits in
/// both orders, tensor-core attention included. A GPU interleaves its threads in ways neither order fixes, so a
/// kernel that passes here may still race there; one that fails here would race there.
/// </summary>
[TestFixture, NonParallelizable]
public class ThreadOrderTests
{
    static readonly Lazy<(CudaDevice? Device, string Reason)> Emulated = new(() =>
        CudaDevice.TryOpenEmulated(out var device, out var reason, multiprocessors: H200Multiprocessors) ? (device, "") : (null, reason));

    const int H200Multiprocessors = 132;

    static (CudaDevice Device, EmulatedRuntime Runtime) Device()
    {
        var (device, reason) = Emulated.Value;
        if (device == null) Assert.Ignore($"backend emulated-cuda unavailable: {reason}");
        return (device!, (EmulatedRuntime)device!.Runtime);
    }

    static T InOrder<T>(EmulatedThreadOrder order, Func<CudaDevice, T> run)
    {
        var (device, runtime) = Device();
        runtime.ThreadOrder = order;
        try
        {
            return run(device);
        }
        finally
        {
            runtime.ThreadOrder = EmulatedThreadOrder.Ascending;
        }
    }

    static IEnumerable<string> CaseNames => OpCases.All.Select(c => c.Name);

    [TestCaseSource(nameof(CaseNames))]
    public void OpCasePassesInDescendingOrder(string name) =>
        InOrder(EmulatedThreadOrder.Descending, device => { OpCases.All.Single(c => c.Name == name).Run(device); return 0; });

    /// <summary>Six AdamW steps of each tiny model, ascending then descending: the losses and every parameter bit for bit.
    /// vit64's heads of 64 values take the tensor-core attention in bf16.</summary>
    [Test]
    public void TrainingGivesTheSameBitsInBothOrders([Values("vit64", "swin", "convnext")] string family, [Values("full", "ssf", "gps")] string method)
    {
        GraphCheck.Result Train(EmulatedThreadOrder order) =>
            InOrder(order, device => GraphCheck.Train(TinyModels.Create(family, device), TinyModels.Classes, method, graph: false, precision: Precision.BF16));
        var ascending = Train(EmulatedThreadOrder.Ascending);
        var descending = Train(EmulatedThreadOrder.Descending);
        TrainingBits.AssertSame(descending, ascending, "descending against ascending");
    }

    static readonly Lazy<(CudaDevice? Device, string Reason)> OneMultiprocessor = new(() =>
        CudaDevice.TryOpenEmulated(out var device, out var reason, multiprocessors: 1) ? (device, "") : (null, reason));

    /// <summary>Grid-stride and row kernels sized to one block per multiprocessor (a GPU's grid for a kernel whose
    /// registers leave room for one, <see cref="CudaRuntime.GridStrideBlocks"/>) train to the same bits as at eight:
    /// six AdamW steps of each tiny model in bf16, on one multiprocessor, where one block's 256 threads stride over
    /// every tensor of more than 1,024 values eight times as often as eight blocks do.</summary>
    [Test]
    public void TrainingGivesTheSameBitsOnOneBlockPerMultiprocessor([Values("vit64", "swin", "convnext")] string family)
    {
        var (device, reason) = OneMultiprocessor.Value;
        if (device == null) Assert.Ignore($"backend emulated-cuda unavailable: {reason}");
        var runtime = (EmulatedRuntime)device!.Runtime;
        GraphCheck.Result Train() => GraphCheck.Train(TinyModels.Create(family, device), TinyModels.Classes, "full", graph: false, precision: Precision.BF16);
        var eight = Train();
        runtime.ResidentBlocksPerMultiprocessor = 1;
        try
        {
            TrainingBits.AssertSame(Train(), eight, "one block per multiprocessor against eight");
        }
        finally
        {
            runtime.ResidentBlocksPerMultiprocessor = CudaRuntime.DefaultResidentBlocks;
        }
    }
}
