using System.Diagnostics;
using DiffusionLens.Loading;
using DiffusionLens.Reports;
using DiffusionLens.Schedulers;
using DiffusionLens.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>The prompt's tokens and the output of every text-encoder layer (before the final layer norm).</summary>
public sealed class PromptLayers : IDisposable
{
    /// <summary>The prompt as the tokenizer saw it (IF: after caption cleaning).</summary>
    public required string Text { get; init; }
    /// <summary>The token ids, padded to the encoder's length.</summary>
    public required long[] InputIds { get; init; }
    /// <summary>The attention mask (IF / T5); null for CLIP.</summary>
    public long[]? AttentionMask { get; init; }
    /// <summary>Hidden[L] = output of encoder layer/block L, [1, T, D].</summary>
    public required IReadOnlyList<Tensor> Hidden { get; init; }
    /// <summary>Disposes the hidden-state tensors.</summary>
    public void Dispose() { foreach (var h in Hidden) h.Dispose(); }
}

/// <summary>Sampling settings of one generation.</summary>
/// <param name="Seed">seed of diffusers' CPU generator</param>
/// <param name="Steps">denoising steps</param>
/// <param name="Guidance">classifier-free guidance scale (guidance runs only above 1, as in diffusers)</param>
/// <param name="Height">image height in pixels</param>
/// <param name="Width">image width in pixels</param>
public sealed record GenerationOptions(long Seed, int Steps, double Guidance, int Height, int Width)
{
    /// <summary>diffusers' <c>num_images_per_prompt</c>: images per conditional embedding, drawn together from its generator.</summary>
    public int ImagesPerPrompt { get; init; } = 1;
}

/// <summary>The pipeline's defaults, as its diffusers counterpart has them for this model.</summary>
/// <param name="Steps">denoising steps</param>
/// <param name="Guidance">guidance scale</param>
/// <param name="Height">image height in pixels</param>
/// <param name="Width">image width in pixels</param>
public sealed record PipelineDefaults(int Steps, double Guidance, int Height, int Width);

/// <summary>
/// A text-to-image pipeline that can be lensed: it encodes a prompt once keeping every layer, turns a layer into a
/// conditioning embedding through the encoder's final layer norm, and generates from given embeddings. It never
/// knows it is lensed: the lens only supplies prompt embeddings.
/// </summary>
public abstract partial class LensPipeline : IDisposable
{
    /// <summary>The diffusers model folder.</summary>
    public required string ModelDir { get; init; }
    /// <summary>The device the pipeline runs on.</summary>
    public required Device Device { get; init; }
    /// <summary>The dtype the pipeline computes in.</summary>
    public required ScalarType DType { get; init; }

    /// <summary>"sd" or "if".</summary>
    public abstract string Kind { get; }
    /// <summary>The diffusers pipeline class: "StableDiffusionPipeline" or "IFPipeline".</summary>
    public abstract string PipelineName { get; }
    /// <summary>Steps, guidance and size diffusers would use for this model.</summary>
    public abstract PipelineDefaults Defaults { get; }
    internal PromptTokenizer Tokenizer { get; init; } = null!;
    internal abstract ITextEncoder TextEncoder { get; }
    /// <summary>Number of text-encoder layers (CLIP layers / T5 blocks): lens layers are 0 .. NumLayers - 1.</summary>
    public int NumLayers => TextEncoder.NumLayers;

    /// <summary>Preprocesses and tokenizes the prompt and runs the text encoder once, keeping every layer.</summary>
    public PromptLayers EncodeLayers(string prompt, bool? cleanCaption = null) =>
        PromptEncoder.EncodeLayers(Tokenizer, TextEncoder, Device, prompt, cleanCaption);

    /// <summary>The lens: the encoder's final layer norm applied to one layer's output.</summary>
    public Tensor Lens(Tensor hidden) => PromptEncoder.Lens(TextEncoder, hidden);

    /// <summary>The full-depth prompt embedding the stock pipeline uses (= Lens of the last layer).</summary>
    public Tensor EncodeStock(string prompt, bool? cleanCaption = null)
    {
        using var layers = EncodeLayers(prompt, cleanCaption);
        return Lens(layers.Hidden[^1]);
    }

