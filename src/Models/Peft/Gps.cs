using Engine.Checkpoints;
using Engine.IO;
using Engine.Models.Training;

namespace Engine.Models.Peft;

/// <summary>The selected input columns of every output row of one weight viewed as [Rows, in]: Columns is [Rows, K],
/// row-major, ascending within a row.</summary>
public sealed record GpsRows(int Rows, int K, int[] Columns)
{
    /// <summary>Where selected entry <paramref name="e"/> (row e / K) lies in the weight flattened to [Rows, inputs].</summary>
    public int FlatIndex(int e, int inputs) => e / K * inputs + Columns[e];
}

/// <summary>
/// GPS (Gradient-based Parameter Selection): every weight matrix trains only the K inputs per output row
/// (neuron) that the selection pass ranked highest (<see cref="GpsSelection.Compute"/>); non-norm biases and the head
/// train fully; norms, the position embedding and the class token are frozen. Sparse (the default): a weight that
/// feeds a Linear layer trains <see cref="Trainability.Selected"/> entries, so only their gradients are computed and
/// Adam keeps moments for them only. Dense (<c>sparse: false</c>): a 0/1 <see cref="Trainability.Masked"/> mask over the full
/// gradient, the reference implementation's behaviour.
/// </summary>
public sealed class Gps : PeftMethod
{
    const string IndexSuffix = ".gps_index", ValuesSuffix = ".gps_values";
    readonly IReadOnlyDictionary<string, GpsRows> _selection;
    readonly List<(Tensor Parameter, Tensor Selection)> _selected = new();
    bool _applied;

    /// <summary>GPS with the per-weight selection <paramref name="selection"/> (parameter name → rows), sparse or as a
    /// dense masked gradient.</summary>
    public Gps(IReadOnlyDictionary<string, GpsRows> selection, bool sparse = true)
    {
        _selection = selection;
        Sparse = sparse;
    }

    /// <inheritdoc/>
    public override string Name => PeftMethods.Gps.Name;

    /// <summary>True: selected entries only; false: the dense masked gradient.</summary>
    public bool Sparse { get; }

    /// <inheritdoc/>
    public override void Apply(IPeftModel model)
    {
        if (_applied) throw new InvalidOperationException("GPS is already applied to a model");
        var sparseCapable = model.SparseGradientWeights.ToHashSet();
        var missing = GpsSelection.SelectedWeights(model).Where(p => !_selection.ContainsKey(p.Name!)).Select(p => p.Name).ToList();
        if (missing.Count > 0) throw new ArgumentException($"GPS selection has no entry for {missing.Count} weight(s): {string.Join(", ", missing.Take(5))}");
        foreach (var p in GpsSelection.SelectedWeights(model)) // every index checked before anything changes or any kernel sees one
        {
            var rows = _selection[p.Name!];
            int inputs = (int)(p.Count / p.Shape[0]);
            if (rows.Rows != p.Shape[0] || rows.K < 1 || rows.K > inputs || rows.Columns.Length != (long)rows.Rows * rows.K)
                throw new ArgumentException($"GPS selection for {p.Describe()} is [{rows.Rows}, {rows.K}], which does not fit [{p.Shape[0]}, ≤ {inputs}]");
            Trainability.CheckColumns(rows.Columns, rows.K, inputs, p);
        }
        _applied = true;
        foreach (var p in model.Parameters)
        {
            var role = GpsSelection.RoleOf(model, p);
            p.RequiresGrad = role != GpsRole.Frozen;
            if (role != GpsRole.TopK) continue;
            var rows = _selection[p.Name!];
            if (Sparse && sparseCapable.Contains(p))
            {
                var index = Tensor.FromArray(p.Device, rows.Columns, rows.Rows, rows.K);
                p.Trainability = Trainability.Selected(index);
                _selected.Add((p, index));
            }
            else
            {
                var mask = new float[p.Count];
                for (int e = 0; e < rows.Columns.Length; e++) mask[rows.FlatIndex(e, (int)(p.Count / rows.Rows))] = 1f;
                var maskTensor = Tensor.FromArray(p.Device, mask, p.Shape);
                p.Trainability = Trainability.Masked(maskTensor);
                _selected.Add((p, maskTensor));
            }
        }
    }

