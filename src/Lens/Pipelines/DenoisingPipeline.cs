using System.Diagnostics;
using DiffusionLens.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>
/// What every denoising stage shares: the device and dtype, the guided model call of one step
/// (<see cref="GuidedPrediction"/>, each pipeline's own), and THE denoising loop (<see cref="Denoise"/>), used by the
/// text-to-image pipelines (<see cref="LensPipeline"/>) and by DeepFloyd IF's super-resolution stage
/// (<see cref="IFSuperResolutionPipeline"/>) alike.
/// </summary>
public abstract class DenoisingPipeline : IDisposable
{
    /// <summary>The diffusers model folder.</summary>
    public required string ModelDir { get; init; }
    /// <summary>The device the pipeline runs on.</summary>
    public required Device Device { get; init; }
    /// <summary>The dtype the pipeline computes in.</summary>
    public required ScalarType DType { get; init; }

    /// <summary>The --variant the pipeline was loaded with (null: plain files).</summary>
    public string? Variant { get; internal set; }
    /// <summary>Every weights file the pipeline read (full paths).</summary>
    public IReadOnlyList<string> WeightFiles { get; internal set; } = Array.Empty<string>();
    private SortedDictionary<string, string>? _hashes;

    /// <summary>sha256 (hex) of each weights file, keyed by its path relative to the model folder; hashed once per pipeline.</summary>
    internal SortedDictionary<string, string> WeightHashes()
    {
        lock (_hashLock) return _hashes ??= HashWeights();
    }

    private readonly object _hashLock = new();

    private SortedDictionary<string, string> HashWeights()
    {
        // files in parallel (IF's T5 and UNet shards), each read once, or not at all when the cache knows it unchanged
        var hashed = new System.Collections.Concurrent.ConcurrentDictionary<string, string>();
        Parallel.ForEach(WeightFiles, f =>
            hashed[Path.GetRelativePath(ModelDir, f).Replace('\\', '/')] = Loading.WeightHashCache.Default.Sha256(f));
        return new SortedDictionary<string, string>(hashed, StringComparer.Ordinal);
    }

    /// <summary>
    /// One denoising step's model call as the diffusers pipeline makes it: with guidance the sample doubled for
    /// [uncond, cond], scaled by the scheduler, the UNet, and classifier-free guidance; without it (see
    /// <see cref="LensPipeline.UsesGuidance"/>) the sample once, the conditional rows alone.
    /// </summary>
    /// <param name="embeds">with guidance [2k, T, D]: k unconditional rows, then k conditional rows; without it [k, T, D]</param>
    internal abstract Tensor GuidedPrediction(Scheduler scheduler, Tensor sample, long t, Tensor embeds, double guidance);

    /// <summary>
    /// The denoising loop: for each of the scheduler's timesteps (set by the caller), <see cref="GuidedPrediction"/> then
    /// the scheduler step, which draws any variance noise from <paramref name="generator"/>. Returns the final sample.
    /// </summary>
    /// <param name="onStep">called after each step with (steps done, steps in all)</param>
    /// <param name="timer">records the denoise phase (and, profiling, each step); null: not timed</param>
    private protected Tensor Denoise(Scheduler scheduler, Tensor sample, Tensor embeds, double guidance, Generator? generator,
        Action<int, int>? onStep, PhaseTimer? timer)
    {
        var timesteps = scheduler.Timesteps;
        if (timesteps.Length == 0) throw new LensException("the scheduler has no timesteps to denoise");
        using var noGrad = torch.no_grad();
        using var outer = NewDisposeScope();
        // every step's timestep as a device tensor, uploaded once (not one blocking host-to-device copy per step)
        // (diffusers' scheduler.timesteps: int64, or float32 for EulerDiscreteScheduler)
        var timestepsOnDevice = (scheduler.TimestepDType == ScalarType.Int64
            ? torch.tensor(timesteps, dtype: ScalarType.Int64)
            : torch.tensor(scheduler.TimestepValues, dtype: ScalarType.Float64).to(scheduler.TimestepDType)).to(Device);
        _stepTimesteps = new Dictionary<long, Tensor>();
        for (int i = 0; i < timesteps.Length; i++) _stepTimesteps.TryAdd(timesteps[i], timestepsOnDevice[i]);
        try
        {
            var denoise = Stopwatch.StartNew();
            for (int i = 0; i < timesteps.Length; i++)
            {
                var stepClock = timer?.Profile == true ? Stopwatch.StartNew() : null;
                using var step = NewDisposeScope();
                long t = timesteps[i];
                var prediction = GuidedPrediction(scheduler, sample, t, embeds, guidance);
                sample = scheduler.Step(prediction, t, sample, generator).MoveToOuterDisposeScope();
                if (stepClock is not null)
                {
                    timer!.StepQueueSeconds.Add(stepClock.Elapsed.TotalSeconds);
                    timer.Sync();
                    timer.StepSeconds.Add(stepClock.Elapsed.TotalSeconds);
                }
                onStep?.Invoke(i + 1, timesteps.Length);
            }
            if (timer is not null)
            {
                timer.Sync();
                timer.Add("denoise", denoise.Elapsed.TotalSeconds);
                timer.Steps += timesteps.Length;
                timer.SampleMemory();
            }
        }
        finally { _stepTimesteps = null; }
        return sample.MoveToOuterDisposeScope();
    }

