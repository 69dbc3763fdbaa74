namespace Engine.Kernels;

/// <summary>
/// Times one kernel call where it runs. An asynchronous backend (a GPU) returns from a launch before the kernel has
/// run, so the host clock around the call would see only the launch: a device timer records the device's own clock
/// before and after the call and waits for the second reading.
/// </summary>
public interface IKernelTimer
{
    /// <summary>Marks the start of the next kernel call.</summary>
    void Start();

    /// <summary>Marks its end, waits until the device has run it, and returns the seconds between the two marks.</summary>
    double Stop();
}