    /// <summary>The pipeline's scheduler config (scheduler/scheduler_config.json).</summary>
    internal DiffusersConfig SchedulerConfig { get; init; } = null!;
    /// <summary>The scheduler class chosen instead of the model's own (<c>--scheduler</c>), built from the model's
    /// scheduler config as diffusers' <c>SchedulerClass.from_config(pipe.scheduler.config)</c>; null: the model's own.</summary>
    internal string? SchedulerClass { get; init; }
    /// <summary>The diffusers class name of the scheduler the pipeline runs.</summary>
    internal string SchedulerName => SchedulerClass ?? SchedulerConfig.Str("_class_name", "?");

    /// <summary>A new scheduler of the pipeline's class and config (one per generation, as its state is per run).</summary>
    internal Scheduler CreateScheduler() => Scheduler.FromConfig(SchedulerConfig, SchedulerClass);

    /// <summary>The configuration the pipeline's scheduler runs with (<see cref="Scheduler.EffectiveConfig"/>).</summary>
    internal SortedDictionary<string, System.Text.Json.Nodes.JsonNode?> SchedulerEffectiveConfig()
    {
        using var s = CreateScheduler();
        return new SortedDictionary<string, System.Text.Json.Nodes.JsonNode?>(
            s.EffectiveConfig.ToDictionary(kv => kv.Key, kv => kv.Value?.DeepClone()), StringComparer.Ordinal);
    }

    /// <summary>
    /// scheduler/scheduler_config.json, checked up front (with the chosen class, if any) so an unknown scheduler or an
    /// unsupported option fails before weights load.
    /// </summary>
    private protected static DiffusersConfig LoadSchedulerConfig(ModelIndex index, string? schedulerClass = null)
    {
        var cfg = DiffusersConfig.Load(Path.Combine(index.Require("scheduler"), "scheduler_config.json"));
        CheckScheduler(index.ClassName, cfg, schedulerClass);
        return cfg;
    }

    /// <summary>
    /// Builds the scheduler once to validate its config, and refuses a scheduler the pipeline cannot drive: IF with a
    /// learned variance (variance_type learned/learned_range) hands the step a model output with the predicted variance,
    /// which only DDPMScheduler and DPMSolverMultistepScheduler take (diffusers' step fails on it with the others).
    /// </summary>
    internal static void CheckScheduler(string pipelineClass, DiffusersConfig cfg, string? schedulerClass)
    {
        using var check = Scheduler.FromConfig(cfg, schedulerClass);
        if (pipelineClass == "IFPipeline" && cfg.StrOrNull("variance_type") is "learned" or "learned_range"
            && check.ClassName is not ("DDPMScheduler" or "DPMSolverMultistepScheduler"))
            throw new LensException($"scheduler {check.ClassName} cannot run this IF model: its scheduler config has variance_type '{cfg.Str("variance_type")}', so the pipeline passes the predicted variance to the step, which only DDPMScheduler and DPMSolverMultistepScheduler take (diffusers fails the same way)");
    }

    /// <summary>The shape of one image's initial noise ([1, C, h, w]); validates the requested size.</summary>
    private protected abstract long[] NoiseShape(GenerationOptions o);

    /// <summary>
    /// Whether a guidance scale runs classifier-free guidance: diffusers' <c>do_classifier_free_guidance =
    /// guidance_scale > 1</c>. At 1 or below the pipeline runs the conditional prompt alone (one UNet row per image,
    /// the negative prompt unused), so g = 1 is the plain conditional model and g = 0 is not the unconditional one.
    /// </summary>
    public static bool UsesGuidance(double guidance) => guidance > 1;

    /// <summary>
    /// One denoising step's model call as the diffusers pipeline makes it: with guidance the sample doubled for
    /// [uncond, cond], scaled by the scheduler, the UNet, and classifier-free guidance; without it (see
    /// <see cref="UsesGuidance"/>) the sample once, the conditional rows alone.
    /// </summary>
    /// <param name="embeds">with guidance [2k, T, D]: k unconditional rows, then k conditional rows; without it [k, T, D]</param>
    internal abstract Tensor GuidedPrediction(Scheduler scheduler, Tensor sample, long t, Tensor embeds, double guidance);

    /// <summary>The denoised sample as an image in [-1, 1] (SD: the VAE decode; IF: the sample itself).</summary>
    private protected abstract Tensor ToImage(Tensor sample);