    /// <summary>Saves the fully trained tensors, and for each selected weight its <c>.gps_index</c> [Rows, K] and the
    /// trained values there, <c>.gps_values</c> [Rows, K]: the file grows with what trained, not with the model.</summary>
    protected override List<(Tensor Tensor, bool Owned)> TrainedState(IPeftModel model)
    {
        var state = Dense(model).Select(p => (p, false)).ToList();
        foreach (var (p, _) in _selected)
        {
            var rows = _selection[p.Name!];
            var w = p.ToArray();
            var values = rows.Columns.Select((_, e) => w[rows.FlatIndex(e, w.Length / rows.Rows)]).ToArray();
            var index = Tensor.FromArray(Device.Cpu, rows.Columns, rows.Rows, rows.K);
            index.Name = p.Name + IndexSuffix;
            var v = Tensor.FromArray(Device.Cpu, values, rows.Rows, rows.K);
            v.Name = p.Name + ValuesSuffix;
            state.Add((index, true));
            state.Add((v, true));
        }
        return state;
    }

    /// <inheritdoc/>
    protected override void LoadTrained(IPeftModel model, IReadOnlyList<CheckpointEntry> entries, string path)
    {
        var byName = entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
        var saved = GpsSelection.FromEntries(entries, path);
        foreach (var (p, _) in _selected)
        {
            var rows = _selection[p.Name!];
            if (!saved.TryGetValue(p.Name!, out var other) || other.K != rows.K || !other.Columns.SequenceEqual(rows.Columns))
                throw new InvalidInputException(path, $"was trained with another GPS selection for '{p.Name}' (build GPS from GpsSelection.Read of this file)");
            if (!byName.TryGetValue(p.Name + ValuesSuffix, out var valuesEntry) || !valuesEntry.Shape.SequenceEqual([rows.Rows, rows.K]))
                throw new InvalidInputException(path, $"'{p.Name}{ValuesSuffix}' is missing or not [{rows.Rows}, {rows.K}]");
        }
        StateDict.Load(Dense(model), [.. entries.Where(e => !e.Name.EndsWith(IndexSuffix, StringComparison.Ordinal) && !e.Name.EndsWith(ValuesSuffix, StringComparison.Ordinal))],
            path, strict: true);
        foreach (var (p, _) in _selected)
        {
            var rows = _selection[p.Name!];
            var values = byName[p.Name + ValuesSuffix].Read();
            var w = p.ToArray();
            for (int e = 0; e < values.Length; e++) w[rows.FlatIndex(e, w.Length / rows.Rows)] = values[e];
            p.CopyFrom(w);
        }
    }

    /// <summary>The tensors that train fully (biases, head).</summary>
    IReadOnlyList<Tensor> Dense(IPeftModel model) =>
        [.. Trainable(model).Where(p => !_selected.Any(s => ReferenceEquals(s.Parameter, p)))];

    /// <summary>Frees the selection tensors and detaches them from the model's weights.</summary>
    public override void Dispose()
    {
        foreach (var (p, selection) in _selected)
        {
            if (ReferenceEquals(p.Trainability.Tensor, selection)) p.Trainability = Trainability.Dense;
            selection.Dispose();
        }
        _selected.Clear();
        base.Dispose();
    }
}

/// <summary>How GPS treats a parameter.</summary>
public enum GpsRole
{
    /// <summary>Never trains: norms, position embedding, class token.</summary>
    Frozen,
    /// <summary>Trains fully: the head, non-norm biases, layer-scale gammas (and any other vector).</summary>
    Full,
    /// <summary>A weight matrix or conv kernel (flattened per output channel): the top K inputs per output row train.</summary>
    TopK,
}

/// <summary>
/// GPS's selection pass: one epoch of the supervised contrastive loss (temperature 0.07) on the L2-normalised pooled
/// features after the final norm, the model in train mode, gradients summed over every batch (no optimizer step, the
/// head untouched); then, for each weight, every output row keeps the K inputs with the largest |accumulated gradient|
/// (ties to the lower column), in ascending order. Saved as <c>{parameter}.gps_index</c> int32 [rows, K].
/// </summary>
public static class GpsSelection
{
    /// <summary>The paper's K for VTAB-1k (Patch Camelyon uses 2).</summary>
    public const int DefaultK = 1;

