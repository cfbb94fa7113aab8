using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>Sampling settings of DeepFloyd IF's super-resolution stage (diffusers' __call__ defaults in <see cref="IFSuperResolutionPipeline"/>).</summary>
internal sealed record SuperResolutionOptions(int Steps, double Guidance, int NoiseLevel, int Height, int Width);

/// <summary>
/// diffusers' IFSuperResolutionPipeline (DeepFloyd IF stage II, e.g. IF-II-L: 64 -> 256), as a lens needs it: it
/// takes prompt embeddings (the lens's per-layer embedding and the negative embedding, made by stage I's T5; its own
/// text encoder, if the folder has one, is never loaded) and stage I's images, and follows
/// pipeline_if_superresolution.py: the intermediate images drawn first (batch, in_channels // 2, H, W), then the
/// stage I images (in [-1, 1], diffusers' output_type="pt") upscaled with F.interpolate(bilinear, align_corners=True),
/// noised by the image_noising_scheduler's add_noise at noise_level with noise drawn next from the same generator,
/// and denoised with [intermediate, upscaled] concatenated on channels, class_labels = noise_level, the IF guidance
/// (noise channels guided, the conditional half's variance) and the pipeline's scheduler. Output (x/2+0.5).clamp(0,1).
/// No watermark, no safety checker. The loop is <see cref="DenoisingPipeline.Denoise"/>, shared with stage I.
/// </summary>
internal sealed class IFSuperResolutionPipeline : DenoisingPipeline
{
    public const string ClassName = "IFSuperResolutionPipeline";
    /// <summary>diffusers' IFSuperResolutionPipeline.__call__ defaults.</summary>
    public const int DefaultSteps = 50;
    public const double DefaultGuidance = 4.0;
    public const int DefaultNoiseLevel = 250;

    public required UNet2DConditionModel UNet { get; init; }
    /// <summary>scheduler/scheduler_config.json: the denoising scheduler.</summary>
    public required DiffusersConfig SchedulerConfig { get; init; }
    /// <summary>image_noising_scheduler/scheduler_config.json: the DDPM schedule whose add_noise noises the upscaled image.</summary>
    public required DiffusersConfig ImageNoisingSchedulerConfig { get; init; }

    /// <summary>
    /// The denoising scheduler class chosen instead of the folder's own (<c>--stage2-scheduler</c>), built from its
    /// scheduler config as diffusers' <c>SchedulerClass.from_config(stage2.scheduler.config)</c>; null: the folder's own
    /// (IF-II-L: DDPMScheduler). The image noising scheduler is never replaced (diffusers' pipelines keep it too).
    /// </summary>
    public string? SchedulerClass { get; private init; }

    public string PipelineName => ClassName;
    /// <summary>The diffusers class name of the denoising scheduler stage II runs.</summary>
    public string SchedulerName => SchedulerClass ?? SchedulerConfig.Str("_class_name", "?");

    /// <summary>A new denoising scheduler of the stage's class and config (one per call, as its state is per run).</summary>
    internal Scheduler CreateScheduler() => Scheduler.FromConfig(SchedulerConfig, SchedulerClass);

    /// <summary>The configuration stage II's denoising scheduler runs with (<see cref="Scheduler.EffectiveConfig"/>).</summary>
    internal SortedDictionary<string, System.Text.Json.Nodes.JsonNode?> SchedulerEffectiveConfig()
    {
        using var s = CreateScheduler();
        return new SortedDictionary<string, System.Text.Json.Nodes.JsonNode?>(
            s.EffectiveConfig.ToDictionary(kv => kv.Key, kv => kv.Value?.DeepClone()), StringComparer.Ordinal);
    }
    /// <summary>The noising schedule's num_train_timesteps: a noise level must lie in [0, this).</summary>
    public int NoiseLevelLimit => ImageNoisingSchedulerConfig.Int("num_train_timesteps", 1000);
    /// <summary>Channels of the image being denoised (diffusers: unet.config.in_channels // 2).</summary>
    public int ImageChannels => UNet.InChannels / 2;
    /// <summary>The UNet's sample_size (IF-II-L: 256), diffusers' default height and width.</summary>
    public int DefaultSize => UNet.SampleSize ?? throw new LensException($"{Path.Combine(ModelDir, "unet", "config.json")}: no sample_size; pass --height and --width");

