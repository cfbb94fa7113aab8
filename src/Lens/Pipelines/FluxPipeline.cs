using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Schedulers;
using DiffusionLens.TextEncoders;
using DiffusionLens.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>
/// diffusers' FluxPipeline (text-to-image, e.g. FLUX.1-schnell): CLIPTextModel (text_encoder) gives the pooled prompt
/// embedding, T5EncoderModel (text_encoder_2, max_sequence_length tokens, no attention mask) the sequence embedding;
/// FluxTransformer2DModel on the packed latents (2x2 patches of the 16-channel VAE latents, drawn as randn of the
/// unpacked shape from the CPU generator, then packed), timestep / 1000, the embedded guidance only when the
/// transformer has guidance_embeds (no classifier-free guidance: one row per image); FlowMatchEulerDiscreteScheduler
/// with the sigmas linspace(1, 1/steps, steps) and mu from the image sequence length; AutoencoderKL decode of
/// latents / scaling_factor + shift_factor (in the pipeline's dtype). The latents are kept unpacked between steps (the
/// Euler step is elementwise, so the numbers are diffusers'); each step packs them for the transformer and unpacks
/// its prediction.
/// <para>The lens (the nnsight Diffusion Lens tutorial's FLUX section): text_encoder is fed the empty prompt (its pooled
/// output is the same for every layer); T5's final_layer_norm is applied to the output of block L instead of the last
/// block's, i.e. the prompt embedding is final_layer_norm(hidden[L]), as for DeepFloyd IF. Lens layers 0..N-1
/// (N = text_encoder_2's num_layers); the last is the stock prompt embedding.</para>
/// </summary>
internal sealed class FluxPipeline : LensPipeline
{
    public const string ClassName = "FluxPipeline";
    /// <summary>FluxPipeline's default max_sequence_length (FLUX.1-schnell's model card passes 256).</summary>
    public const int DefaultMaxSequenceLength = 512;
    /// <summary>The largest max_sequence_length diffusers accepts.</summary>
    public const int MaxMaxSequenceLength = 512;

    public required ClipTextModel Clip { get; init; }
    public required long ClipEosTokenId { get; init; }
    public required ClipTokenizer ClipTokenizer { get; init; }
    public required T5EncoderModel T5 { get; init; }
    internal override ITextEncoder TextEncoder => T5;
    public required FluxTransformer2DModel Transformer { get; init; }
    public required AutoencoderKL Vae { get; init; }

    public override string Kind => "flux";
    public override string PipelineName => ClassName;
    /// <summary>2^(len(vae block_out_channels) - 1); the image size must be a multiple of twice it (the 2x2 packing).</summary>
    public int VaeScaleFactor => Vae.ScaleFactor;
    /// <summary>The VAE latent channels the transformer's packed input holds four of (in_channels / 4).</summary>
    public int LatentChannels => Transformer.InChannels / 4;

    private int _maxSequenceLength = DefaultMaxSequenceLength;
    /// <summary>T5's padding/truncation length (diffusers' max_sequence_length, default 512, at most 512).</summary>
    public int MaxSequenceLength
    {
        get => _maxSequenceLength;
        set
        {
            CheckMaxSequenceLength(value);
            _maxSequenceLength = value;
            Tokenizer.T5MaxLength = value;
        }
    }

    /// <summary>max_sequence_length must be 1..512, as diffusers' check_inputs (which refuses more than 512).</summary>
    internal static void CheckMaxSequenceLength(int value)
    {
        if (value < 1 || value > MaxMaxSequenceLength)
            throw new LensException($"--max-sequence-length must be between 1 and {MaxMaxSequenceLength} (got {value}), as FluxPipeline requires");
    }

    /// <summary>diffusers' defaults: 28 steps, guidance 3.5 (used only by a transformer with guidance_embeds),
    /// default_sample_size 128 times the VAE scale factor (1024x1024).</summary>
    public override PipelineDefaults Defaults
    {
        get
        {
            int size = 128 * VaeScaleFactor;
            return new PipelineDefaults(28, 3.5, size, size);
        }
    }

    public static FluxPipeline Load(ModelIndex index, Device device, ScalarType dtype, string? variant = null, string? schedulerClass = null)
    {
        var schedulerConfig = LoadSchedulerConfig(index, schedulerClass); // first: an unknown scheduler fails before weights load
        string te1 = index.Require("text_encoder"), te2 = index.Require("text_encoder_2"), tr = index.Require("transformer"), vae = index.Require("vae");
        var transformerConfig = DiffusersConfig.Load(Path.Combine(tr, "config.json"));
        CheckPacking(transformerConfig);
        var clipConfig = DiffusersConfig.Load(Path.Combine(te1, "config.json"));
        return new FluxPipeline
        {
            ModelDir = index.Folder,
            Device = device,
            DType = dtype,
            SchedulerConfig = schedulerConfig,
            SchedulerClass = schedulerClass,
            Tokenizer = PromptTokenizer.Load(index),
            ClipTokenizer = ClipTokenizer.FromFolder(index.Require("tokenizer")),
            Clip = ClipTextModel.FromFolder(te1, device, dtype, WeightSet.ComponentVariant(te1, variant)),
            ClipEosTokenId = clipConfig.Has("eos_token_id") ? clipConfig.Long("eos_token_id") : 49407,
            T5 = T5EncoderModel.FromFolder(te2, device, dtype, WeightSet.ComponentVariant(te2, variant)),
            Transformer = LoadTransformer(tr, device, dtype, WeightSet.ComponentVariant(tr, variant)),
            Vae = ComponentLoader.LoadVae(vae, device, dtype, WeightSet.ComponentVariant(vae, variant)),
        };
    }

