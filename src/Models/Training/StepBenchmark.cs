using System.Diagnostics;
using Engine.Models.Peft;
using Engine.Optim;

namespace Engine.Models.Training;

/// <summary>
/// One method's training step on fixed random images (train-mode forward, cross-entropy over 100 classes, backward,
/// Adam), for timing: the same step for every method, device and precision (<c>bench/run.sh peft</c>,
/// <c>peft bench --train-step</c>, the GPU kit). A method with a selection pass (SCT, GPS) uses a fixed, evenly
/// spread selection of its recipe's K entries (<see cref="SelectionPassInfo.SaveUniform"/>): the step's cost does not
/// depend on which entries are selected.
/// </summary>
public sealed class StepBenchmark : IDisposable
{
    readonly Device _device;
    readonly IImageClassifier _model;
    readonly PeftMethod _method;
    readonly Tensor _images, _targets;
    readonly TrainStep _trainStep;
    ulong _step;

    /// <summary>Builds <paramref name="model"/> (a preset or config) with <paramref name="method"/> applied, at
    /// <paramref name="batch"/> images per step; with <paramref name="cudaGraph"/>, steps after the second replay a
    /// captured graph on a CUDA device (<see cref="TrainStep.CudaGraph"/>).</summary>
    public StepBenchmark(Device device, PeftMethodInfo method, string model, int batch, bool cudaGraph = false)
    {
        _device = device;
        Name = method.Name;
        _model = ImageModels.Create(device, model, numClasses: 100, seed: 1);
        string? selection = null;
        if (method.Selection != null)
        {
            selection = Path.Combine(Path.GetTempPath(), $"peft-step-{Environment.ProcessId}-{Guid.NewGuid():N}-{method.Name}.safetensors");
            // The recipe's K, at most an eighth of the narrowest site (SCT's 96 of ViT-B's 768; 8 of a width-64 model).
            int k = PeftRecipe.For(method.Name, null, _model.Family).K;
            if (method == PeftMethods.Sct && _model is IPeftModel peft) k = Math.Max(1, Math.Min(k, SctSelection.Sites(peft).Min(s => s.Channels) / 8));
            method.Selection.SaveUniform(_model, k, selection);
        }
        try
        {
            var recipe = PeftRecipe.For(method.Name, null, _model.Family);
            _method = method.Create(new MethodSetup(SelectionFile: selection, Lora: recipe.Lora, Adapter: recipe.Adapter, Vpt: recipe.Vpt));
        }
        finally
        {
            if (selection != null) File.Delete(selection);
        }
        _method.Apply(_model);
        Trainable = _method.TrainableCount(_model);
        Optimizer = new Adam(_method.Trainable(_model), new AdamOptions { LearningRate = 1e-4f });
        _trainStep = new TrainStep(Optimizer) { Context = $"{model}/{method.Name}", CudaGraph = cudaGraph, Weights = _model.Parameters };
        int size = _model.ImageSize;
        _images = Tensor.FromArray(device, Init.NormalValues(batch * 3 * size * size, 0f, 1f, 2), batch, 3, size, size);
        _targets = Tensor.FromArray(device, Enumerable.Range(0, batch).Select(i => i % 100).ToArray(), batch);
    }

    /// <summary>The method's name.</summary>
    public string Name { get; }

    /// <summary>Parameters the method trains.</summary>
    public long Trainable { get; }

    /// <summary>The optimizer (its state bytes are the method's optimizer memory).</summary>
    public Adam Optimizer { get; }

    /// <summary>Wall times of the steps timed so far, in seconds.</summary>
    public List<double> Times { get; } = new();

    /// <summary>Bytes of activations the last step kept for its backward.</summary>
    public long SavedBytes => _trainStep.SavedBytes;

    /// <summary>The median of <see cref="Times"/>.</summary>
    public double Median => Times.Order().ElementAt(Times.Count / 2);

    /// <summary>One training step, finished on the device; returns its wall time in seconds.</summary>
    public double Step()
    {
        var clock = Stopwatch.StartNew();
        _trainStep.Run(_images, _targets, x => _model.Forward(x, trainSeed: ++_step), (logits, t) => Ops.CrossEntropy(logits, t));
        _device.Synchronize();
        return clock.Elapsed.TotalSeconds;
    }

    /// <summary>Bytes the captured graph keeps for its replays (0 without one).</summary>
    public long GraphBytes => _trainStep.GraphBytes;

    /// <summary>Bytes of the weights' 16-bit copies the steps read (<see cref="TrainStep.Weights"/>; 0 without them).</summary>
    public long WeightCopyBytes => _trainStep.WeightCopyBytes;

    /// <summary>Why the steps gave up the weights' copies (<see cref="TrainStep.WeightCopiesDropped"/>), or null.</summary>
    public string? WeightCopiesDropped => _trainStep.WeightCopiesDropped;

    /// <inheritdoc/>
    public void Dispose()
    {
        _trainStep.Dispose();
        Optimizer.Dispose();
        _method.Dispose();
        _model.Dispose();
        _images.Dispose();
        _targets.Dispose();
    }
}