    /// <summary>The options with diffusers' defaults for those not given.</summary>
    public SuperResolutionOptions Options(int? steps, double? guidance, int? noiseLevel, int? height = null, int? width = null) =>
        new(steps ?? DefaultSteps, guidance ?? DefaultGuidance, noiseLevel ?? DefaultNoiseLevel, height ?? DefaultSize, width ?? DefaultSize);

    /// <summary>
    /// Checks a super-resolution folder from its config files alone (no weights read): model_index.json names an
    /// IFSuperResolutionPipeline; its unet config builds here on the meta device (<see cref="UNet2DConditionModel"/>
    /// rejects what it does not implement), takes an even number of input channels and a timestep class embedding; its scheduler and image_noising_scheduler
    /// are supported DDPM-family configs, and the scheduler class chosen instead of its own, if any, can run it
    /// (<see cref="CheckScheduler"/>). Returns the index.
    /// </summary>
    /// <param name="schedulerClass">a diffusers scheduler class name (<see cref="Scheduler.ResolveClassName"/>) to run
    /// instead of the folder's own; null: its own</param>
    public static Stage2Config Validate(string modelDir, string? schedulerClass = null)
    {
        var index = ModelIndex.Load(modelDir);
        var mi = Path.Combine(modelDir, "model_index.json");
        if (index.ClassName != ClassName)
            throw new LensException($"--stage2 {modelDir}: {mi} names the pipeline {index.ClassName}, not {ClassName} (a DeepFloyd IF super-resolution folder such as DeepFloyd/IF-II-L-v1.0)");
        var unet = DiffusersConfig.Load(Path.Combine(index.Require("unet"), "config.json"));
        // the UNet built on the meta device: every config value it does not implement fails here, and costs nothing
        int sizeMultiple, encoderDim;
        int? sampleSize;
        using (Layers.ForLoading(torch.META, ScalarType.Float32))
        using (var probe = UNet2DConditionModel.FromConfig(unet))
        {
            sizeMultiple = probe.SizeMultiple;
            sampleSize = probe.SampleSize;
            // the width of the prompt embeddings it takes: encoder_hid_proj's input, else the cross-attention width
            encoderDim = unet.IntOrNull("encoder_hid_dim") ?? probe.CrossAttentionDims[0];
        }
        int inChannels = unet.Int("in_channels", 4);
        if (inChannels % 2 != 0)
            throw new LensException($"{unet.Path}: in_channels = {inChannels}; a super-resolution UNet takes the noisy image and the upscaled image concatenated (an even number, 6 for IF-II)");
        if (unet.StrOrNull("class_embed_type") != "timestep")
            throw new LensException($"{unet.Path}: 'class_embed_type' = {unet.StrOrNull("class_embed_type") ?? "null"}; IF's super-resolution UNet takes the noise level through class_embed_type timestep");
        CheckScheduler(LoadConfig(index, "scheduler"), schedulerClass);
        var noising = LoadConfig(index, "image_noising_scheduler");
        using (new DDPMScheduler(noising)) { }
        return new Stage2Config(index, inChannels / 2, sizeMultiple, sampleSize, encoderDim, noising.Int("num_train_timesteps", 1000));
    }

    /// <summary>What <see cref="Validate"/> read from a super-resolution folder's configs.</summary>
    /// <param name="ImageChannels">in_channels / 2: the channels of the stage I image it upscales</param>
    /// <param name="EncoderDim">the width of the prompt embeddings it takes (encoder_hid_dim, else cross_attention_dim)</param>
    /// <param name="NoiseLevelLimit">the image noising scheduler's num_train_timesteps</param>
    public sealed record Stage2Config(ModelIndex Index, int ImageChannels, int SizeMultiple, int? SampleSize, int EncoderDim, int NoiseLevelLimit);

    /// <summary>
    /// Builds stage II's denoising scheduler once (the folder's own, or <paramref name="schedulerClass"/> from its
    /// config) to validate it, and refuses a class that cannot take IF's predicted variance. diffusers'
    /// <c>from_config</c> keeps the config's variance_type (learned_range for IF-II-L) in every class's config, so
    /// pipeline_if_superresolution.py hands the step the 6-channel prediction; DDPMScheduler and
    /// DPMSolverMultistepScheduler use or drop the variance channels, DDIM, Euler and PNDM fail on the shape.
    /// </summary>
    internal static void CheckScheduler(DiffusersConfig cfg, string? schedulerClass)
    {
        using var check = Scheduler.FromConfig(cfg, schedulerClass);
        if (IFPipeline.HasLearnedVariance(cfg) && check.ClassName is not ("DDPMScheduler" or "DPMSolverMultistepScheduler"))
            throw new LensException($"--stage2-scheduler {check.ClassName} cannot run this IF stage II: its scheduler config has variance_type '{cfg.Str("variance_type")}', so the pipeline passes the predicted variance to the step, which only DDPMScheduler and DPMSolverMultistepScheduler take (diffusers fails the same way)");
    }

