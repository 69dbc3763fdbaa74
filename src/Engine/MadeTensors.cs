namespace Engine;

/// <summary>
/// The tensors made on this thread while a scope is open (<see cref="Open"/>), so that work which fails part way (a
/// device out of memory in the middle of a forward or a backward) can let go of what it made and still holds: the
/// engine's ops and models hand tensors from one call to the next, and an exception between two calls would otherwise
/// leave the one in flight allocated until the process ends. Only tensors over pooled memory are released
/// (activations, temporaries, views of them); tensors that own their memory (parameters, leaf gradients, optimizer
/// state, <see cref="Tensor.PersistentZeros"/>) stay. A model that keeps a tensor from one forward to the next must
/// give it memory of its own in the same way.
/// </summary>
public sealed class MadeTensors : IDisposable
{
    [ThreadStatic] static MadeTensors? _current;
    readonly MadeTensors? _outer;
    readonly List<Tensor> _made = [];

    MadeTensors()
    {
        _outer = _current;
        _current = this;
    }

    /// <summary>Starts noting the tensors made on this thread, until the scope is disposed (scopes nest: an inner
    /// scope's tensors count for the outer one too).</summary>
    public static MadeTensors Open() => new();

    internal static void Note(Tensor t) => _current?._made.Add(t);

    /// <summary>Tensors made in this scope so far.</summary>
    public int Count => _made.Count;

    /// <summary>Disposes every tensor made in this scope over pooled memory that is not disposed yet; returns how many.</summary>
    public int ReleaseLive()
    {
        int released = 0;
        foreach (var t in _made)
            if (!t.IsDisposed && t.IsPooled)
            {
                t.Dispose();
                released++;
            }
        _made.Clear();
        return released;
    }

    /// <summary>Stops noting; what was made here counts for the scope around this one, if any.</summary>
    public void Dispose()
    {
        if (_current != this) throw new InvalidOperationException("tensor scopes must be closed innermost first");
        _current = _outer;
        _outer?._made.AddRange(_made);
        _made.Clear();
    }
}
