using System.Runtime.InteropServices;

namespace Engine;

/// <summary>
/// A dense, row-major n-d array on one device: a shape, element strides and an offset into shared
/// <see cref="Storage"/>. Reshape, slice and transpose make views without copying. Element access is only
/// through explicit host copies (<see cref="ToArray"/>, <see cref="CopyFrom(ReadOnlySpan{float})"/>).
/// Autograd state: <see cref="RequiresGrad"/>, <see cref="Grad"/> and which elements train (<see cref="Trainability"/>).
/// Dispose releases this tensor's reference to its storage; pooled storage returns to the device's pool.
/// </summary>
public sealed unsafe class Tensor : IDisposable
{
    readonly Storage _storage;
    bool _disposed;

    Tensor(Storage storage, DType dtype, int[] shape, long[] strides, long offset)
    {
        _storage = storage;
        DType = dtype;
        Shape = shape;
        Strides = strides;
        Offset = offset;
        Count = 1;
        foreach (int d in shape) Count *= d;
        MadeTensors.Note(this);
    }

    /// <summary>Dimensions, outermost first.</summary>
    public int[] Shape { get; }

    /// <summary>Element strides per dimension.</summary>
    public long[] Strides { get; }

    /// <summary>Offset of element [0,...,0] in its storage, in elements.</summary>
    public long Offset { get; }

    /// <summary>Element type.</summary>
    public DType DType { get; }

    /// <summary>Number of elements.</summary>
    public long Count { get; }

    /// <summary>Number of dimensions.</summary>
    public int Rank => Shape.Length;

    /// <summary>The device holding the data.</summary>
    public Device Device => _storage.Device;

    /// <summary>Optional name (parameter name, for error messages and checkpoints).</summary>
    public string? Name { get; set; }

    /// <summary>Whether gradients flow to (and, for leaves, accumulate in) this tensor.</summary>
    public bool RequiresGrad { get; set; }

    /// <summary>The gradient, same shape (null until a backward pass reaches this tensor).</summary>
    public Tensor? Grad { get; internal set; }

    /// <summary>A 16-bit copy of <see cref="Grad"/>'s values in <see cref="GradCopyType"/>, written beside them by the
    /// backward kernel that stored them last (LayerNorm's, the head split's), for the products of the op that made this
    /// tensor (a Linear layer), which read it instead of packing the gradient themselves. Null when there is none; dropped
    /// whenever the gradient changes after it (<see cref="SetGrad"/>, an accumulation).</summary>
    internal Tensor? GradCopy { get; private set; }

    /// <summary>The 16-bit format in which the op that made this tensor reads its gradient (set by that op in the
    /// forward; null: none), so that a backward kernel writing the gradient may write <see cref="GradCopy"/> too.</summary>
    internal DType? GradCopyType { get; set; }

    /// <summary>A new <see cref="GradCopy"/> for a kernel to write, when <see cref="GradCopyType"/> asks for one.</summary>
    internal Tensor? NewGradCopy()
    {
        DropGradCopy();
        if (GradCopyType is not { } type || Grad == null) return null;
        return GradCopy = Empty(Device, type, Shape);
    }

    /// <summary>Frees <see cref="GradCopy"/>: the gradient is about to change, or has.</summary>
    internal void DropGradCopy()
    {
        GradCopy?.Dispose();
        GradCopy = null;
    }

    /// <summary>Which elements train when <see cref="RequiresGrad"/>: all (the default), those of a 0/1 mask, or
    /// selected entries per row (see <see cref="Engine.Trainability"/>). With selected entries <see cref="Grad"/> is
    /// [rows, K] and ops without a sparse weight gradient refuse the tensor.</summary>
    /// <exception cref="ArgumentException">The mask or index does not fit this tensor's shape.</exception>
    public Trainability Trainability
    {
        get => _trainability;
        set
        {
            value.CheckFits(this);
            _trainability = value;
        }
    }

    Trainability _trainability;

    /// <summary>True for tensors created directly (parameters, inputs) rather than by an op.</summary>
    public bool IsLeaf { get; internal set; } = true;

