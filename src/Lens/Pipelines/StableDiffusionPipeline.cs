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
internal sealed class StableDiffusionPipeline : LensPipeline
{
    public required ClipTextModel Clip { get; init; }
    internal override ITextEncoder TextEncoder => Clip;
    public required UNet2DConditionModel UNet { get; init; }
    public required AutoencoderKL Vae { get; init; }

    public override string Kind => "sd";
    public override string PipelineName => "StableDiffusionPipeline";
    public int VaeScaleFactor => Vae.ScaleFactor;

    public override PipelineDefaults Defaults
    {
        get
        {
            int size = (UNet.SampleSize ?? 64) * VaeScaleFactor;
            return new PipelineDefaults(50, 7.5, size, size);
        }
    }

    public static StableDiffusionPipeline Load(ModelIndex index, Device device, ScalarType dtype, string? variant = null, string? schedulerClass = null)
    {
        return new StableDiffusionPipeline
        {
            ModelDir = index.Folder,
            Device = device,
            DType = dtype,
            SchedulerConfig = LoadSchedulerConfig(index, schedulerClass), // first: an unknown scheduler fails before weights load
            SchedulerClass = schedulerClass,
            Tokenizer = PromptTokenizer.Load(index),
            Clip = ClipTextModel.FromFolder(index.Require("text_encoder"), device, dtype, WeightSet.ComponentVariant(index.Require("text_encoder"), variant)),
            UNet = ComponentLoader.LoadUNet(index.Require("unet"), device, dtype, WeightSet.ComponentVariant(index.Require("unet"), variant)),
            Vae = ComponentLoader.LoadVae(index.Require("vae"), device, dtype, WeightSet.ComponentVariant(index.Require("vae"), variant)),
        };
    }

    private protected override long[] NoiseShape(GenerationOptions o)
    {
        if (o.Height % 8 != 0 || o.Width % 8 != 0)
            throw new LensException($"height and width must be divisible by 8 (got {o.Height}x{o.Width}), as diffusers requires");
        return new long[] { 1, UNet.InChannels, o.Height / VaeScaleFactor, o.Width / VaeScaleFactor };
    }

    /// <summary>The SD pipeline decodes latents / scaling_factor (it does not apply a shift_factor).</summary>
    private protected override Tensor ToImage(Tensor latents)
    {
        using var scaled = latents / Vae.ScalingFactor;
        return Vae.Decode(scaled);
    }

    /// <summary>
    /// Classifier-free guidance on the whole prediction, uncond + g * (cond - uncond), when
    /// <see cref="LensPipeline.UsesGuidance"/>; otherwise the UNet's prediction for the conditional rows alone.
    /// </summary>
    internal override Tensor GuidedPrediction(Scheduler scheduler, Tensor latents, long t, Tensor embeds, double guidance)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var tT = TimestepTensor(t);
        if (!UsesGuidance(guidance))
            return UNet.Forward(scheduler.ScaleModelInput(latents, t), tT, embeds).MoveToOuterDisposeScope();
        var input = scheduler.ScaleModelInput(torch.cat(new[] { latents, latents }, 0), t);
        // --batch-invariant: each layer's [uncond, cond] rows together, as --batch 1 runs them (identity otherwise)
        var parts = Models.BatchInvariance.ToBlockMajor(
            UNet.Forward(Models.BatchInvariance.ToLayerMajor(input, 2), tT, Models.BatchInvariance.ToLayerMajor(embeds, 2)), 2).chunk(2, 0);
        return (parts[0] + guidance * (parts[1] - parts[0])).MoveToOuterDisposeScope();
    }

    internal override IEnumerable<nn.Module> ImageModules => [UNet, Vae];

    public override void Dispose()
    {
        Clip.Dispose();
        UNet.Dispose();
        Vae.Dispose();
    }
}