    /// <summary>
    /// Generates <see cref="GenerationOptions.ImagesPerPrompt"/> images per conditional embedding, all with
    /// classifier-free guidance against the same unconditional embedding; each embedding's images reproduce diffusers'
    /// single-prompt call with <c>num_images_per_prompt</c> and a CPU generator: by default every call's generator is
    /// seeded with the seed (the same noise for all), or each embedding has its own generator (the sweep's <c>--seed-policy continue</c>,
    /// e.g. one generator consumed call after call). Returns [k*N, H, W, 3] float32 images in [0, 1] on the CPU
    /// (diffusers' output_type="np"), embedding-major.
    /// </summary>
    /// <param name="conditional">one [1, T, D] prompt embedding per layer (e.g. <see cref="Lens"/> of a layer)</param>
    /// <param name="unconditional">the [1, T, D] negative-prompt embedding (<see cref="EncodeStock"/> of the negative prompt)</param>
    /// <param name="o">seed, steps, guidance, size and images per prompt</param>
    /// <param name="onStep">called after each denoising step with (step, of)</param>
    public Tensor Generate(IReadOnlyList<Tensor> conditional, Tensor unconditional, GenerationOptions o,
        Action<int, int>? onStep = null) => Generate(conditional, unconditional, o, onStep, timer: null);

    /// <param name="timer">records the denoise and decode phases (and, profiling, each step); null: not timed</param>
    /// <param name="generators">one CPU generator per conditional embedding, in its state at the start of that
    /// embedding's call (used, not copied); null: a generator seeded with <c>o.Seed</c> for every embedding</param>
    internal Tensor Generate(IReadOnlyList<Tensor> conditional, Tensor unconditional, GenerationOptions o,
        Action<int, int>? onStep, PhaseTimer? timer, IReadOnlyList<Generator>? generators = null)
    {
        if (conditional.Count == 0) throw new ArgumentException("nothing to generate");
        if (generators is not null && generators.Count != conditional.Count)
            throw new ArgumentException($"{generators.Count} generators for {conditional.Count} embeddings");
        int n = o.ImagesPerPrompt;
        if (n < 1) throw new LensException($"images per prompt must be at least 1 (got {n})");
        var rowShape = NoiseShape(o)[1..]; // validates the size before any work
        using var noGrad = torch.no_grad();
        using var outer = NewDisposeScope();
        int k = conditional.Count;
        using var scheduler = CreateScheduler();
        scheduler.SetTimesteps(o.Steps);
        var timesteps = scheduler.Timesteps;

        // diffusers draws the initial noise (and DDPM's per-step variance noise) of a call from its CPU generator as
        // randn of the call's shape [N, ...]: one group per embedding, or one group shared by all with one seed
        using var seeded = generators is null ? new Generator((ulong)o.Seed) : null;
        var plan = generators is null
            ? NoisePlan.Shared(seeded!, n, k)
            : new NoisePlan(generators.Select(g => new NoisePlan.Group(g, n)).ToList());
        scheduler.BatchNoise = plan;
        var sample = InitialSample(plan, rowShape, scheduler);

        // each embedding's N rows (diffusers: prompt_embeds.repeat(1, N, 1).view(N, T, D)), embedding-major
        var cond = torch.cat(conditional.Select(c => c.to(DType, Device)).ToList(), 0);
        if (n > 1) cond = cond.repeat_interleave(n, 0);
        // diffusers: the negative prompt is only used when guidance runs
        var embeds = UsesGuidance(o.Guidance)
            ? torch.cat(new[] { unconditional.to(DType, Device).expand(k * n, -1, -1), cond }, 0)
            : cond;
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
                var prediction = GuidedPrediction(scheduler, sample, t, embeds, o.Guidance);
                sample = scheduler.Step(prediction, t, sample, null).MoveToOuterDisposeScope();
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
        // diffusers' postprocessing: (x/2+0.5).clamp(0,1) in the pipeline's dtype, then float32 HWC
        var decode = Stopwatch.StartNew();
        var unit = (ToImage(sample) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).to(ScalarType.Float32).contiguous().cpu();
        if (timer is not null)
        {
            timer.Add("decode", decode.Elapsed.TotalSeconds);
            timer.SampleMemory();
        }
        return unit.MoveToOuterDisposeScope();
    }

    private Dictionary<long, Tensor>? _stepTimesteps;

    /// <summary>
    /// The timestep as a 0-dim int64 tensor on the pipeline's device: inside Generate a view of the
    /// timesteps uploaded once; otherwise a new tensor.
    /// </summary>
    private protected Tensor TimestepTensor(long t) =>
        _stepTimesteps is not null && _stepTimesteps.TryGetValue(t, out var onDevice)
            ? onDevice.alias()
            : torch.tensor(t, dtype: ScalarType.Int64, device: Device);