    /// <summary>True when the elements are laid out densely in row-major order.</summary>
    public bool IsContiguous
    {
        get
        {
            long expected = 1;
            for (int d = Rank - 1; d >= 0; d--)
            {
                if (Shape[d] != 1 && Strides[d] != expected) return false;
                expected *= Shape[d];
            }
            return true;
        }
    }

    /// <summary>Size in bytes of the elements.</summary>
    public long Bytes => Count * DType.Size();

    /// <summary>Shape as text, e.g. [2, 197, 768].</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    // ---------------------------------------------------------------- creation

    /// <summary>An uninitialised tensor from the device's buffer pool.</summary>
    public static Tensor Empty(Device device, DType dtype, params int[] shape) => Create(device, dtype, shape, pooled: true);

    /// <summary>A zero-filled tensor from the device's buffer pool.</summary>
    public static Tensor Zeros(Device device, params int[] shape)
    {
        var t = Empty(device, DType.F32, shape);
        device.Kernels.Fill(t.Data, t.Count, 0f);
        return t;
    }

    /// <summary>A float32 tensor holding a copy of <paramref name="data"/>.</summary>
    public static Tensor FromArray(Device device, ReadOnlySpan<float> data, params int[] shape)
    {
        var t = Create(device, DType.F32, shape, pooled: true);
        t.CopyFrom(data);
        return t;
    }

    /// <summary>An int32 tensor holding a copy of <paramref name="data"/>.</summary>
    public static Tensor FromArray(Device device, ReadOnlySpan<int> data, params int[] shape)
    {
        var t = Create(device, DType.I32, shape, pooled: true);
        t.CopyFrom(MemoryMarshal.Cast<int, float>(data), DType.I32);
        return t;
    }

    /// <summary>A zero-filled tensor with its own memory (not pooled), for state that lives as long as its owner
    /// (leaf gradients, optimizer moments).</summary>
    public static Tensor PersistentZeros(Device device, params int[] shape)
    {
        var t = Create(device, DType.F32, shape, pooled: false);
        device.Kernels.Fill(t.Data, t.Count, 0f);
        return t;
    }

    /// <summary>A persistent, zero-filled, trainable leaf (its own memory, not pooled).</summary>
    public static Tensor Parameter(Device device, string name, params int[] shape)
    {
        var t = Create(device, DType.F32, shape, pooled: false);
        device.Kernels.Fill(t.Data, t.Count, 0f);
        t.Name = name;
        t.RequiresGrad = true;
        return t;
    }