    /// <summary>The pipeline packs 2x2 latent patches into in_channels: in_channels must be 4 x latent channels, the
    /// output as many channels (patch_size 1), as FluxPipeline assumes.</summary>
    internal static void CheckPacking(DiffusersConfig transformerConfig)
    {
        int inCh = transformerConfig.Int("in_channels", 64);
        int outCh = transformerConfig.IntOrNull("out_channels") ?? inCh;
        int patch = transformerConfig.Int("patch_size", 1);
        if (inCh % 4 != 0 || patch * patch * outCh != inCh)
            throw new LensException($"{transformerConfig.Path}: FluxPipeline packs 2x2 latent patches, so in_channels must be a multiple of 4 and patch_size^2 * out_channels equal to it (got in_channels {inCh}, out_channels {outCh}, patch_size {patch})");
    }

    /// <summary>The transformer of a component folder: built from its config.json directly on the device in the dtype
    /// with uninitialised parameters, then filled key for key (no second copy).</summary>
    internal static FluxTransformer2DModel LoadTransformer(string dir, Device device, ScalarType dtype, string? variant = null)
    {
        var cfg = DiffusersConfig.Load(Path.Combine(dir, "config.json"));
        FluxTransformer2DModel model;
        using (Layers.ForLoading(device, dtype)) model = FluxTransformer2DModel.FromConfig(cfg);
        Layers.CheckMaterialised(model, device, "transformer");
        StrictLoader.Load(model, WeightSet.FromFolder(dir, variant), "transformer");
        model.eval();
        return model;
    }

    private Tensor? _emptyPooled;

    /// <summary>CLIP's pooled output for the empty prompt, [1, pooled_projection_dim]: what the lens feeds text_encoder
    /// (computed once; a new tensor each call).</summary>
    internal Tensor EmptyPromptPooled()
    {
        _emptyPooled ??= Pooled("").DetachFromDisposeScope();
        return _emptyPooled.clone();
    }

