using Engine.Kernels;

namespace Engine.Autograd;

/// <summary>
/// What one op's backward reads, as named fields: the inputs gradients may flow to, the tensors kept for backward
/// (through <see cref="Tape.Save"/>, which also frees them) and the sizes (<c>LinearSaved { X, Weight, Bias, XKept,
/// Rows, N, K }</c>), with the backward itself. The tape stores these structs by value in reused arrays, one per op
/// type, so recording allocates nothing.
/// </summary>
internal interface IBackward<TSelf> where TSelf : struct, IBackward<TSelf>
{
    /// <summary>Computes the inputs' gradients from <paramref name="output"/>'s gradient.</summary>
    static abstract void Backward(ref TSelf saved, Tensor output);
}

/// <summary>The recorded states of one op type (a reused array), reached from a node by index.</summary>
internal abstract class NodeStore
{
    static int _types;

    /// <summary>A fresh id for an op type's store.</summary>
    protected static int NextId() => Interlocked.Increment(ref _types) - 1;

    internal abstract void Backward(int index, Tensor output);
    internal abstract void Reset();
}

internal sealed class NodeStore<T> : NodeStore where T : struct, IBackward<T>
{
    /// <summary>This op type's slot in a tape's store table.</summary>
    internal static readonly int Id = NextId();
    T[] _items = new T[16];
    int _count;

    internal int Add(in T saved)
    {
        if (_count == _items.Length) Array.Resize(ref _items, _items.Length * 2);
        _items[_count] = saved;
        return _count++;
    }

    internal override void Backward(int index, Tensor output) => T.Backward(ref _items[index], output);

    /// <summary>Forgets every state (and the tensors it references).</summary>
    internal override void Reset()
    {
        Array.Clear(_items, 0, _count);
        _count = 0;
    }
}

/// <summary>One recorded op: its output and where its named backward state is stored.</summary>
internal readonly record struct Node(Tensor Out, NodeStore Store, int Index);

/// <summary>
/// Reverse-mode autograd over coarse ops. While a tape records (<see cref="Record"/>), every op with an input
/// that requires gradients appends a <see cref="Node"/>; ops with no such input record nothing, and with no
/// recording tape nothing is recorded at all (inference mode). <see cref="Backward(Tensor)"/> runs the nodes in reverse.
/// Gradient rule: parameter (leaf) gradients accumulate, so micro-batches add up until the optimizer zeroes them;
/// intermediate gradients are written by their first consumer, added by later ones, and freed once used.
/// </summary>
public sealed unsafe class Tape
{
    [ThreadStatic] static Tape? _active;
    Node[] _nodes = new Node[256];
    NodeStore?[] _stores = new NodeStore?[32];
    readonly List<Tensor> _kept = new();
    readonly Dictionary<Tensor, Tensor> _geluSources = new(ReferenceEqualityComparer.Instance);
    int _count;

    /// <summary>The tape recording on this thread, if any.</summary>
    public static Tape? Active => _active;

    /// <summary>Nodes recorded since the last backward or <see cref="Clear"/>.</summary>
    public int Count => _count;

    /// <summary>Bytes of activations currently retained for backward.</summary>
    public long SavedBytes { get; private set; }

    /// <summary>Starts recording on this thread until the returned scope is disposed.</summary>
    public Scope Record() => new(this);

    /// <summary>Suspends recording on this thread (inference mode) until the returned scope is disposed.</summary>
    public static Scope NoGrad() => new(null);

    /// <summary>Restores the previously active tape when disposed.</summary>
    public readonly struct Scope : IDisposable
    {
        readonly Tape? _previous;

        internal Scope(Tape? tape)
        {
            _previous = _active;
            _active = tape;
        }

        /// <inheritdoc/>
        public void Dispose() => _active = _previous;
    }

    /// <summary>True when an op with these inputs must be recorded.</summary>
    internal static bool ShouldRecord(Tensor? a, Tensor? b = null, Tensor? c = null, Tensor? d = null) =>
        _active != null && (a?.RequiresGrad == true || b?.RequiresGrad == true || c?.RequiresGrad == true || d?.RequiresGrad == true);