    private static DiffusersConfig LoadConfig(ModelIndex index, string component) =>
        DiffusersConfig.Load(Path.Combine(index.Require(component), "scheduler_config.json"));

    /// <summary>Loads the UNet (strict key-for-key) and the two scheduler configs; the text encoder is never loaded.</summary>
    /// <param name="variant">weights variant, as for <see cref="LensPipeline.Load"/></param>
    /// <param name="scheduler">the denoising scheduler to run instead of the folder's own (a class name or alias, as
    /// <c>--stage2-scheduler</c>); null: its own</param>
    public static IFSuperResolutionPipeline Load(string modelDir, string device = "cpu", string dtype = "float32", string? variant = null,
        string? scheduler = null)
    {
        var schedulerClass = scheduler is null ? null : Scheduler.ResolveClassName(scheduler);
        var index = Validate(modelDir, schedulerClass).Index;
        var dev = LensPipeline.ParseDevice(device);
        var dt = LensPipeline.ParseDType(dtype);
        var unetDir = index.Require("unet");
        WeightSet.CheckPipelineVariant(modelDir, new[] { unetDir }, variant);
        var unetVariant = WeightSet.ComponentVariant(unetDir, variant);
        var pipe = new IFSuperResolutionPipeline
        {
            ModelDir = modelDir,
            Device = dev,
            DType = dt,
            SchedulerConfig = LoadConfig(index, "scheduler"),
            SchedulerClass = schedulerClass,
            ImageNoisingSchedulerConfig = LoadConfig(index, "image_noising_scheduler"),
            UNet = ComponentLoader.LoadUNet(unetDir, dev, dt, unetVariant),
        };
        pipe.Variant = variant;
        pipe.WeightFiles = WeightSet.FromFolder(unetDir, unetVariant).FilePaths;
        return pipe;
    }

    /// <summary>Height and width must be multiples of the UNet's total resnet upsampling, as for stage I.</summary>
    public void CheckOptions(SuperResolutionOptions o)
    {
        if (o.Steps < 1) throw new LensException($"--stage2-steps must be at least 1 (got {o.Steps})");
        if (!double.IsFinite(o.Guidance)) throw new LensException($"--stage2-guidance must be a finite number (got {o.Guidance})");
        CheckNoiseLevel(o.NoiseLevel, NoiseLevelLimit);
        int m = UNet.SizeMultiple;
        if (o.Height < 8 || o.Width < 8) throw new LensException($"stage II image size {o.Height}x{o.Width} is too small");
        if (o.Height % m != 0 || o.Width % m != 0)
            throw new LensException($"stage II height and width must be multiples of {m} for this IF UNet (got {o.Height}x{o.Width})");
    }

    /// <summary>diffusers' check_inputs: noise_level must be a valid timestep of the image noising scheduler, [0, num_train_timesteps).</summary>
    public static void CheckNoiseLevel(int noiseLevel, int numTrainTimesteps)
    {
        if (noiseLevel < 0 || noiseLevel >= numTrainTimesteps)
            throw new LensException($"--noise-level {noiseLevel} must be a valid timestep of the image noising scheduler, in [0, {numTrainTimesteps})");
    }

    /// <summary>
    /// Steps 5 and 7 of diffusers' __call__ for a batch of k images run as k single-image calls sharing one generator
    /// stream (each draw one image's, repeated for the k rows): see the <see cref="NoisePlan"/> overload.
    /// </summary>
    /// <param name="stage1Images">[k, C, h, w] stage I images in [-1, 1] (diffusers' output_type="pt")</param>
    public (Tensor Intermediate, Tensor Upscaled) PrepareInputs(Tensor stage1Images, SuperResolutionOptions o, Scheduler scheduler, Generator generator) =>
        PrepareInputs(stage1Images, o, scheduler, NoisePlan.Shared(generator, 1, (int)stage1Images.shape[0]));