    /// <summary>The loss's temperature (and base temperature) in the reference code.</summary>
    public const float Temperature = 0.07f;

    const string IndexSuffix = ".gps_index";

    /// <summary>The reference code's rule: LayerNorms (names containing <c>norm</c>, and the model's LayerNorm sites, such
    /// as ConvNeXt's <c>stem.1</c> and <c>stages.N.downsample.0</c> whose timm names lack the word), <c>pos_embed</c> and
    /// <c>cls_token</c> are frozen; the head, anything whose name contains <c>bias</c> (so Swin's
    /// <c>relative_position_bias_table</c> too, as <c>utils/pruning.py</c> tests the name) and <c>gamma</c> train fully;
    /// other tensors of rank ≥ 2 are selected per row; any other vector trains fully.</summary>
    public static GpsRole RoleOf(IPeftModel model, Tensor p)
    {
        string name = p.Name ?? throw new ArgumentException($"GPS needs named parameters, got {p.Describe()}");
        if (name.Contains("norm", StringComparison.Ordinal) || name.Contains("pos_embed", StringComparison.Ordinal) ||
            name.Contains("cls_token", StringComparison.Ordinal) ||
            model.Sites.Any(s => s.Producer == SiteProducer.LayerNorm && (s.Weight == p || s.Bias == p))) return GpsRole.Frozen;
        if (PeftMethod.IsHead(p) || name.Contains("bias", StringComparison.Ordinal) || name.Contains("gamma", StringComparison.Ordinal)) return GpsRole.Full;
        return p.Rank >= 2 ? GpsRole.TopK : GpsRole.Full;
    }

    /// <summary>The weights GPS selects entries of, row by row (<see cref="GpsRole.TopK"/>), in the model's order.</summary>
    public static IEnumerable<Tensor> SelectedWeights(IPeftModel model) => model.Parameters.Where(p => RoleOf(model, p) == GpsRole.TopK);