    /// <summary>Releases the pipeline's modules and weights.</summary>
    public abstract void Dispose();

    /// <summary>cpu, cuda or cuda:N (N a visible CUDA device index).</summary>
    internal static Device ParseDevice(string device)
    {
        if (device == "cpu") return torch.CPU;
        int index = 0;
        bool isCuda = device == "cuda" || device.StartsWith("cuda:", StringComparison.Ordinal)
            && int.TryParse(device.AsSpan(5), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out index);
        if (!isCuda) throw new LensException($"unknown device '{device}'; use cpu, cuda or cuda:N");
        if (!torch.cuda.is_available())
            throw new LensException($"--device {device}: CUDA is not available to this TorchSharp build (libtorch: {TorchRuntime.Source}); build with -p:TorchBackend=managed on a host with PyTorch (or set LENS_TORCH_LIB to its torch/lib), see README 'On a CUDA GPU'");
        int count = torch.cuda.device_count();
        if (index >= count) throw new LensException($"--device {device}: there is no CUDA device {index} ({count} visible: cuda:0..cuda:{count - 1})");
        return index == 0 ? torch.CUDA : torch.device(DeviceType.CUDA, index);
    }

    internal static ScalarType ParseDType(string dtype) => dtype switch
    {
        "float32" or "fp32" => ScalarType.Float32,
        "float16" or "fp16" => ScalarType.Float16,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        _ => throw new LensException($"unknown dtype '{dtype}'; use float32, float16 or bfloat16"),
    };

    /// <summary>
    /// One image's initial sample as the diffusers pipeline prepares it: noise of <see cref="NoiseShape"/> drawn from
    /// <paramref name="generator"/> (diffusers' CPU generator seeded with the seed), times the scheduler's init sigma.
    /// [1, C, h, w] on the pipeline's device and dtype.
    /// </summary>
    internal Tensor InitialSample(GenerationOptions o, Scheduler scheduler, Generator generator)
    {
        using var noise = Noise(generator, NoiseShape(o));
        // latents * scheduler.init_noise_sigma (1.0, or a float32 sigma for Euler: exact as a double)
        return noise * scheduler.InitNoiseSigma;
    }

    /// <summary>The batch's initial sample: the plan's noise (one draw per call, as diffusers' prepare_latents) times
    /// the scheduler's init sigma, on the pipeline's device and dtype.</summary>
    private Tensor InitialSample(NoisePlan plan, long[] rowShape, Scheduler scheduler)
    {
        using var noise = plan.Draw(rowShape, DType, Device);
        return noise * scheduler.InitNoiseSigma;
    }

    /// <summary>
    /// Advances <paramref name="generator"/> past everything one pipeline call with these options draws from it (the
    /// initial noise, then each scheduler step's noise), by making the same draws: the same scheduler steps run on the
    /// CPU on zero tensors of the call's shapes, so the count of draws is the scheduler's own. For a generator that is
    /// consumed call after call (<c>--seed-policy continue</c>).
    /// </summary>
    internal void ConsumeCallNoise(Generator generator, GenerationOptions o)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        using var scheduler = Scheduler.FromConfig(SchedulerConfig);
        scheduler.SetTimesteps(o.Steps);
        var shape = NoiseShape(o);
        shape[0] = o.ImagesPerPrompt;
        torch.randn(shape, dtype: DType, device: torch.CPU, generator: generator);
        var sample = torch.zeros(shape, dtype: DType, device: torch.CPU);
        var predShape = (long[])shape.Clone();
        predShape[1] = PredictionChannels((int)shape[1]);
        var prediction = torch.zeros(predShape, dtype: DType, device: torch.CPU);
        foreach (var t in scheduler.Timesteps)
        {
            using var step = NewDisposeScope();
            scheduler.Step(prediction, t, sample, generator);
        }
    }

    /// <summary>Channels of the prediction a denoising step hands the scheduler (IF with a learned variance: twice the image's).</summary>
    private protected virtual int PredictionChannels(int sampleChannels) => sampleChannels;

    /// <summary>
    /// Noise as diffusers' randn_tensor draws it from a CPU generator: on the CPU in the pipeline's dtype, then
    /// moved to the device.
    /// </summary>
    private protected Tensor Noise(Generator generator, long[] shape) =>
        torch.randn(shape, dtype: DType, generator: generator).to(Device);
}