    /// <summary>Appends a node for <paramref name="output"/>, which becomes a non-leaf that requires gradients, with the
    /// op's backward state <paramref name="saved"/>.</summary>
    internal static void Push<T>(Tensor output, in T saved) where T : struct, IBackward<T>
    {
        var tape = _active ?? throw new InvalidOperationException("no tape is recording");
        int id = NodeStore<T>.Id;
        if (id >= tape._stores.Length) Array.Resize(ref tape._stores, Math.Max(id + 1, 2 * tape._stores.Length));
        var store = (NodeStore<T>)(tape._stores[id] ??= new NodeStore<T>());
        if (tape._count == tape._nodes.Length) Array.Resize(ref tape._nodes, tape._nodes.Length * 2);
        output.RequiresGrad = true;
        output.IsLeaf = false;
        tape._nodes[tape._count++] = new Node(output, store, store.Add(saved));
    }

    /// <summary>Keeps <paramref name="t"/>'s data alive for backward (an alias, unaffected by the caller disposing t),
    /// until the tape is cleared.</summary>
    internal static Tensor Save(Tensor t) => Keep(t.Contiguous());

    /// <summary>Keeps <paramref name="t"/> for backward in 16-bit storage (<see cref="Precision.BF16"/> or
    /// <see cref="Precision.FP16"/>), rounded as the GEMMs round their operands: half the bytes of <see cref="Save"/>.
    /// Read it as <see cref="Operand"/>.</summary>
    internal static Tensor SaveInPrecision(Tensor t, Precision precision)
    {
        using var dense = t.Contiguous();
        var packed = Tensor.Empty(t.Device, precision == Precision.BF16 ? DType.BF16 : DType.F16, t.Shape);
        t.Device.Kernels.PackLowPrecision(packed.HalfData, dense.Data, t.Count, precision);
        return Keep(packed);
    }

    /// <summary>A saved tensor (or any float32 or 16-bit one) as a GEMM operand (or <see cref="IKernels.SparseWeightGrad"/>'s
    /// x, attention's qkv): its float32 values, or its 16-bit values as <see cref="SaveInPrecision"/> packed them, which the
    /// kernels read with no widened copy.</summary>
    internal static GemmOperand Operand(Tensor saved) => saved.DType == DType.F32 ? saved.Data : GemmOperand.Packed(saved.HalfData);

    /// <summary>A saved tensor's 16-bit values, or null when it was saved in float32: what a Linear's forward may read
    /// instead of rounding its input again (<see cref="IKernels.LinearForward"/>).</summary>
    internal static ushort* PackedOrNull(Tensor? saved) => saved is { DType: not DType.F32 } ? saved.HalfData : null;

    /// <summary>Takes ownership of <paramref name="t"/> (a tensor the op made for its backward) until the tape is cleared.</summary>
    internal static Tensor Keep(Tensor t)
    {
        var tape = _active!;
        tape.SavedBytes += t.Bytes;
        tape._kept.Add(t);
        return t;
    }

    /// <summary>Notes that <paramref name="y"/>'s values are GELU of the kept 16-bit <paramref name="h"/> (widened; rounded
    /// back to 16 bits when y is 16-bit), as <see cref="Ops.LinearGelu"/> writes them: a Linear that would keep y for its
    /// backward keeps nothing and computes y again from h there (<see cref="Ops.RecomputeGeluOutputs"/>). Valid until
    /// the tape is cleared.</summary>
    internal static void NoteGeluOf(Tensor y, Tensor h) => _active!._geluSources[y] = h;

    /// <summary>The kept 16-bit tensor whose GELU <paramref name="y"/> is (<see cref="NoteGeluOf"/>) on the recording
    /// tape, or null.</summary>
    internal static Tensor? GeluSource(Tensor y) => _active != null && _active._geluSources.TryGetValue(y, out var h) ? h : null;

    /// <summary>Runs backward from a scalar <paramref name="output"/> (seeded with gradient 1), then clears the tape.</summary>
    public void Backward(Tensor output)
    {
        if (output.Count != 1) throw new ArgumentException($"Backward needs a scalar output, got {output.Describe()}; pass its gradient instead");
        using var one = Tensor.Empty(output.Device, DType.F32, output.Shape); // filled on the device: a captured step copies nothing from the host
        output.Device.Kernels.Fill(one.Data, 1, 1f);
        Backward(output, one);
    }

