using DiffusionLens.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

public abstract partial class LensPipeline
{
    /// <summary>
    /// A warm-up (CUDA only: cuBLAS/cuDNN handles, lazily loaded kernels, per-shape algorithm choices and the
    /// allocator's growth happen here, not in the first timed step) that doubles as the memory probe of
    /// <c>--batch auto</c>: one guided model call for <paramref name="images"/> images (diffusers' batch of two per
    /// image) on a zero sample, and the sample-to-image step (SD: a VAE decode) of as many images. The sweep probes with
    /// one image, then warms up at the batch it runs, so the timed steps meet no new shape. Nothing it computes is kept,
    /// and it draws from no generator, so it cannot change any image.
    /// </summary>
    /// <returns>the device memory the probe made the process reserve (driver view), or null where it cannot be measured</returns>
    internal long? WarmUp(Tensor conditional, Tensor unconditional, GenerationOptions o, int images = 1)
    {
        var shape = NoiseShape(o);
        shape[0] = images;
        var before = GpuMemory.Query();
        using (var scope = NewDisposeScope())
        using (torch.no_grad())
        using (var scheduler = CreateScheduler())
        {
            SetTimesteps(scheduler, o);
            var sample = torch.zeros(shape, dtype: DType, device: Device);
            var embeds = BatchEmbeds(Enumerable.Repeat(conditional, images).ToList(), unconditional, o.Guidance);
            GuidedPrediction(scheduler, sample, scheduler.Timesteps[0], embeds, o.Guidance);
            ToImage(sample);
            if (Device.type == DeviceType.CUDA) cuda.synchronize(Device);
        }
        var after = GpuMemory.Query();
        return before is { } b && after is { } a ? Math.Max(0, b.Free - a.Free) : null;
    }

    /// <summary>
    /// The largest layer batch that fits: free device memory (plus what the probe reserved, which the allocator
    /// reuses) over the probe's reservation for one layer, with a 10% margin; at least 1, at most
    /// <paramref name="layers"/>. Without a measurement, all layers (the sweep halves the batch on out-of-memory).
    /// </summary>
    internal static int AutoBatch(long? probeBytes, int layers)
    {
        if (probeBytes is not long probe || probe <= 0 || GpuMemory.Query() is not { } m) return layers;
        double fit = 0.9 * (m.Free + probe) / probe;
        return (int)Math.Clamp(Math.Floor(fit), 1, layers);
    }
}
