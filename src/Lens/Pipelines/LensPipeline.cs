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
    public required string Text { get; init; }
    public required long[] InputIds { get; init; }
    public long[]? AttentionMask { get; init; }
    /// <summary>Hidden[L] = output of encoder layer/block L, [1, T, D].</summary>
    public required IReadOnlyList<Tensor> Hidden { get; init; }
    public void Dispose() { foreach (var h in Hidden) h.Dispose(); }
}

/// <summary>Sampling settings of one generation.</summary>
public sealed record GenerationOptions(long Seed, int Steps, double Guidance, int Height, int Width);

/// <summary>The pipeline's defaults, as its diffusers counterpart has them for this model.</summary>
public sealed record PipelineDefaults(int Steps, double Guidance, int Height, int Width);

/// <summary>
/// A text-to-image pipeline that can be lensed: it encodes a prompt once keeping every layer, turns a layer into a
/// conditioning embedding through the encoder's final layer norm, and generates from given embeddings. It never
/// knows it is lensed: the lens only supplies prompt embeddings.
/// </summary>
public abstract partial class LensPipeline : DenoisingPipeline
{

    /// <summary>"sd" or "if".</summary>
    public abstract string Kind { get; }
    public abstract string PipelineName { get; }
    public abstract PipelineDefaults Defaults { get; }
    public required PromptTokenizer Tokenizer { get; init; }
    public abstract ITextEncoder TextEncoder { get; }
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
    public required DiffusersConfig SchedulerConfig { get; init; }
    public string SchedulerName => SchedulerConfig.Str("_class_name", "?");

    /// <summary>scheduler/scheduler_config.json, checked up front so an unknown scheduler fails before weights load.</summary>
    protected static DiffusersConfig LoadSchedulerConfig(ModelIndex index)
    {
        var cfg = DiffusersConfig.Load(Path.Combine(index.Require("scheduler"), "scheduler_config.json"));
        using var check = Scheduler.FromConfig(cfg);
        return cfg;
    }

    /// <summary>The shape of one image's initial noise ([1, C, h, w]); validates the requested size.</summary>
    protected abstract long[] NoiseShape(GenerationOptions o);

    /// <summary>
    /// Whether a guidance scale runs classifier-free guidance: diffusers' <c>do_classifier_free_guidance =
    /// guidance_scale > 1</c>. At 1 or below the pipeline runs the conditional prompt alone (one UNet row per image,
    /// the negative prompt unused), so g = 1 is the plain conditional model and g = 0 is not the unconditional one.
    /// </summary>
    public static bool UsesGuidance(double guidance) => guidance > 1;

    /// <summary>The denoised sample as an image in [-1, 1] (SD: the VAE decode; IF: the sample itself).</summary>
    protected abstract Tensor ToImage(Tensor sample);

    /// <summary>
    /// Generates one image per conditional embedding, all with classifier-free guidance against the same
    /// unconditional embedding and the same seed (each image reproduces diffusers' single-prompt call).
    /// Returns [k, H, W, 3] float32 images in [0, 1] on the CPU (diffusers' output_type="np").
    /// </summary>
    /// <param name="timer">records the denoise and decode phases (and, profiling, each step); null: not timed</param>
    public Tensor Generate(IReadOnlyList<Tensor> conditional, Tensor unconditional, GenerationOptions o,
        Action<int, int>? onStep = null, PhaseTimer? timer = null)
    {
        using var outer = NewDisposeScope();
        // one CPU generator seeded with the seed: the initial noise (and DDPM's per-step variance noise) is drawn as
        // diffusers draws it for a single prompt, and shared by all k images of the batch
        var images = GenerateImages(conditional, unconditional, o, new Generator((ulong)o.Seed), onStep, timer);
        // diffusers' postprocessing: (x/2+0.5).clamp(0,1) in the pipeline's dtype, then float32 HWC
        var decode = Stopwatch.StartNew();
        var unit = ToUnitHwc(images);
        if (timer is not null)
        {
            timer.Add("decode", decode.Elapsed.TotalSeconds);
            timer.SampleMemory();
        }
        return unit.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="Generate"/> before the postprocessing: [k, C, H, W] images in [-1, 1] (not clamped) in the pipeline's
    /// dtype on its device; for DeepFloyd IF what diffusers' <c>output_type="pt"</c> returns and hands to stage II.
    /// Draws from <paramref name="generator"/> as diffusers' pipeline call does (the initial noise, then each step's
    /// variance noise), so a stage II run given the same generator continues its stream as diffusers' documented
    /// two-stage usage does.
    /// </summary>
    public Tensor GenerateImages(IReadOnlyList<Tensor> conditional, Tensor unconditional, GenerationOptions o, Generator generator,
        Action<int, int>? onStep = null, PhaseTimer? timer = null)
    {
        if (conditional.Count == 0) throw new ArgumentException("nothing to generate");
        NoiseShape(o); // validates the size before any work
        using var noGrad = torch.no_grad();
        using var outer = NewDisposeScope();
        int k = conditional.Count;
        using var scheduler = Scheduler.FromConfig(SchedulerConfig);
        scheduler.SetTimesteps(o.Steps);
        scheduler.ShareNoiseAcrossBatch = true;

        var sample = InitialSample(o, scheduler, generator).expand(k, -1, -1, -1).contiguous();

        var embeds = BatchEmbeds(conditional, unconditional, o.Guidance);
        sample = Denoise(scheduler, sample, embeds, o.Guidance, generator, onStep, timer);
        var decode = Stopwatch.StartNew();
        var images = ToImage(sample);
        if (timer is not null)
        {
            timer.Sync();
            timer.Add("decode", decode.Elapsed.TotalSeconds);
        }
        return images.MoveToOuterDisposeScope();
    }


    /// <summary>cpu, cuda or cuda:N (N a visible CUDA device index).</summary>
    public static Device ParseDevice(string device)
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

    public static ScalarType ParseDType(string dtype) => dtype switch
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
    public Tensor InitialSample(GenerationOptions o, Scheduler scheduler, Generator generator)
    {
        using var noise = Noise(generator, NoiseShape(o));
        return noise * scheduler.InitNoiseSigma;
    }
}