    /// <summary>Runs backward from <paramref name="output"/> with upstream gradient <paramref name="gradient"/>
    /// (same shape), then clears the tape.</summary>
    public void Backward(Tensor output, Tensor gradient)
    {
        Ops.CheckSameShape("Backward", output, gradient);
        if (!output.RequiresGrad) throw new InvalidOperationException($"Backward: {output.Describe()} does not depend on anything that requires gradients");
        float* g = GradOutput(output, out bool acc);
        output.Device.Kernels.Copy(g, gradient.Data, gradient.Count, acc);
        _zeroed = ZeroSmallGradientsTogether ? ZeroedSmallGradients(output.Device) : null;
        try
        {
            for (int i = _count - 1; i >= 0; i--)
            {
                var node = _nodes[i];
                if (node.Out.Grad != null) node.Store.Backward(node.Index, node.Out);
                if (!node.Out.IsLeaf)
                {
                    node.Out.Grad?.Dispose();
                    node.Out.SetGrad(null);
                }
            }
        }
        finally
        {
            _zeroed?.Dispose(); // the gradients cut from it hold its storage until they are disposed
            _zeroed = null;
            _zeroedOffsets?.Clear();
            Clear(); // also after a backward that threw (out of memory): nothing of it is left for the next one
        }
    }

    /// <summary>
    /// Whether a backward zeroes the gradients of the small intermediate tensors (at most <see cref="SmallGradient"/>
    /// values) that ops add to, such as SSF's scale and shift folded into each layer's own ([C] vectors, several per
    /// block), with one fill of one buffer, cut into each as an op first adds to it, instead of a fill of its own each:
    /// on a GPU one launch instead of one per tensor (SSF on ViT-B/16: about 125 a step). The same values either way;
    /// false fills each on its own (to compare).
    /// </summary>
    public static bool ZeroSmallGradientsTogether { get; set; } = true;

    /// <summary>The most values an intermediate gradient may have to be cut from the backward's zeroed buffer.</summary>
    public const int SmallGradient = 16384;

    [ThreadStatic] static Tensor? _zeroed;
    [ThreadStatic] static Dictionary<Tensor, int>? _zeroedOffsets; // each gradient's place in it, until taken

    /// <summary>One zero-filled buffer with a place for the gradient of every small intermediate tensor on
    /// <paramref name="device"/> that this tape recorded (16-byte aligned, for the kernels' vector loads), or null where
    /// fewer than two would share it.</summary>
    Tensor? ZeroedSmallGradients(Device device)
    {
        var offsets = _zeroedOffsets ??= new(ReferenceEqualityComparer.Instance);
        int total = 0;
        for (int i = 0; i < _count; i++)
        {
            var t = _nodes[i].Out;
            if (t.IsLeaf || t.Count > SmallGradient || t.Device != device || total > int.MaxValue / 2) continue;
            offsets[t] = total;
            total += (int)(t.Count + 3) & ~3;
        }
        if (offsets.Count < 2)
        {
            offsets.Clear();
            return null;
        }
        var zeroed = Tensor.Empty(device, DType.F32, total);
        device.Kernels.Fill(zeroed.Data, total, 0f);
        return zeroed;
    }

    /// <summary>A zero gradient for the intermediate tensor <paramref name="t"/>: its place in the backward's zeroed
    /// buffer (<see cref="ZeroSmallGradientsTogether"/>), else a zero-filled tensor of its own.</summary>
    static Tensor ZeroGradient(Tensor t)
    {
        if (_zeroed == null || !_zeroedOffsets!.Remove(t, out int offset)) return Tensor.Zeros(t.Device, t.Shape);
        using var place = _zeroed.Slice(0, offset, (int)t.Count);
        return place.ReshapedAlias(t.Shape);
    }

