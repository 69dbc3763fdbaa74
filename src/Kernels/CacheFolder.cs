namespace Engine.Kernels;

/// <summary>
/// The one rule for where the engine caches what it builds or decodes (compiled kernels, the emulated device, resized
/// images): <c>$PEFT_CACHE_DIR</c>, else <c>$XDG_CACHE_HOME/peft-engine</c>, else <c>~/.cache/peft-engine</c>.
/// Each user of the cache keeps its own subfolder (<c>kernels</c>, <c>cuemu</c>, <c>vtab</c>).
/// </summary>
public static class CacheFolder
{
    /// <summary>The cache's root folder (not created here).</summary>
    public static string Root
    {
        get
        {
            if (Environment.GetEnvironmentVariable("PEFT_CACHE_DIR") is { Length: > 0 } explicitDir) return explicitDir;
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            var root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            return Path.Combine(root, "peft-engine");
        }
    }

    /// <summary>The subfolder <paramref name="name"/> of <see cref="Root"/>.</summary>
    public static string For(string name) => Path.Combine(Root, name);
}
