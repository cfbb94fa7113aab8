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
    /// <summary>The embedding output, the input of encoder layer 0 (transformers' <c>hidden_states[0]</c>; CLIP: token +
    /// position embeddings, T5: the embedded tokens), [1, T, D].</summary>
    public required Tensor Embeddings { get; init; }
    /// <summary>Disposes the hidden-state tensors.</summary>
    public void Dispose()
    {
        Embeddings.Dispose();
        foreach (var h in Hidden) h.Dispose();
    }
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
public abstract partial class LensPipeline : DenoisingPipeline
{

    /// <summary>"sd", "sdxl", "if" or "flux".</summary>
    public abstract string Kind { get; }
    /// <summary>The diffusers pipeline class: "StableDiffusionPipeline", "StableDiffusionXLPipeline", "IFPipeline" or "FluxPipeline".</summary>
    public abstract string PipelineName { get; }
    /// <summary>Steps, guidance and size diffusers would use for this model.</summary>
    public abstract PipelineDefaults Defaults { get; }
    internal PromptTokenizer Tokenizer { get; init; } = null!;
    internal abstract ITextEncoder TextEncoder { get; }
    /// <summary>Number of lens layers: lens layers are 0 .. NumLayers - 1 (the text-encoder layers, CLIP layers / T5
    /// blocks; SDXL: text_encoder_2's layers but the last, which its lens recomputes).</summary>
    public virtual int NumLayers => TextEncoder.NumLayers;

    /// <summary>Preprocesses and tokenizes the prompt and runs the text encoder once, keeping every layer.</summary>
    public PromptLayers EncodeLayers(string prompt, bool? cleanCaption = null) =>
        PromptEncoder.EncodeLayers(Tokenizer, TextEncoder, Device, prompt, cleanCaption);

    /// <summary>The lens: the encoder's final layer norm applied to one layer's output.</summary>
    public Tensor Lens(Tensor hidden) => PromptEncoder.Lens(TextEncoder, hidden);

    /// <summary>
    /// The conditional embedding a sweep renders for one index (in <paramref name="numbering"/>) of an encoded prompt:
    /// <see cref="Lens"/> of that state; pipelines whose conditioning is more than one embedding (SDXL) override it.
    /// </summary>
    internal virtual Tensor LensEmbedding(PromptLayers prompt, string numbering, int index) =>
        Lens(Sweep.LayerNumbering.State(prompt, numbering, index));

