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
internal sealed class IFPipeline : LensPipeline
{
    public required T5EncoderModel T5 { get; init; }
    internal override ITextEncoder TextEncoder => T5;
    public required UNet2DConditionModel UNet { get; init; }

    public override string Kind => "if";
    public override string PipelineName => "IFPipeline";

    public override PipelineDefaults Defaults
    {
        get
        {
            int size = UNet.SampleSize ?? 64;
            return new PipelineDefaults(100, 7.0, size, size);
        }
    }

    public static IFPipeline Load(ModelIndex index, Device device, ScalarType dtype, string? variant = null, string? schedulerClass = null)
    {
        return new IFPipeline
        {
            ModelDir = index.Folder,
            Device = device,
            DType = dtype,
            SchedulerConfig = LoadSchedulerConfig(index, schedulerClass), // first: an unknown scheduler fails before weights load
            SchedulerClass = schedulerClass,
            Tokenizer = PromptTokenizer.Load(index),
            T5 = T5EncoderModel.FromFolder(index.Require("text_encoder"), device, dtype, WeightSet.ComponentVariant(index.Require("text_encoder"), variant)),
            UNet = ComponentLoader.LoadUNet(index.Require("unet"), device, dtype, WeightSet.ComponentVariant(index.Require("unet"), variant)),
        };
    }

    private protected override long[] NoiseShape(GenerationOptions o)
    {
        CheckSize(o.Height, o.Width);
        return new long[] { 1, UNet.InChannels, o.Height, o.Width };
    }

    /// <summary>IF's UNet upsamples with resnets: the size must be a multiple of its total downsampling.</summary>
    public void CheckSize(int height, int width)
    {
        int m = UNet.SizeMultiple;
        if (height % m != 0 || width % m != 0)
            throw new LensException($"height and width must be multiples of {m} for this IF UNet ({UNet.NumUpsamplers} resnet upsamplers; got {height}x{width}); nearest: {height / m * m}x{width / m * m} or {(height + m - 1) / m * m}x{(width + m - 1) / m * m}");
    }

    /// <summary>IF stage I denoises in pixel space: the sample is the image.</summary>
    private protected override Tensor ToImage(Tensor images) => images.alias();

    /// <summary>
    /// With <see cref="LensPipeline.UsesGuidance"/>: guidance on the noise half only (uncond + g * (cond - uncond)), the
    /// predicted variance of the conditional half appended; otherwise the UNet's prediction for the conditional rows
    /// alone. Without a learned variance the prediction is cut to the noise half.
    /// </summary>
    internal override Tensor GuidedPrediction(Scheduler scheduler, Tensor images, long t, Tensor embeds, double guidance)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        bool guided = UsesGuidance(guidance);
        var input = scheduler.ScaleModelInput(guided ? torch.cat(new[] { images, images }, 0) : images, t);
        // --batch-invariant: each layer's [uncond, cond] rows together, as --batch 1 runs them (identity otherwise)
        long blocks = guided ? 2 : 1;
        var output = Models.BatchInvariance.ToBlockMajor(UNet.Forward(Models.BatchInvariance.ToLayerMajor(input, blocks), TimestepTensor(t),
            Models.BatchInvariance.ToLayerMajor(embeds, blocks)), blocks);
        return CombineGuided(output, images.shape[1], guidance, SchedulerConfig).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The IF pipelines' guidance on a UNet output (stage I and the super-resolution stage alike): with
    /// <see cref="LensPipeline.UsesGuidance"/> [uncond; cond] halves, guidance on the noise channels only
    /// (uncond + g * (cond - uncond)) and the conditional half's predicted variance appended; otherwise the output as
    /// it is. Without a learned variance (scheduler variance_type) the prediction is cut to the noise channels.
    /// </summary>
    /// <param name="channels">the noise channels: the sample's channels (diffusers: model_input.shape[1] // 2 for stage II)</param>
    internal static Tensor CombineGuided(Tensor unetOutput, long channels, double guidance, DiffusersConfig schedulerConfig)
    {
        Tensor noisePred = unetOutput;
        if (UsesGuidance(guidance))
        {
            var halves = unetOutput.chunk(2, 0);
            var uncondEps = halves[0].split(channels, 1)[0];
            var textParts = halves[1].split(channels, 1);
            noisePred = uncondEps + guidance * (textParts[0] - uncondEps);
            if (textParts.Length > 1) noisePred = torch.cat(new[] { noisePred, textParts[1] }, 1);
        }
        if (!HasLearnedVariance(schedulerConfig) && noisePred.shape[1] != channels) noisePred = noisePred.split(channels, 1)[0];
        return noisePred;
    }

    /// <summary>Whether the scheduler config's variance_type is learned / learned_range (the UNet predicts the variance too).</summary>
    internal static bool HasLearnedVariance(DiffusersConfig schedulerConfig) =>
        schedulerConfig.Str("variance_type", "fixed_small") is "learned" or "learned_range";

    private protected override int PredictionChannels(int sampleChannels) =>
        HasLearnedVariance(SchedulerConfig) ? UNet.OutChannels : sampleChannels;

    internal override IEnumerable<nn.Module> ImageModules => [UNet];

    public override void Dispose()
    {
        T5.Dispose();
        UNet.Dispose();
    }
}
