using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>
/// Wall-clock seconds per phase of a generation (encode, denoise, decode, ...). On CUDA a phase ends with a device
/// synchronisation (once per phase, never per step), so queued GPU work is counted in the phase that queued it.
/// With <see cref="Profile"/> (environment LENS_PROFILE=1) each step is also synchronised and timed, and the time to
/// queue it (host side only) is recorded: a step whose queue time is close to its total is host-bound.
/// Also samples the device memory in use at phase ends (<see cref="GpuMemory"/>).
/// </summary>
internal sealed class PhaseTimer
{
    public Device Device { get; }
    public bool Profile { get; init; } = Environment.GetEnvironmentVariable("LENS_PROFILE") == "1";
    public Dictionary<string, double> Seconds { get; } = new();
    /// <summary>Profile only: seconds per denoising step (synchronised), and the host-side queueing time of each.</summary>
    public List<double> StepSeconds { get; } = new();
    public List<double> StepQueueSeconds { get; } = new();
    public int Steps { get; set; }
    /// <summary>Largest device memory in use (driver view: total - free) seen at a phase end, in bytes; null off CUDA.</summary>
    public long? PeakDeviceBytes { get; private set; }

    public PhaseTimer(Device device) => Device = device;

    public bool OnCuda => Device.type == DeviceType.CUDA;

    public void Sync()
    {
        if (OnCuda) cuda.synchronize(Device);
    }

    /// <summary>Runs <paramref name="phase"/>, synchronises, adds its seconds to <paramref name="name"/>.</summary>
    public T Time<T>(string name, Func<T> phase)
    {
        var sw = Stopwatch.StartNew();
        var result = phase();
        Sync();
        Add(name, sw.Elapsed.TotalSeconds);
        SampleMemory();
        return result;
    }

    public void Add(string name, double seconds) => Seconds[name] = Seconds.GetValueOrDefault(name) + seconds;

    public void SampleMemory()
    {
        if (!OnCuda || GpuMemory.Query() is not { } m) return;
        long used = m.Total - m.Free;
        if (PeakDeviceBytes is null || used > PeakDeviceBytes) PeakDeviceBytes = used;
    }
}