    /// <summary>Drops every node, the activations they retained and the gradients of intermediate tensors (which only a
    /// backward that stopped part way leaves).</summary>
    public void Clear()
    {
        for (int i = 0; i < _count; i++)
            if (_nodes[i].Out is { IsLeaf: false, Grad: { } grad } output)
            {
                grad.Dispose();
                output.SetGrad(null);
            }
        Array.Clear(_nodes, 0, _count);
        foreach (var store in _stores) store?.Reset();
        foreach (var t in _kept) t.Dispose();
        _kept.Clear();
        _geluSources.Clear();
        _count = 0;
        SavedBytes = 0;
    }

    /// <summary>Gradient buffer of <paramref name="t"/> for a kernel that writes or adds (<paramref name="accumulate"/>):
    /// a fresh intermediate gradient is written, an existing or leaf gradient is added to.</summary>
    internal static float* GradOutput(Tensor t, out bool accumulate)
    {
        if (t.Grad != null)
        {
            accumulate = true;
            t.DropGradCopy(); // the values change
            return t.Grad.Data;
        }
        if (t.IsLeaf)
        {
            RefuseSparse(t);
            t.SetGrad(Tensor.PersistentZeros(t.Device, t.Shape));
            accumulate = true;
        }
        else
        {
            t.SetGrad(Tensor.Empty(t.Device, DType.F32, t.Shape));
            accumulate = false;
        }
        return t.Grad!.Data;
    }

    /// <summary>Passes <paramref name="grad"/> on to <paramref name="t"/> unchanged (a reshape's or an addition's
    /// backward): when t has no gradient yet and is not a leaf, grad's storage becomes t's gradient, in t's shape, instead
    /// of a copy of it; otherwise it is added. Hand one gradient over to one tensor only (two owners would add into each
    /// other), and only one its op no longer writes.</summary>
    internal static void HandOverGradient(Tensor t, Tensor grad)
    {
        if (t.Grad == null && !t.IsLeaf && grad.IsContiguous)
        {
            t.SetGrad(grad.ReshapedAlias(t.Shape));
            return;
        }
        float* dst = GradOutput(t, out bool accumulate);
        t.Device.Kernels.Copy(dst, grad.Data, grad.Count, accumulate);
    }

    /// <summary>Zero-initialised gradient buffer of <paramref name="t"/> for kernels that only add (parameter gradients).</summary>
    internal static float* GradAccumulator(Tensor t)
    {
        if (t.Grad == null) RefuseSparse(t);
        t.SetGrad(t.Grad ?? (t.IsLeaf ? Tensor.PersistentZeros(t.Device, t.Shape) : ZeroGradient(t)));
        return t.Grad!.Data;
    }

    /// <summary>Zero-initialised [out, k] gradient of a weight that trains <see cref="TrainableKind.SelectedEntries"/> (sparse GPS).</summary>
    internal static float* SparseGradAccumulator(Tensor t)
    {
        t.SetGrad(t.Grad ?? Tensor.PersistentZeros(t.Device, t.Trainability.Entries!.Shape));
        return t.Grad!.Data;
    }

    static void RefuseSparse(Tensor t)
    {
        if (t.Trainability.Kind == TrainableKind.SelectedEntries)
            throw new InvalidOperationException($"{t.Describe()} trains selected entries only but is used by an op with no sparse gradient; " +
                "only Linear and depthwise-convolution weights can train sparsely");
    }

    /// <summary>The gradient pointer for an input, or null when it needs none (frozen means free).</summary>
    internal static float* GradOutputIfNeeded(Tensor? t, out bool accumulate)
    {
        accumulate = false;
        return t is { RequiresGrad: true } ? GradOutput(t, out accumulate) : null;
    }

    /// <summary>Where a backward kernel that has just been given t's gradient buffer (<see cref="GradOutput"/>) also
    /// writes the values it leaves there in 16 bits, when the op that made t reads its gradient so
    /// (<see cref="Tensor.GradCopyType"/>; a later change to the gradient drops the copy); else null.</summary>
    internal static ushort* GradCopyIfWanted(Tensor? t) => t is { RequiresGrad: true } && t.NewGradCopy() is { } copy ? copy.HalfData : null;

    /// <summary>Zero-initialised accumulator for an input, or null when it needs none.</summary>
    internal static float* GradAccumulatorIfNeeded(Tensor? t) => t is { RequiresGrad: true } ? GradAccumulator(t) : null;
}
