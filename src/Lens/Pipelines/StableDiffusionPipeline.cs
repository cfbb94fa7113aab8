using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Schedulers;
using DiffusionLens.TextEncoders;
using DiffusionLens.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>
/// diffusers' StableDiffusionPipeline (text-to-image, classifier-free guidance with the batch order [uncond, cond]):
/// CLIP tokenizer + CLIPTextModel -> UNet2DConditionModel denoising loop with the configured scheduler ->
/// AutoencoderKL decode of latents / scaling_factor -> (x/2+0.5).clamp(0,1).
/// </summary>
public sealed class StableDiffusionPipeline : LensPipeline
{
    public required ClipTextModel Clip { get; init; }
    public override ITextEncoder TextEncoder => Clip;
    public required UNet2DConditionModel UNet { get; init; }
    public required AutoencoderKL Vae { get; init; }
    public required DiffusersConfig SchedulerConfig { get; init; }

    public override string Kind => "sd";
    public override string PipelineName => "StableDiffusionPipeline";
    public override string SchedulerName => SchedulerConfig.Str("_class_name", "?");
    public int VaeScaleFactor => Vae.ScaleFactor;

    public override PipelineDefaults Defaults
    {
        get
        {
            int size = (UNet.SampleSize ?? 64) * VaeScaleFactor;
            return new PipelineDefaults(50, 7.5, size, size);
        }
    }

    public static StableDiffusionPipeline Load(ModelIndex index, Device device, ScalarType dtype)
    {
        var teDir = index.Require("text_encoder");
        var schedCfg = DiffusersConfig.Load(Path.Combine(index.Require("scheduler"), "scheduler_config.json"));
        Scheduler.FromConfig(schedCfg); // fails early on an unknown scheduler
        return new StableDiffusionPipeline
        {
            ModelDir = index.Folder,
            Device = device,
            DType = dtype,
            Tokenizer = PromptTokenizer.Load(index),
            Clip = ClipTextModel.FromFolder(teDir, device, dtype),
            UNet = ComponentLoader.LoadUNet(index.Require("unet"), device, dtype),
            Vae = ComponentLoader.LoadVae(index.Require("vae"), device, dtype),
            SchedulerConfig = schedCfg,
        };
    }

    public override Tensor Generate(IReadOnlyList<Tensor> conditional, Tensor unconditional, GenerationOptions o,
        Action<int, int>? onStep = null)
    {
        if (conditional.Count == 0) throw new ArgumentException("nothing to generate");
        if (o.Height % 8 != 0 || o.Width % 8 != 0)
            throw new LensException($"height and width must be divisible by 8 (got {o.Height}x{o.Width}), as diffusers requires");
        using var noGrad = torch.no_grad();
        using var outer = NewDisposeScope();
        int k = conditional.Count;
        using var scheduler = Scheduler.FromConfig(SchedulerConfig);
        scheduler.SetTimesteps(o.Steps);
        scheduler.ShareNoiseAcrossBatch = true;
        var timesteps = scheduler.Timesteps;

        // one CPU generator seeded with the seed: every image starts from diffusers' latents for that seed
        var generator = new Generator((ulong)o.Seed);
        var shape = new long[] { 1, UNet.InChannels, o.Height / VaeScaleFactor, o.Width / VaeScaleFactor };
        var latents = (Noise(generator, shape) * scheduler.InitNoiseSigma).expand(k, -1, -1, -1).contiguous();

        var cond = torch.cat(conditional.Select(c => c.to(DType, Device)).ToList(), 0);
        var uncond = unconditional.to(DType, Device).expand(k, -1, -1);
        var embeds = torch.cat(new[] { uncond, cond }, 0);
        for (int i = 0; i < timesteps.Length; i++)
        {
            using var step = NewDisposeScope();
            long t = timesteps[i];
            var guided = GuidedNoise(scheduler, latents, t, embeds, o.Guidance);
            var next = scheduler.Step(guided, t, latents, generator);
            latents = next.MoveToOuterDisposeScope();
            onStep?.Invoke(i + 1, timesteps.Length);
        }
        // the SD pipeline decodes latents / scaling_factor (it does not apply a shift_factor)
        var image = Vae.Decode(latents / Vae.ScalingFactor);
        var unit = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).to(ScalarType.Float32).contiguous().cpu();
        return unit.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One denoising step's model call as diffusers makes it: the latents doubled for [uncond, cond], scaled by the
    /// scheduler, the UNet, and classifier-free guidance uncond + g * (cond - uncond).
    /// </summary>
    /// <param name="embeds">[2k, T, D]: k unconditional rows, then k conditional rows</param>
    public Tensor GuidedNoise(Scheduler scheduler, Tensor latents, long t, Tensor embeds, double guidance)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var tT = torch.tensor(t, dtype: ScalarType.Int64, device: Device);
        var input = scheduler.ScaleModelInput(torch.cat(new[] { latents, latents }, 0), t);
        var parts = UNet.Forward(input, tT, embeds).chunk(2, 0);
        return (parts[0] + guidance * (parts[1] - parts[0])).MoveToOuterDisposeScope();
    }

    public override void Dispose()
    {
        Clip.Dispose();
        UNet.Dispose();
        Vae.Dispose();
    }
}