    /// <summary>
    /// Steps 5 and 7 of diffusers' __call__ for a batch that holds several calls (<paramref name="plan"/>: each call's
    /// rows and generator): the intermediate images (noise [rows, in_channels // 2, H, W] times init_noise_sigma) drawn
    /// first by every call, then the stage I images upscaled (bilinear, align_corners=True) and noised at the noise
    /// level with noise of the same shape drawn next. Returns (intermediate images, noised upscaled images), both
    /// [plan rows, C, H, W].
    /// </summary>
    /// <param name="stage1Images">[plan rows, C, h, w] stage I images in [-1, 1] (diffusers' output_type="pt")</param>
    public (Tensor Intermediate, Tensor Upscaled) PrepareInputs(Tensor stage1Images, SuperResolutionOptions o, Scheduler scheduler, NoisePlan plan)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        if (stage1Images.ndim != 4 || stage1Images.shape[1] != ImageChannels)
            throw new LensException($"stage II takes [k, {ImageChannels}, h, w] stage I images, got [{string.Join(", ", stage1Images.shape)}]");
        if (stage1Images.shape[0] != plan.BatchRows)
            throw new ArgumentException($"{stage1Images.shape[0]} stage I images for a noise plan of {plan.BatchRows} rows");
        var rowShape = new long[] { ImageChannels, o.Height, o.Width };
        var intermediate = plan.Draw(rowShape, DType, Device) * scheduler.InitNoiseSigma;
        // preprocess_image: image.to(device, dtype=unet.dtype)
        var image = stage1Images.to(DType, Device);
        var upscaled = nn.functional.interpolate(image, new long[] { o.Height, o.Width }, mode: InterpolationMode.Bilinear, align_corners: true);
        var noise = plan.Draw(rowShape, DType, Device);
        upscaled = AddNoise(upscaled, noise, o.NoiseLevel);
        return (intermediate.MoveToOuterDisposeScope(), upscaled.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// diffusers' DDPMScheduler.add_noise of the image noising scheduler at one timestep for every row:
    /// alphas_cumprod cast to the sample's dtype, sqrt(a_t) * x + sqrt(1 - a_t) * noise.
    /// </summary>
    public Tensor AddNoise(Tensor original, Tensor noise, int noiseLevel)
    {
        CheckNoiseLevel(noiseLevel, NoiseLevelLimit);
        using var scope = NewDisposeScope();
        using var noising = new DDPMScheduler(ImageNoisingSchedulerConfig);
        long k = original.shape[0];
        var alphasCumprod = noising.AlphasCumprod.to(original.device).to(original.dtype);
        var timesteps = torch.full(new long[] { k }, noiseLevel, dtype: ScalarType.Int64, device: original.device);
        var alphaProd = alphasCumprod.index_select(0, timesteps);
        var sqrtAlphaProd = alphaProd.pow(0.5).flatten().reshape(k, 1, 1, 1);
        var sqrtOneMinusAlphaProd = (1 - alphaProd).pow(0.5).flatten().reshape(k, 1, 1, 1);
        return (sqrtAlphaProd * original + sqrtOneMinusAlphaProd * noise).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Upscales k stage I images, each with its own conditional embedding (and the shared unconditional one), as k
    /// single-image diffusers calls sharing one generator stream. Returns [k, C, H, W] images in [-1, 1], not
    /// clamped (output_type="pt"), on the device.
    /// </summary>
    /// <param name="generator">diffusers' generator: in the documented two-stage usage the one stage I drew from</param>
    public Tensor GenerateImages(Tensor stage1Images, IReadOnlyList<Tensor> conditional, Tensor unconditional, SuperResolutionOptions o,
        Generator generator, Action<int, int>? onStep = null, PhaseTimer? timer = null) =>
        GenerateImages(stage1Images, conditional, unconditional, o, [generator], 1, onStep, timer);

    /// <summary>
    /// Upscales the images of k stage I calls of <paramref name="imagesPerCall"/> images each (embedding-major, as
    /// <see cref="LensPipeline.GenerateImages"/> returns them), each call's images with its own conditional embedding,
    /// reproducing, for each call, diffusers' <c>IFSuperResolutionPipeline(image=its N images,
    /// prompt_embeds=cond.repeat(N, 1, 1), negative_prompt_embeds=uncond.repeat(N, 1, 1), num_images_per_prompt=1,
    /// generator=g)</c> — one stage II image per stage I image, all N drawn together from the call's generator
    /// (diffusers' check_inputs wants the image batch equal to the prompt batch, so the embeddings are repeated rather
    /// than num_images_per_prompt raised). Returns [k*N, C, H, W] images in [-1, 1], not clamped, on the device.
    /// </summary>
    /// <param name="generators">one generator for every call (reseed: the calls draw the same noise), or one per call,
    /// each in its state at the start of that call's stage II (used, not copied)</param>
    public Tensor GenerateImages(Tensor stage1Images, IReadOnlyList<Tensor> conditional, Tensor unconditional, SuperResolutionOptions o,
        IReadOnlyList<Generator> generators, int imagesPerCall, Action<int, int>? onStep = null, PhaseTimer? timer = null)
    {
        if (conditional.Count == 0) throw new ArgumentException("nothing to generate");
        if (imagesPerCall < 1) throw new ArgumentOutOfRangeException(nameof(imagesPerCall), imagesPerCall, "at least one image per call");
        if (generators.Count != 1 && generators.Count != conditional.Count)
            throw new ArgumentException($"{generators.Count} generators for {conditional.Count} embeddings");
        int n = imagesPerCall;
        if (stage1Images.shape[0] != (long)conditional.Count * n)
            throw new LensException($"image batch size: {stage1Images.shape[0]} must be same as prompt batch size {conditional.Count * n}");
        CheckOptions(o);
        using var noGrad = torch.no_grad();
        using var outer = NewDisposeScope();
        using var scheduler = CreateScheduler();
        scheduler.SetTimesteps(o.Steps);
        var plan = generators.Count == 1
            ? NoisePlan.Shared(generators[0], n, conditional.Count)
            : new NoisePlan(generators.Select(g => new NoisePlan.Group(g, n)).ToList());
        scheduler.BatchNoise = plan;
        var embeds = BatchEmbeds(conditional.SelectMany(c => Enumerable.Repeat(c, n)).ToList(), unconditional, o.Guidance);
        var (intermediate, upscaled) = PrepareInputs(stage1Images, o, scheduler, plan);
        _upscaled = upscaled;
        _noiseLevel = o.NoiseLevel;
        try
        {
            return Denoise(scheduler, intermediate, embeds, o.Guidance, null, onStep, timer).MoveToOuterDisposeScope();
        }
        finally { _upscaled = null; }
    }

    /// <summary><see cref="GenerateImages"/> postprocessed: [k, H, W, C] float32 in [0, 1] on the CPU (output_type="np").</summary>
    public Tensor Generate(Tensor stage1Images, IReadOnlyList<Tensor> conditional, Tensor unconditional, SuperResolutionOptions o,
        Generator generator, Action<int, int>? onStep = null, PhaseTimer? timer = null) =>
        Generate(stage1Images, conditional, unconditional, o, [generator], 1, onStep, timer);

    /// <summary><see cref="GenerateImages"/> of k calls of N images postprocessed: [k*N, H, W, C] float32 in [0, 1] on the CPU
    /// (or on the pipeline's device: <paramref name="onDevice"/>).</summary>
    public Tensor Generate(Tensor stage1Images, IReadOnlyList<Tensor> conditional, Tensor unconditional, SuperResolutionOptions o,
        IReadOnlyList<Generator> generators, int imagesPerCall, Action<int, int>? onStep = null, PhaseTimer? timer = null,
        bool onDevice = false)
    {
        using var scope = NewDisposeScope();
        var images = GenerateImages(stage1Images, conditional, unconditional, o, generators, imagesPerCall, onStep, timer);
        return ToUnitHwc(images, onDevice).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Advances <paramref name="generator"/> past everything one stage II call of <paramref name="images"/> images
    /// draws from it (the intermediate images, the upscale noise, then each scheduler step's variance noise), by
    /// making the same draws: the scheduler's steps run on the CPU on zero tensors of the call's shapes. The stage II
    /// half of a layer under <c>--seed-policy continue</c> (stage I's is <see cref="LensPipeline.ConsumeCallNoise"/>).
    /// </summary>
    public void ConsumeCallNoise(Generator generator, SuperResolutionOptions o, int images)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        using var scheduler = CreateScheduler();
        scheduler.SetTimesteps(o.Steps);
        var shape = new long[] { images, ImageChannels, o.Height, o.Width };
        torch.randn(shape, dtype: DType, device: torch.CPU, generator: generator); // the intermediate images
        torch.randn(shape, dtype: DType, device: torch.CPU, generator: generator); // the upscale noise
        var sample = torch.zeros(shape, dtype: DType, device: torch.CPU);
        var predShape = (long[])shape.Clone();
        if (IFPipeline.HasLearnedVariance(SchedulerConfig)) predShape[1] = UNet.OutChannels;
        var prediction = torch.zeros(predShape, dtype: DType, device: torch.CPU);
        foreach (var t in scheduler.Timesteps)
        {
            using var step = NewDisposeScope();
            scheduler.Step(prediction, t, sample, generator);
        }
    }

    private Tensor? _upscaled;
    private int _noiseLevel;

    /// <summary>One step's guided model call inside <see cref="GenerateImages"/> (the upscaled images and noise level of that call).</summary>
    internal override Tensor GuidedPrediction(Scheduler scheduler, Tensor sample, long t, Tensor embeds, double guidance) =>
        GuidedPrediction(scheduler, sample, t, embeds, guidance,
            _upscaled ?? throw new InvalidOperationException("stage II's model call needs the upscaled images: call GenerateImages, or pass them"),
            _noiseLevel);

    /// <summary>
    /// One denoising step's model call as pipeline_if_superresolution.py makes it: model_input = cat([sample,
    /// upscaled], 1), doubled with guidance, scaled by the scheduler; the UNet with class_labels = the noise level per
    /// row; the IF guidance (<see cref="IFPipeline.CombineGuided"/>) on model_input.shape[1] // 2 noise channels.
    /// </summary>
    public Tensor GuidedPrediction(Scheduler scheduler, Tensor sample, long t, Tensor embeds, double guidance, Tensor upscaled, int noiseLevel)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var modelInput = torch.cat(new[] { sample, upscaled.to(sample.dtype, sample.device) }, 1);
        if (LensPipeline.UsesGuidance(guidance)) modelInput = torch.cat(new[] { modelInput, modelInput }, 0);
        modelInput = scheduler.ScaleModelInput(modelInput, t);
        var classLabels = torch.full(new long[] { modelInput.shape[0] }, noiseLevel, dtype: ScalarType.Int64, device: Device);
        // --batch-invariant: each layer's [uncond, cond] rows together, as --batch 1 runs them (identity otherwise)
        long blocks = LensPipeline.UsesGuidance(guidance) ? 2 : 1;
        Tensor L(Tensor x) => Models.BatchInvariance.ToLayerMajor(x, blocks);
        var output = Models.BatchInvariance.ToBlockMajor(
            UNet.Forward(L(modelInput), TimestepTensor(t), L(embeds), classLabels: L(classLabels)), blocks);
        return IFPipeline.CombineGuided(output, modelInput.shape[1] / 2, guidance, SchedulerConfig).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The stage II counterpart of <see cref="LensPipeline.WarmUp"/> (CUDA first-call setup and the --batch auto probe):
    /// one guided model call for one layer on zero images of the stage I and stage II sizes. Draws from no generator.
    /// </summary>
    /// <returns>the device memory the probe made the process reserve (driver view), or null where it cannot be measured</returns>
    public long? WarmUp(Tensor conditional, Tensor unconditional, SuperResolutionOptions o, int stage1Height, int stage1Width)
    {
        CheckOptions(o);
        var before = GpuMemory.Query();
        using (var scope = NewDisposeScope())
        using (torch.no_grad())
        using (var scheduler = CreateScheduler())
        {
            scheduler.SetTimesteps(o.Steps);
            var sample = torch.zeros(new long[] { 1, ImageChannels, o.Height, o.Width }, dtype: DType, device: Device);
            var stage1 = torch.zeros(new long[] { 1, ImageChannels, stage1Height, stage1Width }, dtype: DType, device: Device);
            var upscaled = nn.functional.interpolate(stage1, new long[] { o.Height, o.Width }, mode: InterpolationMode.Bilinear, align_corners: true);
            var embeds = BatchEmbeds(new[] { conditional }, unconditional, o.Guidance);
            GuidedPrediction(scheduler, sample, scheduler.Timesteps[0], embeds, o.Guidance, upscaled, o.NoiseLevel);
            if (Device.type == DeviceType.CUDA) cuda.synchronize(Device);
        }
        var after = GpuMemory.Query();
        return before is { } b && after is { } a ? Math.Max(0, b.Free - a.Free) : null;
    }

    internal override IEnumerable<nn.Module> ImageModules => [UNet];

    public override void Dispose() => UNet.Dispose();
}