    /// <summary>
    /// Runs the selection pass over <paramref name="batches"/>: each holds images [N, C, H, W] where the rows are the
    /// views (for GPS, the first view of B images then their second view, N = 2B) and a label per row (so the two
    /// views of an image are positives of each other). Batch i runs in train mode with dropout and drop-path masks
    /// from (<paramref name="seed"/>, i). Any site hook or affine installed on the model is bypassed for the pass and restored after.
    /// Each row of a selected weight keeps its <paramref name="k"/> entries of largest |accumulated gradient|, or all of
    /// them when it has fewer.
    /// </summary>
    public static Dictionary<string, GpsRows> Compute(IPeftModel model, IEnumerable<(Tensor Images, int[] Labels)> batches, int k = DefaultK, ulong seed = 42)
    {
        var targets = SelectedWeights(model).ToList();
        if (targets.Count == 0) throw new ArgumentException("the model has no weight GPS can select from");
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), k, "K must be at least 1");
        var requires = model.Parameters.ToDictionary(p => p, p => p.RequiresGrad);
        foreach (var p in model.Parameters)
        {
            p.RequiresGrad = targets.Contains(p);
            if (p.RequiresGrad && p.Grad != null) throw new InvalidOperationException($"GPS selection: {p.Describe()} already holds a gradient; zero and drop it first");
        }
        var bypass = model.Bypass();
        try
        {
            using var step = new TrainStep { Context = "GPS selection", Weights = model.Parameters }; // no optimizer: the gradients add up over the epoch
            ulong batch = 0;
            foreach (var (images, labels) in batches)
            {
                if (labels.Length != images.Shape[0])
                    throw new ArgumentException($"GPS selection: a batch of {images.Shape[0]} images came with {labels.Length} labels");
                using var labelTensor = Tensor.FromArray(images.Device, labels, labels.Length);
                ulong batchSeed = Kernels.CounterRng.Hash(seed, batch++);
                step.Run(() =>
                {
                    using var features = model.ForwardFeatures(images, batchSeed);
                    using var z = Ops.L2Normalize(features);
                    return Ops.Linear(z, z); // cosine similarities [N, N]
                }, similarities => Ops.SupConLoss(similarities, labelTensor, Temperature));
            }
            if (batch == 0) throw new ArgumentException("GPS selection: no images were given");
            // A row shorter than K trains whole, as the reference's argsort slice [:K] does (Swin-B's relative position
            // tables have 4–32 columns, one per head, against K up to 10).
            return targets.ToDictionary(p => p.Name!, p => TopRows(p.Grad!.ToArray(), p.Shape[0], Math.Min(k, (int)(p.Count / p.Shape[0]))),
                StringComparer.Ordinal);
        }
        finally
        {
            bypass.Dispose();
            foreach (var p in model.Parameters)
            {
                p.RequiresGrad = requires[p];
                if (targets.Contains(p)) p.DropGrad();
            }
        }
    }

    /// <summary>For gradients [rows, in] (row-major): per row, the <paramref name="k"/> columns of largest |g| (ties to
    /// the lower column), ascending.</summary>
    public static GpsRows TopRows(float[] gradient, int rows, int k)
    {
        int perRow = gradient.Length / rows;
        var columns = new int[rows * k];
        Parallel.For(0, rows, () => new float[k], (o, _, best) =>
        {
            // Columns in ascending order; a later column replaces the current worst only when strictly larger, so
            // ties keep the lower column. best[i] holds |g| of columns[o·k + i]; the first k columns seed it.
            var chosen = columns.AsSpan(o * k, k);
            ReadOnlySpan<float> g = gradient.AsSpan(o * perRow, perRow);
            for (int c = 0; c < perRow; c++)
            {
                float v = MathF.Abs(g[c]);
                int worst = -1;
                if (c < k) worst = c;
                else
                    for (int i = 0; i < k; i++)
                        if (v > best[i] && (worst < 0 || best[i] < best[worst] || best[i] == best[worst] && chosen[i] > chosen[worst])) worst = i;
                if (worst < 0) continue;
                best[worst] = v;
                chosen[worst] = c;
            }
            chosen.Sort();
            return best;
        }, _ => { });
        return new GpsRows(rows, k, columns);
    }

    /// <summary>Writes a selection as safetensors (<c>{parameter}.gps_index</c> int32 [rows, K]), atomically.</summary>
    public static void Save(string path, IReadOnlyDictionary<string, GpsRows> selection, IReadOnlyDictionary<string, string>? metadata = null) =>
        SelectionFile.Write(path, PeftMethods.Gps.Name, selection.Select(kv => (kv.Key + IndexSuffix, kv.Value.Columns, new[] { kv.Value.Rows, kv.Value.K })), metadata);

    /// <summary>Reads the selection from a file of <see cref="Save"/> or a trained GPS file (parameter name → rows).</summary>
    /// <exception cref="InvalidInputException">The file holds no <c>*.gps_index</c> tensor, or one is not [rows, K].</exception>
    public static Dictionary<string, GpsRows> Read(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        var selection = FromEntries(checkpoint.Entries, path);
        if (selection.Count == 0) throw new InvalidInputException(path, $"holds no '*{IndexSuffix}' tensor (not a GPS selection)");
        return selection;
    }

    internal static Dictionary<string, GpsRows> FromEntries(IEnumerable<CheckpointEntry> entries, string path)
    {
        var selection = new Dictionary<string, GpsRows>(StringComparer.Ordinal);
        foreach (var e in entries.Where(e => e.Name.EndsWith(IndexSuffix, StringComparison.Ordinal)))
        {
            if (e.Shape.Length != 2 || e.Shape[1] < 1) throw new InvalidInputException(path, $"'{e.Name}' is {e.ShapeText}, a GPS index must be [rows, K] with K ≥ 1");
            selection[e.Name[..^IndexSuffix.Length]] = new GpsRows(e.Shape[0], e.Shape[1], SelectionFile.ReadIndices(e, path));
        }
        return selection;
    }
}
