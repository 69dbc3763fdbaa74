using Engine.Checkpoints;
using Engine.IO;

namespace Engine.Models.Peft;

/// <summary>
/// A parameter-efficient fine-tuning method: a transformation of a model that decides what trains (whole tensors,
/// inserted modules, or single elements) and can save just that part and apply it back onto the base weights.
/// Works on any <see cref="IPeftModel"/>; the rules are written in terms of parameter names and feature sites.
/// </summary>
public abstract class PeftMethod : IDisposable
{
    /// <summary>The method's name on the command line (<c>full</c>, <c>linear</c>, <c>bias</c>, <c>ssf</c>, ...).</summary>
    public abstract string Name { get; }

    /// <summary>Parameters the method adds to the model (SSF's scales and shifts), named.</summary>
    public virtual IReadOnlyList<Tensor> AddedParameters => [];

    /// <summary>Marks what trains (<see cref="Tensor.RequiresGrad"/>) on <paramref name="model"/> and installs any
    /// feature-site hooks. Call once, before training.</summary>
    public abstract void Apply(IPeftModel model);

    /// <summary>Everything that trains after <see cref="Apply"/>: the model's trainable parameters, then the added ones.</summary>
    public IReadOnlyList<Tensor> Trainable(IPeftModel model) =>
        [.. model.Parameters.Where(p => p.RequiresGrad), .. AddedParameters.Where(p => p.RequiresGrad)];

    /// <summary>Number of trainable elements: the selected entries or the masked elements of a parameter with such a
    /// <see cref="Tensor.Trainability"/>, every element of the others.</summary>
    public long TrainableCount(IPeftModel model) => Trainable(model).Sum(p => p.Trainability.TrainableCount(p));

    /// <summary>Writes only the trained part, and what the method needs to re-apply it (a selection), as safetensors,
    /// atomically.</summary>
    public void SaveTrained(IPeftModel model, string path)
    {
        var tensors = TrainedState(model);
        try
        {
            SafeTensors.Write(path, tensors.Select(t => t.Tensor), new Dictionary<string, string>(TrainedMetadata) { ["peft_method"] = Name });
        }
        finally
        {
            foreach (var t in tensors.Where(t => t.Owned)) t.Tensor.Dispose();
        }
    }

    /// <summary>Settings <see cref="SaveTrained"/> writes into the file's metadata beside <c>peft_method</c>, for
    /// <see cref="ForTrainedFile"/> to rebuild the method (LoRA's rank, alpha and targets).</summary>
    protected virtual IReadOnlyDictionary<string, string> TrainedMetadata => new Dictionary<string, string>();

    /// <summary>The tensors <see cref="SaveTrained"/> writes; Owned ones are temporary copies it disposes.</summary>
    protected virtual List<(Tensor Tensor, bool Owned)> TrainedState(IPeftModel model) => [.. Trainable(model).Select(p => (p, false))];

    /// <summary>Loads a file from <see cref="SaveTrained"/> onto a model that already holds the base weights and has had
    /// <see cref="Apply"/>: every trained tensor must be present with its shape.</summary>
    /// <exception cref="InvalidInputException">The file is for another method or does not fit; the message says what.</exception>
    public void LoadTrained(IPeftModel model, string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        if (checkpoint.Metadata.TryGetValue("peft_method", out var method) && method != Name)
            throw new InvalidInputException(path, $"trained with method '{method}', not '{Name}'");
        LoadTrained(model, checkpoint.Entries, path);
    }

    /// <summary>Copies the trained tensors from a file's <paramref name="entries"/> (strict: all present, nothing extra).</summary>
    protected virtual void LoadTrained(IPeftModel model, IReadOnlyList<CheckpointEntry> entries, string path) =>
        StateDict.Load(Trainable(model), entries, path, strict: true);

    /// <summary>
    /// The method that wrote <paramref name="path"/> with <see cref="SaveTrained"/>, built to load it: SCT and GPS with
    /// the selection stored in the file, LoRA with the settings in its metadata. Apply it to a model holding the base weights, then call
    /// <see cref="LoadTrained(IPeftModel, string)"/>.
    /// </summary>
    /// <exception cref="InvalidInputException">The file does not say which method wrote it, or names an unknown one.</exception>
    public static PeftMethod ForTrainedFile(string path)
    {
        string method;
        using (var checkpoint = Checkpoint.Open(path))
            if (!checkpoint.Metadata.TryGetValue("peft_method", out method!))
                throw new InvalidInputException(path, $"no 'peft_method' in its metadata (not a file written by SaveTrained)");
        var info = PeftMethods.Find(method) ?? throw new InvalidInputException(path, $"written by unknown method '{method}' (known: {string.Join(", ", PeftMethods.Names)})");
        return info.Create(new MethodSetup(SelectionFile: path));
    }

