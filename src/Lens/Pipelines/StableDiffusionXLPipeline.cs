using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Schedulers;
using DiffusionLens.TextEncoders;
using DiffusionLens.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>
/// diffusers' StableDiffusionXLPipeline (text-to-image, no refiner, no watermark): CLIPTextModel (text_encoder) and
/// CLIPTextModelWithProjection (text_encoder_2), each contributing its penultimate hidden state (hidden_states[-2])
/// to the prompt embeddings (concatenated), text_encoder_2 its pooled text embeddings; the UNet takes those and the
/// micro-conditioning time ids (original size, crop top-left (0, 0), target size = the image size) through its
/// "text_time" added embedding; classifier-free guidance [uncond, cond] with zeros as the unconditional conditioning
/// when the negative prompt is empty and the model's force_zeros_for_empty_prompt is set (diffusers' negative_prompt=None);
/// AutoencoderKL decode of latents / scaling_factor (latents_mean/latents_std when the VAE config has them), in float32
/// when the pipeline runs in float16 and the VAE config has force_upcast.
/// <para>The lens (the nnsight Diffusion Lens tutorial's SDXL section): text_encoder is fed the empty prompt's tokens;
/// text_encoder_2's penultimate-layer output is replaced by final_layer_norm(output of layer L) (or the raw output with
/// <see cref="LensLayerNorm"/> off), so its last layer and the pooled embeddings are recomputed from it. Lens layers are
/// 0..N-2 (N = text_encoder_2's num_hidden_layers).</para>
/// </summary>
internal sealed class StableDiffusionXLPipeline : LensPipeline
{
    public required ClipTextModel Clip { get; init; }
    public required ClipTextModelWithProjection Clip2 { get; init; }
    internal override ITextEncoder TextEncoder => Clip2;
    public required ClipTokenizer Tokenizer1 { get; init; }
    public required ClipTokenizer Tokenizer2 { get; init; }
    public required UNet2DConditionModel UNet { get; init; }
    public required AutoencoderKL Vae { get; init; }
    /// <summary>The VAE's config (scaling_factor, latents_mean/latents_std, force_upcast).</summary>
    public required DiffusersConfig VaeConfig { get; init; }
    /// <summary>model_index.json's force_zeros_for_empty_prompt (diffusers' default: true).</summary>
    public required bool ForceZerosForEmptyPrompt { get; init; }
    /// <summary>Whether the lens passes layer L through text_encoder_2's final_layer_norm before it replaces the
    /// penultimate layer's output (the tutorial's ADD_LAYER_NORM, default on).</summary>
    public bool LensLayerNorm { get; set; } = true;

    public override string Kind => "sdxl";
    public override string PipelineName => "StableDiffusionXLPipeline";
    public int VaeScaleFactor => Vae.ScaleFactor;
    /// <summary>Lens layers 0..N-2: the last layer is recomputed from the replaced penultimate one.</summary>
    public override int NumLayers => Clip2.NumLayers - 1;
    /// <summary>Width of the prompt embeddings: text_encoder's hidden size + text_encoder_2's.</summary>
    public long PromptDim => Clip.Config.HiddenSize + Clip2.Config.HiddenSize;

    /// <summary>diffusers' defaults for SDXL: 50 steps, guidance 5.0, default_sample_size (the UNet's sample_size,
    /// else 128) times the VAE scale factor.</summary>
    public override PipelineDefaults Defaults
    {
        get
        {
            int size = (UNet.SampleSize ?? 128) * VaeScaleFactor;
            return new PipelineDefaults(50, 5.0, size, size);
        }
    }

    /// <summary>The text encoders' lowest layer count this pipeline runs: the second needs two (a lens layer and the
    /// recomputed last one).</summary>
    internal static void CheckLayers(int numHiddenLayers2, string path)
    {
        if (numHiddenLayers2 < 2)
            throw new LensException($"{path}: the SDXL lens needs text_encoder_2 to have at least 2 layers (it replaces the penultimate layer's output; got num_hidden_layers {numHiddenLayers2})");
    }

