using System.CommandLine;

namespace Engine.Cli;

/// <summary>The shared <c>--device</c> option and its resolution to an engine device.</summary>
public static class DeviceOption
{
    /// <summary>Creates the option (cpu, cuda or auto).</summary>
    public static Option<string> Create() => new("--device")
    {
        Description = "Where to run: cpu, cuda or auto (cuda when a GPU backend is available, else cpu)",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>The device for a <c>--device</c> value; the reason is printed when auto falls back to the CPU.</summary>
    public static Device Resolve(string name) => name switch
    {
        "cpu" or "auto" => Device.Cpu,
        "cuda" => throw new ArgumentException("--device cuda: this build has no CUDA backend yet; use --device cpu"),
        _ => throw new ArgumentException($"--device must be cpu, cuda or auto (got '{name}')"),
    };
}