    /// <summary>
    /// Folds what trained into the model's own parameters, so that the plain model computes what it computed with the
    /// method. The default has nothing to fold: the method trained the model's own parameters (full, linear, bias, GPS).
    /// </summary>
    /// <returns>The sites that could not fold and stay per-channel affines applied by the model (empty: the model is plain).</returns>
    /// <exception cref="NotSupportedException">The method cannot fold at all; the message says why.</exception>
    public virtual IReadOnlyList<string> Merge() => [];

    /// <summary>Frees the added parameters.</summary>
    public virtual void Dispose()
    {
        foreach (var p in AddedParameters) p.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>True for the classifier's parameters (timm: <c>head.weight</c>, <c>head.bias</c>, <c>head.fc.*</c>). timm files
    /// ConvNeXt's final LayerNorm under <c>head.norm.*</c>, but the reference code (original key <c>norm.*</c>) treats it as
    /// backbone, so it is not the head here: linear probing, SSF and SCT leave it frozen.</summary>
    public static bool IsHead(Tensor p) =>
        p.Name is { } name && name.StartsWith("head.", StringComparison.Ordinal) && !name.StartsWith("head.norm.", StringComparison.Ordinal);
}

/// <summary>The baselines, each a subset of the model's own parameters: <c>full</c> (everything), <c>linear</c>
/// (the head only: linear probing) and <c>bias</c> (BitFit: every bias plus the head).</summary>
public sealed class SubsetMethod : PeftMethod
{
    readonly Func<Tensor, bool> _trains;

    SubsetMethod(string name, Func<Tensor, bool> trains)
    {
        Name = name;
        _trains = trains;
    }

    /// <summary>Full fine-tuning.</summary>
    public static SubsetMethod Full() => new(PeftMethods.Full.Name, _ => true);

    /// <summary>Linear probing: the head only.</summary>
    public static SubsetMethod Linear() => new(PeftMethods.Linear.Name, IsHead);

    /// <summary>BitFit: every bias and the head.</summary>
    public static SubsetMethod Bias() => new(PeftMethods.Bias.Name, p => IsHead(p) || p.Name?.EndsWith(".bias", StringComparison.Ordinal) == true);

    /// <inheritdoc/>
    public override string Name { get; }

    /// <inheritdoc/>
    public override void Apply(IPeftModel model)
    {
        foreach (var p in model.Parameters) p.RequiresGrad = _trains(p);
    }
}

/// <summary>Selections on disk: int32 tensors in a safetensors file whose metadata says which method selected them.</summary>
public static class SelectionFile
{
    /// <summary>Writes the named int32 tensors atomically, with <c>peft_selection</c> = <paramref name="method"/> added
    /// to the metadata.</summary>
    public static void Write(string path, string method, IEnumerable<(string Name, int[] Values, int[] Shape)> entries,
        IReadOnlyDictionary<string, string>? metadata)
    {
        var tensors = entries.Select(e =>
        {
            var t = Tensor.FromArray(Device.Cpu, e.Values, e.Shape);
            t.Name = e.Name;
            return t;
        }).ToList();
        try
        {
            var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>()) { ["peft_selection"] = method };
            SafeTensors.Write(path, tensors, meta);
        }
        finally
        {
            foreach (var t in tensors) t.Dispose();
        }
    }

    /// <summary>The elements of an index tensor read from <paramref name="path"/>, each checked to be a whole number in
    /// [0, 2²⁴) (exact in float32, and above any column count a model here has); the ranges that depend on the model
    /// are checked when the selection is applied.</summary>
    /// <exception cref="InvalidInputException">An element is negative, fractional, not finite or too large.</exception>
    public static int[] ReadIndices(CheckpointEntry entry, string path)
    {
        var values = entry.Read();
        var indices = new int[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            float v = values[i];
            if (!(v >= 0 && v < 1 << 24) || v != MathF.Floor(v))
                throw new InvalidInputException(path, $"'{entry.Name}' element {i} is {v}, not an index (a whole number in [0, 16777216))");
            indices[i] = (int)v;
        }
        return indices;
    }
}
