using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Schedulers;
using DiffusionLens.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>
/// diffusers' IFPipeline (DeepFloyd IF stage I): caption preprocessing + T5 tokenizer -> T5EncoderModel ->
/// pixel-space UNet denoising with DDPM; guidance on the noise half of the prediction only, the predicted variance
/// taken from the conditional half; output (x/2+0.5).clamp(0,1). No watermark, no safety checker.
/// </summary>
public sealed class IFPipeline : LensPipeline
{
    public required T5EncoderModel T5 { get; init; }
    public override ITextEncoder TextEncoder => T5;
    public required UNet2DConditionModel UNet { get; init; }
    public required DiffusersConfig SchedulerConfig { get; init; }

    public override string Kind => "if";
    public override string PipelineName => "IFPipeline";
    public override string SchedulerName => SchedulerConfig.Str("_class_name", "?");

    public override PipelineDefaults Defaults
    {
        get
        {
            int size = UNet.SampleSize ?? 64;
            return new PipelineDefaults(100, 7.0, size, size);
        }
    }

    public static IFPipeline Load(ModelIndex index, Device device, ScalarType dtype)
    {
        var schedCfg = DiffusersConfig.Load(Path.Combine(index.Require("scheduler"), "scheduler_config.json"));
        Scheduler.FromConfig(schedCfg); // fails early on an unknown scheduler
        return new IFPipeline
        {
            ModelDir = index.Folder,
            Device = device,
            DType = dtype,
            Tokenizer = PromptTokenizer.Load(index),
            T5 = T5EncoderModel.FromFolder(index.Require("text_encoder"), device, dtype),
            UNet = ComponentLoader.LoadUNet(index.Require("unet"), device, dtype),
            SchedulerConfig = schedCfg,
        };
    }

    public override Tensor Generate(IReadOnlyList<Tensor> conditional, Tensor unconditional, GenerationOptions o,
        Action<int, int>? onStep = null)
    {
        if (conditional.Count == 0) throw new ArgumentException("nothing to generate");
        using var noGrad = torch.no_grad();
        using var outer = NewDisposeScope();
        int k = conditional.Count;
        using var scheduler = Scheduler.FromConfig(SchedulerConfig);
        scheduler.SetTimesteps(o.Steps);
        scheduler.ShareNoiseAcrossBatch = true;
        var timesteps = scheduler.Timesteps;

        // one CPU generator: the initial images and every step's variance noise are drawn as diffusers draws them
        // for a single prompt, and shared by all k images of the batch
        var generator = new Generator((ulong)o.Seed);
        var shape = new long[] { 1, UNet.InChannels, o.Height, o.Width };
        var images = (Noise(generator, shape) * scheduler.InitNoiseSigma).expand(k, -1, -1, -1).contiguous();

        var cond = torch.cat(conditional.Select(c => c.to(DType, Device)).ToList(), 0);
        var uncond = unconditional.to(DType, Device).expand(k, -1, -1);
        var embeds = torch.cat(new[] { uncond, cond }, 0);
        for (int i = 0; i < timesteps.Length; i++)
        {
            using var step = NewDisposeScope();
            long t = timesteps[i];
            var noisePred = GuidedPrediction(scheduler, images, t, embeds, o.Guidance);
            var next = scheduler.Step(noisePred, t, images, generator);
            images = next.MoveToOuterDisposeScope();
            onStep?.Invoke(i + 1, timesteps.Length);
        }
        var unit = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).to(ScalarType.Float32).contiguous().cpu();
        return unit.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One denoising step's model call as diffusers' IF pipeline makes it: the images doubled for [uncond, cond],
    /// the UNet, guidance on the noise half only (uncond + g * (cond - uncond)), the predicted variance of the
    /// conditional half appended; without a learned variance the prediction is cut to the noise half.
    /// </summary>
    /// <param name="embeds">[2k, T, D]: k unconditional rows, then k conditional rows</param>
    public Tensor GuidedPrediction(Scheduler scheduler, Tensor images, long t, Tensor embeds, double guidance)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        long channels = images.shape[1];
        var tT = torch.tensor(t, dtype: ScalarType.Int64, device: Device);
        var input = scheduler.ScaleModelInput(torch.cat(new[] { images, images }, 0), t);
        var halves = UNet.Forward(input, tT, embeds).chunk(2, 0);
        var uncondEps = halves[0].split(channels, 1)[0];
        var textParts = halves[1].split(channels, 1);
        var noisePred = uncondEps + guidance * (textParts[0] - uncondEps);
        if (textParts.Length > 1) noisePred = torch.cat(new[] { noisePred, textParts[1] }, 1);
        bool learnedVariance = SchedulerConfig.Str("variance_type", "fixed_small") is "learned" or "learned_range";
        if (!learnedVariance && noisePred.shape[1] != channels) noisePred = noisePred.split(channels, 1)[0];
        return noisePred.MoveToOuterDisposeScope();
    }

    public override void Dispose()
    {
        T5.Dispose();
        UNet.Dispose();
    }
}