    /// <summary>text_encoder's pooler_output for a prompt (padded to the tokenizer's max length, no mask), [1, D].</summary>
    internal Tensor Pooled(string prompt)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var ids = torch.tensor(ClipTokenizer.Encode(prompt, ClipTokenizer.ModelMaxLength).InputIds, dtype: ScalarType.Int64).unsqueeze(0).to(Device);
        using var output = Clip.Encode(ids);
        return ClipTextModel.PoolAtEos(output.LastHiddenState, ids, ClipEosTokenId).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The lens: T5's final_layer_norm of <paramref name="hidden"/> (block L's output, or hidden state k) as the prompt
    /// embedding, with CLIP's pooled output of the empty prompt; packed as <see cref="PooledConditioning"/>
    /// [1, T, D + P].
    /// </summary>
    internal Tensor LensConditioning(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var prompt = Lens(hidden);
        return PooledConditioning.Pack(prompt, EmptyPromptPooled().to(prompt.dtype)).MoveToOuterDisposeScope();
    }

    internal override Tensor LensEmbedding(PromptLayers prompt, string numbering, int index) =>
        LensConditioning(Sweep.LayerNumbering.State(prompt, numbering, index));

    /// <summary>FluxPipeline runs no classifier-free guidance here (true_cfg_scale 1): the negative prompt must be empty;
    /// the returned embedding is never used.</summary>
    internal override Tensor Unconditional(string negativePrompt, bool? cleanCaption)
    {
        if (cleanCaption is not null) throw new LensException("--clean-caption applies to DeepFloyd IF models only");
        if (negativePrompt.Length != 0)
            throw new LensException("--negative-prompt does not apply to FLUX models: FluxPipeline guides with an embedded guidance value, not with a negative prompt (true classifier-free guidance is not supported here)");
        return torch.zeros(new long[] { 1, 1, Transformer.JointAttentionDim + Transformer.PooledProjectionDim }, dtype: DType, device: Device);
    }

    internal override bool RunsClassifierFreeGuidance(double guidance) => false;

    /// <summary>The unpacked latent shape [1, C, 2 * (H // 16), 2 * (W // 16)]; H and W must be multiples of 16 (twice
    /// the VAE scale factor; diffusers rounds other sizes down with a warning, refused here).</summary>
    private protected override long[] NoiseShape(GenerationOptions o)
    {
        int m = VaeScaleFactor * 2;
        if (o.Height % m != 0 || o.Width % m != 0)
            throw new LensException($"height and width must be multiples of {m} for FLUX (twice the VAE scale factor, for the 2x2 latent packing; got {o.Height}x{o.Width})");
        return new long[] { 1, LatentChannels, o.Height / VaeScaleFactor, o.Width / VaeScaleFactor };
    }

    /// <summary>FluxPipeline's schedule: sigmas np.linspace(1, 1/steps, steps) and mu = calculate_shift(image sequence
    /// length) from the scheduler config (used with use_dynamic_shifting).</summary>
    private protected override void SetTimesteps(Scheduler scheduler, GenerationOptions o)
    {
        var flow = (FlowMatchEulerDiscreteScheduler)scheduler;
        var shape = NoiseShape(o);
        long seqLen = shape[2] / 2 * (shape[3] / 2);
        flow.SetSigmas(FlowMatchEulerDiscreteScheduler.PipelineSigmas(o.Steps), flow.CalculateShift(seqLen));
    }

    /// <summary>diffusers' <c>_pack_latents</c>: [B, C, h, w] -&gt; [B, (h/2)(w/2), 4C].</summary>
    internal static Tensor Pack(Tensor latents)
    {
        long b = latents.shape[0], c = latents.shape[1], h = latents.shape[2], w = latents.shape[3];
        return latents.view(b, c, h / 2, 2, w / 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h / 2 * (w / 2), c * 4);
    }

    /// <summary>diffusers' <c>_unpack_latents</c>: [B, (h/2)(w/2), 4C] -&gt; [B, C, h, w].</summary>
    internal static Tensor Unpack(Tensor packed, long h, long w)
    {
        long b = packed.shape[0], ch = packed.shape[2];
        return packed.view(b, h / 2, w / 2, ch / 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, ch / 4, h, w);
    }

    /// <summary>diffusers' <c>_prepare_latent_image_ids</c>: [(h/2)(w/2), 3] with (0, row, column), in
    /// <paramref name="dtype"/>.</summary>
    internal static Tensor LatentImageIds(long h2, long w2, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var ids = torch.zeros(h2, w2, 3);
        ids[TensorIndex.Ellipsis, 1] = ids[TensorIndex.Ellipsis, 1] + torch.arange(h2).unsqueeze(1);
        ids[TensorIndex.Ellipsis, 2] = ids[TensorIndex.Ellipsis, 2] + torch.arange(w2).unsqueeze(0);
        return ids.reshape(h2 * w2, 3).to(dtype, device).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The transformer call of one step, as FluxPipeline makes it: the latents packed; timestep = t (float32) expanded
    /// and cast to the latents' dtype, divided by 1000; the embedded guidance (float32, guidance_embeds only); the
    /// prompt embeddings and pooled embeddings unpacked from the rows; text ids zeros [T, 3] and the latent image ids.
    /// The prediction is unpacked to the latents' shape.
    /// </summary>
    internal override Tensor GuidedPrediction(Scheduler scheduler, Tensor latents, long t, Tensor embeds, double guidance)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        long b = latents.shape[0], h = latents.shape[2], w = latents.shape[3];
        if (embeds.shape[0] != b) throw new InvalidOperationException($"{embeds.shape[0]} conditioning rows for {b} latents");
        var (promptEmbeds, pooled) = PooledConditioning.Unpack(embeds, Transformer.JointAttentionDim);
        int i = Array.IndexOf(scheduler.Timesteps, t);
        var tValue = torch.tensor(scheduler.TimestepValues[i], dtype: ScalarType.Float32).to(Device);
        var timestep = tValue.expand(b).to(latents.dtype) / 1000;
        var g = Transformer.GuidanceEmbeds
            ? torch.full(new long[] { 1 }, guidance, dtype: ScalarType.Float32, device: Device).expand(b)
            : null;
        var textIds = torch.zeros(new long[] { promptEmbeds.shape[1], 3 }, dtype: Clip.parameters().First().dtype, device: Device);
        var imgIds = LatentImageIds(h / 2, w / 2, latents.dtype, Device);
        var pred = Transformer.Forward(Pack(latents), promptEmbeds, pooled, timestep, imgIds, textIds, g);
        return Unpack(pred, h, w).MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' decode: latents / scaling_factor + shift_factor, the VAE in the pipeline's dtype.</summary>
    private protected override Tensor ToImage(Tensor latents)
    {
        using var scope = NewDisposeScope();
        var z = latents / Vae.ScalingFactor;
        if (Vae.ShiftFactor is double shift) z = z + shift;
        return Vae.Decode(z).MoveToOuterDisposeScope();
    }

    internal override IEnumerable<nn.Module> ImageModules => [Transformer, Vae];

    public override void Dispose()
    {
        _emptyPooled?.Dispose();
        Clip.Dispose();
        T5.Dispose();
        Transformer.Dispose();
        Vae.Dispose();
    }
}