    private Dictionary<long, Tensor>? _stepTimesteps;

    /// <summary>
    /// The timestep as a 0-dim int64 tensor on the pipeline's device: inside <see cref="Denoise"/> a view of the
    /// timesteps uploaded once; otherwise a new tensor.
    /// </summary>
    private protected Tensor TimestepTensor(long t) =>
        _stepTimesteps is not null && _stepTimesteps.TryGetValue(t, out var onDevice)
            ? onDevice.alias()
            : torch.tensor(t, dtype: ScalarType.Int64, device: Device);

    /// <summary>
    /// The prompt embeddings of a batch of k images as diffusers' pipelines pass them to the UNet: with guidance (see
    /// <see cref="LensPipeline.UsesGuidance"/>) the unconditional embedding repeated k times, then the k conditional
    /// ones; without it the conditional ones alone (diffusers then does not use the negative prompt).
    /// </summary>
    private protected Tensor BatchEmbeds(IReadOnlyList<Tensor> conditional, Tensor unconditional, double guidance)
    {
        var cond = torch.cat(conditional.Select(c => c.to(DType, Device)).ToList(), 0);
        return RunsClassifierFreeGuidance(guidance)
            ? torch.cat(new[] { unconditional.to(DType, Device).expand(conditional.Count, -1, -1), cond }, 0)
            : cond;
    }

    /// <summary>Whether a guidance scale makes this pipeline run classifier-free guidance (rows [uncond, cond]):
    /// <see cref="LensPipeline.UsesGuidance"/> (scale above 1); never for FLUX, whose guidance is an embedded value.</summary>
    internal virtual bool RunsClassifierFreeGuidance(double guidance) => LensPipeline.UsesGuidance(guidance);

    /// <summary>
    /// Noise as diffusers' randn_tensor draws it from a CPU generator: on the CPU in the pipeline's dtype, then
    /// moved to the device.
    /// </summary>
    private protected Tensor Noise(Generator generator, long[] shape) =>
        torch.randn(shape, dtype: DType, generator: generator).to(Device);

    /// <summary>
    /// diffusers' postprocessing of images in [-1, 1] [k, C, H, W]: (x/2+0.5).clamp(0,1) in the pipeline's dtype, then
    /// float32 HWC on the CPU (output_type="np"), or left on the images' device (<paramref name="onDevice"/>: the sweep
    /// converts to 8 bits there and copies a quarter of the bytes, <see cref="Reports.RgbImage.FromUnitNhwc"/>).
    /// </summary>
    internal static Tensor ToUnitHwc(Tensor images, bool onDevice = false)
    {
        var unit = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).to(ScalarType.Float32).contiguous();
        return onDevice ? unit : unit.cpu();
    }

    /// <summary>The modules that make images from embeddings (UNet, VAE): where --batch-invariant gives every batch the canonical call's numbers.</summary>
    internal abstract IEnumerable<nn.Module> ImageModules { get; }

    /// <summary>Releases the pipeline's modules and weights.</summary>
    public abstract void Dispose();
}