    /// <summary>The unconditional embedding of the negative prompt: <see cref="Lens"/> of its last layer (the full-depth
    /// encoding), or the pipeline's own (SDXL: zeros for an empty one with force_zeros_for_empty_prompt).</summary>
    internal virtual Tensor Unconditional(string negativePrompt, bool? cleanCaption)
    {
        using var negative = EncodeLayers(negativePrompt, cleanCaption);
        return Lens(negative.Hidden[^1]);
    }

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
        bool flowMatch = check.ClassName == "FlowMatchEulerDiscreteScheduler";
        if (pipelineClass == FluxPipeline.ClassName && !flowMatch)
            throw new LensException($"scheduler {check.ClassName} cannot run a FLUX model: FluxPipeline runs FlowMatchEulerDiscreteScheduler only (its sigmas and image-size shift)");
        if (pipelineClass != FluxPipeline.ClassName && flowMatch)
            throw new LensException($"FlowMatchEulerDiscreteScheduler applies to FLUX models (FluxPipeline) only; this model is a {pipelineClass}");
        if (pipelineClass == "IFPipeline" && IFPipeline.HasLearnedVariance(cfg)
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
    /// <param name="onDevice">leave the images on the pipeline's device (the sweep converts them to 8 bits there)</param>
    internal Tensor Generate(IReadOnlyList<Tensor> conditional, Tensor unconditional, GenerationOptions o,
        Action<int, int>? onStep, PhaseTimer? timer, IReadOnlyList<Generator>? generators = null, bool onDevice = false)
    {
        using var outer = NewDisposeScope();
        // reseed: one CPU generator seeded with the seed, shared by all k calls (they draw the same noise)
        using var seeded = generators is null ? new Generator((ulong)o.Seed) : null;
        var images = GenerateImages(conditional, unconditional, o, generators ?? [seeded!], onStep, timer);
        // diffusers' postprocessing: (x/2+0.5).clamp(0,1) in the pipeline's dtype, then float32 HWC
        var decode = Stopwatch.StartNew();
        var unit = ToUnitHwc(images, onDevice);
        if (timer is not null)
        {
            timer.Add("decode", decode.Elapsed.TotalSeconds);
            timer.SampleMemory();
        }
        return unit.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="Generate"/> before the postprocessing: [k*N, C, H, W] images in [-1, 1] (not clamped) in the pipeline's
    /// dtype on its device; for DeepFloyd IF what diffusers' <c>output_type="pt"</c> returns and hands to stage II.
    /// Draws as diffusers' pipeline calls do (each call's initial noise, then each step's variance noise): with one
    /// generator every call draws the same noise from it (as calls seeded alike do), so a stage II run given that
    /// generator continues its stream as diffusers' documented two-stage usage does; with one generator per
    /// conditional embedding each call draws from its own.
    /// </summary>
    internal Tensor GenerateImages(IReadOnlyList<Tensor> conditional, Tensor unconditional, GenerationOptions o,
        IReadOnlyList<Generator> generators, Action<int, int>? onStep = null, PhaseTimer? timer = null)
    {
        using var noGrad = torch.no_grad();
        using var outer = NewDisposeScope();
        var sample = GenerateSamples(conditional, unconditional, o, generators, onStep, timer);
        var decode = Stopwatch.StartNew();
        var images = ToImage(sample);
        if (timer is not null)
        {
            timer.Sync();
            timer.Add("decode", decode.Elapsed.TotalSeconds);
        }
        return images.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="GenerateImages"/> before the decode: the denoised samples, [k*N, C, h, w] in the pipeline's dtype on its
    /// device (SD: the final latents, diffusers' <c>output_type="latent"</c>; IF: the images).
    /// </summary>
    internal Tensor GenerateSamples(IReadOnlyList<Tensor> conditional, Tensor unconditional, GenerationOptions o,
        IReadOnlyList<Generator> generators, Action<int, int>? onStep = null, PhaseTimer? timer = null)
    {
        if (conditional.Count == 0) throw new ArgumentException("nothing to generate");
        if (generators.Count != 1 && generators.Count != conditional.Count)
            throw new ArgumentException($"{generators.Count} generators for {conditional.Count} embeddings");
        int n = o.ImagesPerPrompt;
        if (n < 1) throw new LensException($"images per prompt must be at least 1 (got {n})");
        var rowShape = NoiseShape(o)[1..]; // validates the size before any work
        using var noGrad = torch.no_grad();
        using var outer = NewDisposeScope();
        int k = conditional.Count;
        using var scheduler = CreateScheduler();
        SetTimesteps(scheduler, o);

        // diffusers draws a call's initial noise (and DDPM's per-step variance noise) from its CPU generator as randn of
        // the call's shape [N, ...]: one group per embedding, or one group shared by all
        var plan = generators.Count == 1
            ? NoisePlan.Shared(generators[0], n, k)
            : new NoisePlan(generators.Select(g => new NoisePlan.Group(g, n)).ToList());
        scheduler.BatchNoise = plan;
        var sample = InitialSample(plan, rowShape, scheduler);

        // each embedding's N rows (diffusers: prompt_embeds.repeat(1, N, 1).view(N, T, D)), embedding-major; the negative
        // prompt only when guidance runs
        var embeds = BatchEmbeds(conditional.SelectMany(c => Enumerable.Repeat(c, n)).ToList(), unconditional, o.Guidance);
        sample = Denoise(scheduler, sample, embeds, o.Guidance, null, onStep, timer);
        return sample.MoveToOuterDisposeScope();
    }


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
        using var scheduler = CreateScheduler();
        SetTimesteps(scheduler, o);
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

    /// <summary>The scheduler's schedule for one generation: diffusers' <c>set_timesteps(num_inference_steps)</c>, or the
    /// pipeline's own call (FLUX: its sigmas and the image-size shift mu).</summary>
    private protected virtual void SetTimesteps(Scheduler scheduler, GenerationOptions o) => scheduler.SetTimesteps(o.Steps);

    /// <summary>Channels of the prediction a denoising step hands the scheduler (IF with a learned variance: twice the image's).</summary>
    private protected virtual int PredictionChannels(int sampleChannels) => sampleChannels;

}