    public static StableDiffusionXLPipeline Load(ModelIndex index, Device device, ScalarType dtype, string? variant = null, string? schedulerClass = null)
    {
        var schedulerConfig = LoadSchedulerConfig(index, schedulerClass); // first: an unknown scheduler fails before weights load
        string te1 = index.Require("text_encoder"), te2 = index.Require("text_encoder_2"), unet = index.Require("unet"), vae = index.Require("vae");
        CheckLayers(DiffusersConfig.Load(Path.Combine(te2, "config.json")).Int("num_hidden_layers", 12), Path.Combine(te2, "config.json"));
        var vaeConfig = DiffusersConfig.Load(Path.Combine(vae, "config.json"));
        var vaeModel = ComponentLoader.LoadVae(vae, device, dtype, WeightSet.ComponentVariant(vae, variant));
        // diffusers upcasts a float16 VAE with force_upcast to float32 for the decode: its float16 weights, widened
        if (dtype == ScalarType.Float16 && vaeConfig.Bool("force_upcast", true)) vaeModel.to(ScalarType.Float32);
        return new StableDiffusionXLPipeline
        {
            ModelDir = index.Folder,
            Device = device,
            DType = dtype,
            SchedulerConfig = schedulerConfig,
            SchedulerClass = schedulerClass,
            Tokenizer = PromptTokenizer.Load(index),
            Tokenizer1 = ClipTokenizer.FromFolder(index.Require("tokenizer")),
            Tokenizer2 = ClipTokenizer.FromFolder(index.Require("tokenizer_2")),
            Clip = ClipTextModel.FromFolder(te1, device, dtype, WeightSet.ComponentVariant(te1, variant)),
            Clip2 = ClipTextModelWithProjection.FromFolder(te2, device, dtype, WeightSet.ComponentVariant(te2, variant)),
            UNet = ComponentLoader.LoadUNet(unet, device, dtype, WeightSet.ComponentVariant(unet, variant)),
            Vae = vaeModel,
            VaeConfig = vaeConfig,
            ForceZerosForEmptyPrompt = index.Flag("force_zeros_for_empty_prompt", true),
        };
    }

    /// <summary>hidden_states[-2] of an encoder output: the output of layer N-2 (the embedding output for N = 1).</summary>
    private static Tensor Penultimate(TextEncoderOutput o) => o.Hidden.Count >= 2 ? o.Hidden[^2] : o.Embeddings;

    private Tensor Ids(ClipTokenizer tokenizer, string text, int maxLength) =>
        torch.tensor(tokenizer.Encode(text, maxLength).InputIds, dtype: ScalarType.Int64).unsqueeze(0).to(Device);

