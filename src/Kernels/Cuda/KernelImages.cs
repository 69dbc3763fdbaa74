using System.Collections.Concurrent;

namespace Engine.Kernels.Cuda;

/// <summary>
/// The compiled images of a set of kernel families for one device: every family starts compiling on background
/// threads when this is made, all at once, so a first run waits for the slowest family rather than for their sum;
/// <see cref="Image"/> waits for its own family (or compiles it, if no background thread has reached it yet), once.
/// A family that fails to compile throws its error from <see cref="Image"/>, never from the background.
/// </summary>
public sealed class KernelImages
{
    readonly ConcurrentDictionary<string, Lazy<byte[]>> _images = new();
    readonly Func<string, byte[]> _compile;

    /// <summary>Starts compiling each of <paramref name="files"/> with <paramref name="compile"/> (file → image).</summary>
    public KernelImages(IEnumerable<string> files, Func<string, byte[]> compile)
    {
        _compile = compile;
        var all = files.ToArray();
        Background = Task.Run(() => Parallel.ForEach(all, file =>
        {
            try { Image(file); }
            catch (Exception) { } // kept by the family's Lazy and thrown by Image(file) at its first use
        }));
    }

    /// <summary>The background compiles: done when every family has its image or its error.</summary>
    public Task Background { get; }

    /// <summary>The image of <paramref name="file"/>, compiled once; its compile error, if it failed.</summary>
    public byte[] Image(string file) => _images.GetOrAdd(file, f => new Lazy<byte[]>(() => _compile(f))).Value;
}