    static Tensor Create(Device device, DType dtype, int[] shape, bool pooled)
    {
        long count = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape)}]", nameof(shape));
            count *= d;
        }
        var storage = new Storage(device, count * dtype.Size(), pooled);
        return new Tensor(storage, dtype, (int[])shape.Clone(), ContiguousStrides(shape), 0);
    }

    static long[] ContiguousStrides(int[] shape)
    {
        var strides = new long[shape.Length];
        long s = 1;
        for (int d = shape.Length - 1; d >= 0; d--)
        {
            strides[d] = s;
            s *= shape[d];
        }
        return strides;
    }

    // ---------------------------------------------------------------- raw access for ops

    /// <summary>Device pointer to element [0,...,0] as float32. Ops call this after validating shapes.</summary>
    public float* Data
    {
        get
        {
            CheckAlive();
            if (DType != DType.F32) throw new ArgumentException($"tensor {Describe()} is {DType}, expected F32");
            return (float*)_storage.Pointer + Offset;
        }
    }

    /// <summary>Device pointer to element [0,...,0] as int32.</summary>
    public int* IntData
    {
        get
        {
            CheckAlive();
            if (DType != DType.I32) throw new ArgumentException($"tensor {Describe()} is {DType}, expected I32");
            return (int*)_storage.Pointer + Offset;
        }
    }

    /// <summary>Device pointer to element [0,...,0] as 16-bit storage (<see cref="DType.BF16"/> or <see cref="DType.F16"/>).</summary>
    public ushort* HalfData
    {
        get
        {
            CheckAlive();
            if (DType is not (DType.BF16 or DType.F16)) throw new ArgumentException($"tensor {Describe()} is {DType}, expected BF16 or F16");
            return (ushort*)_storage.Pointer + Offset;
        }
    }

    internal Storage Storage => _storage;

    /// <summary>Throws when a <see cref="FrozenWeights"/> or a <see cref="WeightCopies.Hold"/> holds this tensor's storage
    /// (its backend may be reading a packed copy that the write would leave stale).</summary>
    internal void CheckNotFrozen(string what)
    {
        if (_storage.Frozen > 0)
            throw new InvalidOperationException($"cannot {what} {Describe()}: it is frozen (FrozenWeights, or a training step's " +
                "WeightCopies.Hold while the step's forward and backward run); dispose the FrozenWeights or the hold first");
    }

    void CheckAlive()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_storage.IsReleased) throw new ObjectDisposedException(Describe(), "the tensor's storage was released");
    }

    /// <summary>Name (if any), shape and dtype, for error messages.</summary>
    public string Describe() => $"{(Name == null ? "" : $"'{Name}' ")}{ShapeText} {DType}";

    // ---------------------------------------------------------------- host copies

    /// <summary>Copies the elements (in row-major order) to a new host array.</summary>
    public float[] ToArray()
    {
        var result = new float[Count];
        CopyTo(result);
        return result;
    }

    /// <summary>Copies the int32 elements to a new host array.</summary>
    public int[] ToIntArray()
    {
        var result = new int[Count];
        fixed (int* dst = result) CopyToHost(dst);
        return result;
    }

    /// <summary>Copies the elements (row-major order) into <paramref name="destination"/>.</summary>
    public void CopyTo(Span<float> destination)
    {
        if (destination.Length != Count)
            throw new ArgumentException($"destination holds {destination.Length} elements, tensor {Describe()} has {Count}");
        fixed (float* dst = destination) CopyToHost(dst);
    }

    /// <summary>Copies the elements in row-major order to host memory (through a dense copy when strided).</summary>
    void CopyToHost(void* destination)
    {
        using var dense = Contiguous();
        Device.CopyToHost(destination, (byte*)dense._storage.Pointer + dense.Offset * DType.Size(), Bytes);
    }

    /// <summary>Overwrites the elements from host data (row-major order). The tensor must be contiguous.</summary>
    public void CopyFrom(ReadOnlySpan<float> source) => CopyFrom(source, DType.F32);

    void CopyFrom(ReadOnlySpan<float> source, DType expected)
    {
        if (DType != expected) throw new ArgumentException($"tensor {Describe()} is {DType}, the host data is {expected}");
        if (source.Length != Count)
            throw new ArgumentException($"source holds {source.Length} elements, tensor {Describe()} has {Count}");
        if (!IsContiguous) throw new ArgumentException($"cannot copy host data into the non-contiguous view {Describe()}");
        CheckAlive();
        CheckNotFrozen("copy host data into");
        fixed (float* src = source) Device.CopyFromHost((float*)_storage.Pointer + Offset, src, Bytes);
    }

    // ---------------------------------------------------------------- views

    /// <summary>A view with a new shape (one dimension may be −1). The tensor must be contiguous.</summary>
    public Tensor Reshape(params int[] shape)
    {
        shape = (int[])shape.Clone();
        long known = 1;
        int infer = -1;
        for (int d = 0; d < shape.Length; d++)
        {
            if (shape[d] == -1)
            {
                if (infer >= 0) throw new ArgumentException($"reshape of {Describe()}: more than one −1 in [{string.Join(", ", shape)}]");
                infer = d;
            }
            else known *= shape[d];
        }
        if (infer >= 0 && known > 0 && Count % known == 0) shape[infer] = (int)(Count / known);
        long count = 1;
        bool negative = false;
        foreach (int d in shape)
        {
            count *= d;
            negative |= d < 0;
        }
        if (count != Count || negative)
            throw new ArgumentException($"reshape of {Describe()} to [{string.Join(", ", shape)}]: element counts differ");
        if (!IsContiguous) throw new ArgumentException($"reshape of the non-contiguous view {Describe()}: call Contiguous() first");
        var view = View(shape, ContiguousStrides(shape), Offset);
        if (Autograd.Tape.ShouldRecord(this)) Ops.RecordView(this, view);
        return view;
    }

    /// <summary>A view of <paramref name="length"/> entries of dimension <paramref name="dim"/> from <paramref name="start"/>.</summary>
    public Tensor Slice(int dim, int start, int length)
    {
        CheckDim(dim, "slice");
        if (start < 0 || length < 0 || start + length > Shape[dim])
            throw new ArgumentOutOfRangeException(nameof(start), $"slice [{start}, {start + length}) of dimension {dim} of {Describe()}");
        var shape = (int[])Shape.Clone();
        shape[dim] = length;
        return View(shape, (long[])Strides.Clone(), Offset + start * Strides[dim]);
    }

    /// <summary>A view with dimensions <paramref name="dim0"/> and <paramref name="dim1"/> swapped.</summary>
    public Tensor Transpose(int dim0, int dim1)
    {
        CheckDim(dim0, "transpose");
        CheckDim(dim1, "transpose");
        var shape = (int[])Shape.Clone();
        var strides = (long[])Strides.Clone();
        (shape[dim0], shape[dim1]) = (shape[dim1], shape[dim0]);
        (strides[dim0], strides[dim1]) = (strides[dim1], strides[dim0]);
        return View(shape, strides, Offset);
    }

    /// <summary>This tensor if contiguous (a new view sharing storage); otherwise a dense copy.</summary>
    public Tensor Contiguous()
    {
        if (IsContiguous) return View(Shape, Strides, Offset);
        if (DType != DType.F32) throw new NotSupportedException($"Contiguous() copies F32 tensors only; {Describe()}");
        var result = Empty(Device, DType, Shape);
        int* shape = stackalloc int[Rank];
        long* strides = stackalloc long[Rank];
        for (int d = 0; d < Rank; d++)
        {
            shape[d] = Shape[d];
            strides[d] = Strides[d];
        }
        Device.Kernels.CopyStrided(result.Data, Data, Rank, shape, strides);
        return result;
    }

    /// <summary>Another reference to this tensor's elements (same shape, not recorded), holding the storage alive.</summary>
    internal Tensor Alias() => View((int[])Shape.Clone(), (long[])Strides.Clone(), Offset);

    /// <summary>Another reference to this contiguous tensor's elements in <paramref name="shape"/> (the same count; not
    /// recorded), holding the storage alive.</summary>
    internal Tensor ReshapedAlias(int[] shape)
    {
        if (!IsContiguous || shape.Aggregate(1L, (n, d) => n * d) != Count)
            throw new ArgumentException($"cannot alias {Describe()} as [{string.Join(", ", shape)}]");
        return View((int[])shape.Clone(), ContiguousStrides(shape), Offset);
    }

    Tensor View(int[] shape, long[] strides, long offset)
    {
        CheckAlive();
        _storage.Retain();
        return new Tensor(_storage, DType, shape, strides, offset) { Name = Name };
    }

    void CheckDim(int dim, string op)
    {
        if (Autograd.Tape.ShouldRecord(this))
            throw new InvalidOperationException($"{op} of {Describe()} while a tape records: this view is not differentiable; use an op (or Tape.NoGrad())");
        if ((uint)dim >= (uint)Rank) throw new ArgumentOutOfRangeException(nameof(dim), $"{op}: dimension {dim} of {Describe()}");
    }

    // ---------------------------------------------------------------- lifetime

    /// <summary>Releases this tensor's reference to its storage (and its gradient). Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _storage.Release();
        Grad?.Dispose();
        Grad = null;
        DropGradCopy();
    }

    /// <summary>True after <see cref="Dispose"/>.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>True when the storage is pooled memory rather than memory of its own (<see cref="MadeTensors"/>).</summary>
    internal bool IsPooled => _storage.IsPooled;

    internal void SetGrad(Tensor? grad)
    {
        Grad = grad;
        DropGradCopy();
    }

    /// <summary>Frees the gradient (null afterwards); the next backward that reaches this tensor starts from zero.</summary>
    public void DropGrad()
    {
        Grad?.Dispose();
        Grad = null;
        DropGradCopy();
    }

    /// <inheritdoc/>
    public override string ToString() => $"Tensor {Describe()} on {Device}";
}