    /// <summary>text_encoder's hidden_states[-2] for the empty prompt, [1, T, D1]: what the lens feeds that encoder.</summary>
    internal Tensor EmptyPromptEmbeds1()
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        using var output = Clip.Encode(Ids(Tokenizer1, "", Tokenizer1.ModelMaxLength));
        return Penultimate(output).alias().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The lens: the conditioning of the tutorial's intervention for <paramref name="hidden"/> (text_encoder_2's layer-L
    /// output, or hidden state k) of a prompt whose text_encoder_2 ids are <paramref name="inputIds2"/>: x =
    /// final_layer_norm(hidden) (or hidden with <see cref="LensLayerNorm"/> off) replaces the penultimate output; prompt
    /// embeddings = [text_encoder(empty prompt).hidden_states[-2], x]; pooled = text_projection(final_layer_norm(last
    /// layer(x))[eos]). Packed as <see cref="PooledConditioning"/>, [1, T, D1 + D2 + P].
    /// </summary>
    internal Tensor LensConditioning(Tensor hidden, long[] inputIds2)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var x = LensLayerNorm ? Clip2.FinalLayerNorm(hidden) : hidden;
        var last = Clip2.LastHiddenStateFrom(Clip2.NumLayers - 1, x);
        var ids = torch.tensor(inputIds2, dtype: ScalarType.Int64).unsqueeze(0).to(Device);
        var pooled = Clip2.Pooled(last, ids);
        var e1 = EmptyPromptEmbeds1();
        var prompt = torch.cat(new[] { e1, x.to(e1.dtype) }, -1);
        return PooledConditioning.Pack(prompt, pooled).MoveToOuterDisposeScope();
    }

    internal override Tensor LensEmbedding(PromptLayers prompt, string numbering, int index) =>
        LensConditioning(Sweep.LayerNumbering.State(prompt, numbering, index), prompt.InputIds);

    /// <summary>
    /// diffusers' negative conditioning: zeros when the negative prompt is empty (negative_prompt=None) and
    /// force_zeros_for_empty_prompt is set; otherwise both encoders on the negative prompt (padded to the prompt
    /// embeddings' length), penultimate states concatenated, text_encoder_2's pooled embeddings.
    /// </summary>
    internal override Tensor Unconditional(string negativePrompt, bool? cleanCaption)
    {
        if (cleanCaption is not null) throw new LensException("--clean-caption applies to DeepFloyd IF models only");
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        int t = Tokenizer2.ModelMaxLength;
        if (negativePrompt.Length == 0 && ForceZerosForEmptyPrompt)
            return torch.zeros(new long[] { 1, t, PromptDim + Clip2.ProjectionDim }, dtype: DType, device: Device).MoveToOuterDisposeScope();
        using var o1 = Clip.Encode(Ids(Tokenizer1, negativePrompt, t));
        var ids2 = Ids(Tokenizer2, negativePrompt, t);
        using var o2 = Clip2.Encode(ids2);
        var pooled = Clip2.Pooled(o2.LastHiddenState, ids2);
        var prompt = torch.cat(new[] { Penultimate(o1), Penultimate(o2) }, -1);
        return PooledConditioning.Pack(prompt, pooled).MoveToOuterDisposeScope();
    }

    private protected override long[] NoiseShape(GenerationOptions o)
    {
        if (o.Height % 8 != 0 || o.Width % 8 != 0)
            throw new LensException($"height and width must be divisible by 8 (got {o.Height}x{o.Width}), as diffusers requires");
        return new long[] { 1, UNet.InChannels, o.Height / VaeScaleFactor, o.Width / VaeScaleFactor };
    }

    /// <summary>diffusers' decode: latents * latents_std / scaling_factor + latents_mean when the VAE config has both,
    /// else latents / scaling_factor; in the VAE's dtype (float32 when upcast).</summary>
    private protected override Tensor ToImage(Tensor latents)
    {
        using var scope = NewDisposeScope();
        var vaeDType = Vae.parameters().First().dtype;
        var z = latents.to(vaeDType);
        double scaling = VaeConfig.Double("scaling_factor", 0.18215);
        if (VaeConfig.Has("latents_mean") && VaeConfig.Has("latents_std"))
        {
            var mean = torch.tensor(VaeConfig.DoubleArray("latents_mean"), dtype: ScalarType.Float64).view(1, -1, 1, 1).to(vaeDType, z.device);
            var std = torch.tensor(VaeConfig.DoubleArray("latents_std"), dtype: ScalarType.Float64).view(1, -1, 1, 1).to(vaeDType, z.device);
            z = z * std / scaling + mean;
        }
        else z = z / scaling;
        return Vae.Decode(z).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The UNet call of one step: the packed rows give encoder_hidden_states and text_embeds; time_ids are
    /// (H, W, 0, 0, H, W) in the pipeline's dtype for every row (H, W the image size: the latent size times the VAE
    /// scale factor); classifier-free guidance as <see cref="StableDiffusionPipeline"/>.
    /// </summary>
    internal override Tensor GuidedPrediction(Scheduler scheduler, Tensor latents, long t, Tensor embeds, double guidance)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var tT = TimestepTensor(t);
        var (promptEmbeds, textEmbeds) = PooledConditioning.Unpack(embeds, PromptDim);
        long h = latents.shape[2] * VaeScaleFactor, w = latents.shape[3] * VaeScaleFactor;
        var timeIds = torch.tensor(new double[] { h, w, 0, 0, h, w }, dtype: ScalarType.Float64).to(DType, Device)
            .unsqueeze(0).expand(embeds.shape[0], -1).contiguous();
        if (!UsesGuidance(guidance))
            return UNet.Forward(scheduler.ScaleModelInput(latents, t), tT, promptEmbeds, textEmbeds: textEmbeds, timeIds: timeIds)
                .MoveToOuterDisposeScope();
        var input = scheduler.ScaleModelInput(torch.cat(new[] { latents, latents }, 0), t);
        // --batch-invariant: each layer's [uncond, cond] rows together, as --batch 1 runs them (identity otherwise)
        Tensor L(Tensor x) => Models.BatchInvariance.ToLayerMajor(x, 2);
        var parts = Models.BatchInvariance.ToBlockMajor(
            UNet.Forward(L(input), tT, L(promptEmbeds), textEmbeds: L(textEmbeds), timeIds: L(timeIds)), 2).chunk(2, 0);
        return (parts[0] + guidance * (parts[1] - parts[0])).MoveToOuterDisposeScope();
    }

    internal override IEnumerable<nn.Module> ImageModules => [UNet, Vae];

    public override void Dispose()
    {
        Clip.Dispose();
        Clip2.Dispose();
        UNet.Dispose();
        Vae.Dispose();
    }
}
