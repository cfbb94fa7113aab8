using DiffusionLens.Loading;
using DiffusionLens.Models;
using System.Diagnostics;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Sweep;

/// <summary>
/// The Diffusion Lens sweep: encode the prompt ONCE keeping every layer, pass each selected layer through the
/// encoder's final layer norm, and generate one image per layer with that as the conditional embedding (the
/// unconditional embedding stays the full-depth encoding of the negative prompt), all from the same seed.
/// Writes layer-XX.png (hidden-KK.png in hidden-state numbering, see <see cref="SweepOptions.LayerNumbering"/>),
/// grid.png and manifest.json.
/// </summary>
public static class LensSweep
{
    /// <param name="log">progress lines (null: quiet)</param>
    /// <param name="warn">warnings, e.g. a truncated prompt (null: none)</param>
    public static SweepResult Run(SweepOptions o, Action<string>? log = null, Action<string>? warn = null)
    {
        var sw = Stopwatch.StartNew();
        if (!o.AutoBatch && o.Batch < 1) throw new LensException($"--batch must be at least 1 (got {o.Batch})");
        Validate(o);
        using var output = new OutputFolder(o.OutDir, o.Overwrite);
        double prepareS = sw.Elapsed.TotalSeconds;
        // stage II first: its weights are checked before stage I's text encoder (T5-XXL for IF-I-XL) is read
        using var stage2 = o.Stage2Dir is null ? null : LoadStage2(o, log);
        double stage2LoadS = sw.Elapsed.TotalSeconds - prepareS;
        log?.Invoke($"loading {o.ModelDir} ({o.DType} on {o.Device}) ...");
        using var pipe = LensPipeline.Load(o.ModelDir, o.Device, o.DType, o.Variant, o.Scheduler);
        if (pipe.Device.type == DeviceType.CUDA) torch.cuda.synchronize(pipe.Device); // the load's queued copies count as load
        pipe.Tokenizer.Warn = warn;
        log?.Invoke($"loaded in {sw.Elapsed.TotalSeconds:F1} s");
        double loadS = sw.Elapsed.TotalSeconds - stage2LoadS - prepareS;
        var result = Run(pipe, o, output, log, loadS, stage2, stage2LoadS, prepareS);
        output.Commit();
        return result;
    }

    /// <summary>
    /// Checks the options against the model's config files before any weights load (a --layers typo must not cost a
    /// T5-XXL load): layers against the text encoder's num_hidden_layers (CLIP) / num_layers (T5), steps, guidance,
    /// the scheduler class, and a given size (SD: divisible by 8, as diffusers' check_inputs; IF: a multiple of the UNet's
    /// total resnet upsampling, as <see cref="IFPipeline.CheckSize"/>). The same checks run again once loaded.
    /// </summary>
    public static void Validate(SweepOptions o)
    {
        FusedMode(o, o.Device.StartsWith("cuda", StringComparison.OrdinalIgnoreCase) ? DeviceType.CUDA : DeviceType.CPU);
        if (o.Scheduler is not null) Schedulers.Scheduler.ResolveClassName(o.Scheduler); // a typo fails before the model is read
        if (o.Stage2Scheduler is not null) ResolveStage2Scheduler(o.Stage2Scheduler);
        LayerNumbering.Check(o.LayerNumbering);
        var index = ModelIndex.Load(o.ModelDir);
        bool isIf = index.ClassName == "IFPipeline";
        bool isXl = index.ClassName == "StableDiffusionXLPipeline";
        bool isFlux = index.ClassName == FluxPipeline.ClassName;
        if (!isIf && !isXl && !isFlux && index.ClassName != "StableDiffusionPipeline")
            throw new LensException($"unsupported pipeline '{index.ClassName}' in {Path.Combine(o.ModelDir, "model_index.json")}; supported: {LensPipeline.SupportedPipelines}"
                + (index.ClassName == IFSuperResolutionPipeline.ClassName ? " (a super-resolution stage: pass it with --stage2, and the IF stage I folder with --model)" : ""));
        CheckLensLayerNorm(o, index.ClassName);
        CheckFluxOptions(o, index.ClassName);
        var te = DiffusersConfig.Load(Path.Combine(index.Require("text_encoder"), "config.json"));
        int numLayers = isIf ? te.Int("num_layers", 6) : te.Int("num_hidden_layers", 12);
        if (isXl)
        {
            // the lensed encoder is text_encoder_2; its last layer is recomputed from the replaced penultimate one
            var te2Path = Path.Combine(index.Require("text_encoder_2"), "config.json");
            int n2 = DiffusersConfig.Load(te2Path).Int("num_hidden_layers", 12);
            StableDiffusionXLPipeline.CheckLayers(n2, te2Path);
            numLayers = n2 - 1;
        }
        if (isFlux)
        {
            // the lensed encoder is text_encoder_2 (T5); the transformer must take the 2x2-packed latents
            numLayers = DiffusersConfig.Load(Path.Combine(index.Require("text_encoder_2"), "config.json")).Int("num_layers", 6);
            FluxPipeline.CheckPacking(DiffusersConfig.Load(Path.Combine(index.Require("transformer"), "config.json")));
        }
        LayerSelection.Parse(o.Layers, numLayers, o.LayerNumbering);
        if (o.Steps is { } steps && steps < 1) throw new LensException($"--steps must be at least 1 (got {steps})");
        if (o.Guidance is { } g && !double.IsFinite(g)) throw new LensException($"--guidance must be a finite number (got {g})");
        CheckSeedOptions(o);
        var schedulerConfig = DiffusersConfig.Load(Path.Combine(index.Require("scheduler"), "scheduler_config.json"));
        var schedulerClass = o.Scheduler is null ? null : Schedulers.Scheduler.ResolveClassName(o.Scheduler);
        LensPipeline.CheckScheduler(index.ClassName, schedulerConfig, schedulerClass);
        if (o.Steps is int stepCount) CheckStepCount(schedulerConfig, schedulerClass, stepCount);
        ValidateStage2(o, index, te);
        if (o.Height is null && o.Width is null) return;
        if (isFlux)
        {
            var vaeCfg = DiffusersConfig.Load(Path.Combine(index.Require("vae"), "config.json"));
            int f = 1 << ((vaeCfg.Has("block_out_channels") ? vaeCfg.IntArray("block_out_channels").Length : 1) - 1);
            int fh = o.Height ?? 128 * f, fw = o.Width ?? 128 * f;
            if (fh % (2 * f) != 0 || fw % (2 * f) != 0 || fh < 2 * f || fw < 2 * f)
                throw new LensException($"height and width must be multiples of {2 * f} for FLUX (twice the VAE scale factor, for the 2x2 latent packing; got {fh}x{fw})");
            return;
        }
        var unet = DiffusersConfig.Load(Path.Combine(index.Require("unet"), "config.json"));
        int size = unet.Int("sample_size", isXl ? 128 : 64);
        if (!isIf && DiffusersConfig.Load(Path.Combine(index.Require("vae"), "config.json")) is { } vae && vae.Has("block_out_channels")) size *= 1 << (vae.IntArray("block_out_channels").Length - 1);
        int h = o.Height ?? size, w = o.Width ?? size;
        if (h < 8 || w < 8) throw new LensException($"image size {h}x{w} is too small");
        int m = 8;
        if (isIf)
        {
            var up = unet.StrArray("up_block_types");
            bool resnetUp = up.Take(up.Length - 1).Any(t => t is "ResnetUpsampleBlock2D" or "SimpleCrossAttnUpBlock2D");
            m = resnetUp ? 1 << (up.Length - 1) : 1;
        }
        if (h % m != 0 || w % m != 0)
            throw new LensException(isIf
                ? $"height and width must be multiples of {m} for this IF UNet (got {h}x{w}); nearest: {h / m * m}x{w / m * m} or {(h + m - 1) / m * m}x{(w + m - 1) / m * m}"
                : $"height and width must be divisible by 8 (got {h}x{w}), as diffusers requires");
    }

    /// <summary>--lens-layer-norm applies to SDXL (StableDiffusionXLPipeline) only.</summary>
    private static void CheckLensLayerNorm(SweepOptions o, string pipelineClass)
    {
        if (o.LensLayerNorm is not null && pipelineClass != "StableDiffusionXLPipeline")
            throw new LensException($"--lens-layer-norm applies to Stable Diffusion XL models (StableDiffusionXLPipeline) only; {o.ModelDir} is a {pipelineClass}");
    }

    /// <summary>
    /// FLUX's own options and limits: --max-sequence-length applies to FLUX only (1..512); FLUX takes no negative prompt
    /// (it runs no classifier-free guidance) and no --clean-caption (IF's).
    /// </summary>
    private static void CheckFluxOptions(SweepOptions o, string pipelineClass)
    {
        bool isFlux = pipelineClass == FluxPipeline.ClassName;
        if (o.MaxSequenceLength is int n)
        {
            if (!isFlux) throw new LensException($"--max-sequence-length applies to FLUX models (FluxPipeline) only; {o.ModelDir} is a {pipelineClass}");
            FluxPipeline.CheckMaxSequenceLength(n);
        }
        if (isFlux && o.CleanCaption is not null) throw new LensException("--clean-caption applies to DeepFloyd IF models only");
        if (isFlux && o.NegativePrompt.Length != 0)
            throw new LensException("--negative-prompt does not apply to FLUX models: FluxPipeline guides with an embedded guidance value, not with a negative prompt (true classifier-free guidance is not supported here)");
    }

    /// <summary>--seed-policy and --images-per-layer, checked before loading and again by a sweep on a loaded pipeline.</summary>
    private static void CheckSeedOptions(SweepOptions o)
    {
        if (o.SeedPolicy is not ("reseed" or "continue")) throw new LensException($"--seed-policy must be reseed or continue (got '{o.SeedPolicy}')");
        if (o.ImagesPerLayer < 1) throw new LensException($"--images-per-layer must be at least 1 (got {o.ImagesPerLayer})");
    }

    /// <summary>
    /// The step count against the scheduler's schedule: every timestep it would use must be a training timestep
    /// (e.g. PNDM with steps_offset 1 at 1000 steps reaches t = 1000 of a 1000-step schedule, where diffusers fails
    /// indexing alphas_cumprod; here it is a usage error before any weights load).
    /// </summary>
    private static void CheckStepCount(DiffusersConfig schedulerConfig, string? schedulerClass, int steps)
    {
        using var scheduler = Schedulers.Scheduler.FromConfig(schedulerConfig, schedulerClass);
        try
        {
            // FLUX's schedule is the pipeline's (its sigmas and a mu from the image size, here the base size's)
            if (scheduler is Schedulers.FlowMatchEulerDiscreteScheduler flow)
                flow.SetSigmas(Schedulers.FlowMatchEulerDiscreteScheduler.PipelineSigmas(steps), flow.CalculateShift(flow.BaseImageSeqLen));
            else scheduler.SetTimesteps(steps);
        }
        catch (Exception e) when (e is not LensException)
        {
            throw new LensException($"--steps {steps}: {scheduler.GetType().Name} cannot make a schedule of {steps} steps from {scheduler.NumTrainTimesteps} training timesteps ({e.Message})");
        }
        long last = scheduler.Timesteps.Length == 0 ? 0 : scheduler.Timesteps.Max();
        if ((last >= scheduler.NumTrainTimesteps && !scheduler.TakesTimestepAtTrainCount) || scheduler.Timesteps.Min() < 0)
            throw new LensException($"--steps {steps}: {scheduler.GetType().Name}'s schedule reaches timestep {last}, outside its {scheduler.NumTrainTimesteps} training timesteps; use fewer steps");
    }

    /// <summary>
    /// The stage II checks of <see cref="Validate"/>, from config files alone: stage II options need --stage2; --stage2
    /// needs an IF stage I (IFPipeline); the folder is an IF super-resolution pipeline whose UNet builds here, takes
    /// stage I's image channels twice and embeddings as wide as stage I's T5 (d_model); steps, guidance, the noise
    /// level (within the image noising scheduler's num_train_timesteps) and its sample size.
    /// </summary>
    private static void ValidateStage2(SweepOptions o, ModelIndex index, DiffusersConfig textEncoder)
    {
        if (o.Stage2Dir is null)
        {
            var given = new[] { (o.Stage2Steps is not null, "--stage2-steps"), (o.Stage2Guidance is not null, "--stage2-guidance"), (o.NoiseLevel is not null, "--noise-level"), (o.Stage2Scheduler is not null, "--stage2-scheduler") }
                .Where(x => x.Item1).Select(x => x.Item2).ToList();
            if (given.Count > 0) throw new LensException($"{string.Join(", ", given)} appl{(given.Count == 1 ? "ies" : "y")} to a DeepFloyd IF stage II only: pass the super-resolution model with --stage2");
            return;
        }
        if (index.ClassName != "IFPipeline")
            throw new LensException($"--stage2 applies to DeepFloyd IF stage I models (IFPipeline) only; {o.ModelDir} is a {index.ClassName}");
        var s2 = IFSuperResolutionPipeline.Validate(o.Stage2Dir, o.Stage2Scheduler is null ? null : ResolveStage2Scheduler(o.Stage2Scheduler));
        var unet1 = DiffusersConfig.Load(Path.Combine(index.Require("unet"), "config.json"));
        int channels1 = unet1.Int("in_channels", 4);
        if (s2.ImageChannels != channels1)
            throw new LensException($"--stage2 {o.Stage2Dir}: its UNet upscales {s2.ImageChannels}-channel images (in_channels {2 * s2.ImageChannels}) but stage I makes {channels1}-channel images");
        int dModel = textEncoder.Int("d_model", 512);
        if (s2.EncoderDim != dModel)
            throw new LensException($"--stage2 {o.Stage2Dir}: its UNet takes {s2.EncoderDim}-wide prompt embeddings (encoder_hid_dim / cross_attention_dim) but stage I's text encoder makes {dModel}-wide ones (d_model)");
        if (o.Stage2Steps is { } steps && steps < 1) throw new LensException($"--stage2-steps must be at least 1 (got {steps})");
        if (o.Stage2Guidance is { } g && !double.IsFinite(g)) throw new LensException($"--stage2-guidance must be a finite number (got {g})");
        IFSuperResolutionPipeline.CheckNoiseLevel(o.NoiseLevel ?? IFSuperResolutionPipeline.DefaultNoiseLevel, s2.NoiseLevelLimit);
        if (s2.SampleSize is not int size)
            throw new LensException($"--stage2 {o.Stage2Dir}: its unet config has no sample_size (the stage II image size)");
        if (size % s2.SizeMultiple != 0)
            throw new LensException($"--stage2 {o.Stage2Dir}: its sample_size {size} is not a multiple of {s2.SizeMultiple}, which this IF UNet needs");
    }

    /// <summary>A --stage2-scheduler name to its diffusers class; an unknown name fails naming the option.</summary>
    internal static string ResolveStage2Scheduler(string name)
    {
        try { return Schedulers.Scheduler.ResolveClassName(name); }
        catch (LensException e) { throw new LensException($"--stage2-scheduler: {e.Message}"); }
    }

    private static IFSuperResolutionPipeline LoadStage2(SweepOptions o, Action<string>? log)
    {
        var sw = Stopwatch.StartNew();
        log?.Invoke($"loading stage II {o.Stage2Dir} ({o.DType} on {o.Device}) ...");
        var stage2 = IFSuperResolutionPipeline.Load(o.Stage2Dir!, o.Device, o.DType, o.Variant, o.Stage2Scheduler);
        if (stage2.Device.type == DeviceType.CUDA) torch.cuda.synchronize(stage2.Device);
        log?.Invoke($"loaded stage II in {sw.Elapsed.TotalSeconds:F1} s");
        return stage2;
    }

    /// <summary>Runs a sweep on an already loaded pipeline (used by audits that sweep one model many times).</summary>
    /// <param name="pipe">the loaded pipeline of <see cref="SweepOptions.ModelDir"/></param>
    /// <param name="o">what to render</param>
    /// <param name="log">progress lines (null: quiet)</param>
    public static SweepResult Run(LensPipeline pipe, SweepOptions o, Action<string>? log = null) => Run(pipe, o, log, stage2: null);

    /// <param name="stage2">the loaded stage II of <see cref="SweepOptions.Stage2Dir"/>; null: loaded here when the options name one</param>
    internal static SweepResult Run(LensPipeline pipe, SweepOptions o, Action<string>? log, IFSuperResolutionPipeline? stage2)
    {
        if (o.Scheduler is not null && Schedulers.Scheduler.ResolveClassName(o.Scheduler) != pipe.SchedulerName)
            throw new LensException($"the pipeline was loaded with {pipe.SchedulerName}, not the requested scheduler {o.Scheduler}");
        using var output = new OutputFolder(o.OutDir, o.Overwrite);
        using var own = o.Stage2Dir is not null && stage2 is null ? LoadStage2(o, log) : null;
        var result = Run(pipe, o, output, log, 0, stage2 ?? own);
        output.Commit();
        return result;
    }

    /// <summary>zlib level of the sweep's PNGs: the fastest (lossless at every level, so the same pixels).</summary>
    public const int PngZlibLevel = 1;

    // LENS_TRACE_HOST=1 (diagnosis, issue #11): the host side of the output path, line by line on stderr
    private static readonly bool TraceHost = Environment.GetEnvironmentVariable("LENS_TRACE_HOST") == "1";
    private static readonly Stopwatch TraceClock = Stopwatch.StartNew();
    private static void Trace(string what)
    {
        if (TraceHost) Console.Error.WriteLine($"[host {TraceClock.Elapsed.TotalMilliseconds,9:F1} ms, thread {Environment.CurrentManagedThreadId,3}, pool {ThreadPool.ThreadCount,3}, gc2 {GC.CollectionCount(2)}, gc pause {GC.GetTotalPauseDuration().TotalMilliseconds:F0} ms] {what}");
    }

    private static Task<double> WritePng(RgbImage image, string path) => Task.Run(() =>
    {
        Trace($"png start {Path.GetFileName(path)}");
        var sw = Stopwatch.StartNew();
        image.SavePng(path, PngZlibLevel);
        Trace($"png done  {Path.GetFileName(path)} {sw.Elapsed.TotalMilliseconds:F1} ms");
        return sw.Elapsed.TotalSeconds;
    });

    /// <summary>--fused-kernels (else LENS_FUSED_KERNELS, else auto); on needs CUDA.</summary>
    private static Kernels.FusedKernels.Mode FusedMode(SweepOptions o, DeviceType device)
    {
        var mode = Kernels.FusedKernels.Parse(o.FusedKernels, "--fused-kernels") ?? Kernels.FusedKernels.Current;
        if (mode == Kernels.FusedKernels.Mode.On && device != DeviceType.CUDA)
            throw new LensException("--fused-kernels on needs a CUDA device (the kernels are CUDA kernels); use auto or off on the CPU");
        return mode;
    }

    private static SweepResult Run(LensPipeline pipe, SweepOptions o, OutputFolder output, Action<string>? log, double loadS,
        IFSuperResolutionPipeline? stage2 = null, double stage2LoadS = 0, double prepareS = 0)
    {
        if (o.Stage2Dir is null && stage2 is not null) throw new ArgumentException("a stage II was given but the options name none", nameof(stage2));
        if (stage2 is not null && pipe is not IFPipeline)
            throw new LensException($"--stage2 applies to DeepFloyd IF stage I models (IFPipeline) only; {o.ModelDir} is a {pipe.PipelineName}");
        if (stage2 is not null && (o.Stage2Scheduler is null ? stage2.SchedulerClass is not null : ResolveStage2Scheduler(o.Stage2Scheduler) != stage2.SchedulerName))
            throw new LensException($"the stage II was loaded with {stage2.SchedulerName}, not the requested --stage2-scheduler {o.Stage2Scheduler ?? "(its own)"}");
        if (stage2 is null && o.Stage2Scheduler is not null)
            throw new LensException("--stage2-scheduler applies to a DeepFloyd IF stage II only: pass the super-resolution model with --stage2");
        var total = Stopwatch.StartNew();
        var gcPause0 = GC.GetTotalPauseDuration();
        int gcFull0 = GC.CollectionCount(2);
        if (!o.AutoBatch && o.Batch < 1) throw new LensException($"--batch must be at least 1 (got {o.Batch})");
        var d = pipe.Defaults;
        CheckSeedOptions(o);
        using var fused = Kernels.FusedKernels.Use(FusedMode(o, pipe.Device.type));
        CheckLensLayerNorm(o, pipe.PipelineName);
        CheckFluxOptions(o, pipe.PipelineName);
        if (pipe is StableDiffusionXLPipeline xl) xl.LensLayerNorm = o.LensLayerNorm ?? true;
        if (pipe is FluxPipeline flux) flux.MaxSequenceLength = o.MaxSequenceLength ?? FluxPipeline.DefaultMaxSequenceLength;
        var gen = new GenerationOptions(o.Seed, o.Steps ?? d.Steps, o.Guidance ?? d.Guidance, o.Height ?? d.Height, o.Width ?? d.Width)
            { ImagesPerPrompt = o.ImagesPerLayer };
        int perLayerImages = o.ImagesPerLayer;
        if (gen.Steps < 1) throw new LensException($"--steps must be at least 1 (got {gen.Steps})");
        if (gen.Height < 8 || gen.Width < 8) throw new LensException($"image size {gen.Height}x{gen.Width} is too small");
        var numbering = LayerNumbering.Check(o.LayerNumbering);
        var layers = LayerSelection.Parse(o.Layers, pipe.NumLayers, numbering);
        bool lensNumbering = numbering == LayerNumbering.Lens;
        var gen2 = stage2?.Options(o.Stage2Steps, o.Stage2Guidance, o.NoiseLevel);
        if (gen2 is not null) stage2!.CheckOptions(gen2);
        var timer = new PhaseTimer(pipe.Device);
        var timer2 = new PhaseTimer(pipe.Device);
        bool onCuda = pipe.Device.type == DeviceType.CUDA;
        bool batchInvariant = o.BatchInvariant ?? onCuda; // auto: on for CUDA (cuDNN's algorithms depend on the batch)

        // the weights' sha256 for the manifest, read on a worker thread while the GPU works (not on the critical path)
        var hashClock = Stopwatch.StartNew();
        var hashes = Task.Run(() => { var h = pipe.WeightHashes(); var s = hashClock.Elapsed.TotalSeconds; return (h, s); });
        var hashes2 = stage2 is null ? null : Task.Run(stage2.WeightHashes);

        // CUDA: first-call setup (cuBLAS/cuDNN handles, lazily loaded kernels, per-shape algorithm choices, allocator
        // growth) outside the timed phases, stated in the manifest as timings_s.warmup; for --batch auto it is also the
        // test of the batch (all layers first, halved on out-of-memory). On the CPU there is nothing to warm up and auto
        // means 1.
        double warmupS = 0;
        var warm = Stopwatch.StartNew();
        if (onCuda) pipe.EncodeLayers(o.NegativePrompt, o.CleanCaption).Dispose(); // the text encoder's first call
        warmupS += warm.Elapsed.TotalSeconds;

        var enc = Stopwatch.StartNew();
        using var prompt = pipe.EncodeLayers(o.Prompt, o.CleanCaption);
        using var uncond = pipe.Unconditional(o.NegativePrompt, o.CleanCaption);
        timer.Sync();
        double encodeS = enc.Elapsed.TotalSeconds;
        log?.Invoke($"encoded the prompt once: {pipe.NumLayers} layers; rendering {layers.Length} {(lensNumbering ? "layer(s)" : "hidden state(s)")} at {gen.Width}x{gen.Height}, {gen.Steps} steps"
            + (gen2 is null ? "" : $", then stage II at {gen2.Width}x{gen2.Height}, {gen2.Steps} steps, noise level {gen2.NoiseLevel}"));

        int batch = o.Batch;
        if (onCuda)
        {
            warm.Restart();
            using (var first = pipe.LensEmbedding(prompt, numbering, layers[0]))
            {
                bool warmed = false;
                if (stage2 is not null)
                {
                    // stage II's images are larger: the batch is the smaller of what fits each stage, from one-layer probes
                    long? probe = pipe.WarmUp(first, uncond, gen);
                    if (stage2.WarmUp(first, uncond, gen2!, gen.Height, gen.Width) is long probe2)
                        probe = probe is long p1 ? Math.Max(p1, probe2) : probe2;
                    // the probe measured one layer of one image: a layer of N images takes N times the rows
                    if (o.AutoBatch) batch = Math.Max(1, LensPipeline.AutoBatch(probe, layers.Length * perLayerImages) / perLayerImages);
                    warmed = Math.Min(batch, layers.Length) * perLayerImages == 1;
                }
                else if (o.AutoBatch) batch = layers.Length; // the largest batch first; the warm-up at it is the test
                // the shapes the sweep runs: one UNet call and one decode at the batch (halved while --batch auto does not fit)
                while (!warmed)
                {
                    try
                    {
                        using var invariant = BatchInvariance.Layers(batchInvariant ? Math.Min(batch, layers.Length) : 0);
                        pipe.WarmUp(first, uncond, gen, Math.Min(batch, layers.Length) * perLayerImages);
                        warmed = true;
                    }
                    catch (Exception e) when (o.AutoBatch && batch > 1 && e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase))
                    {
                        batch = Math.Max(1, batch / 2);
                        log?.Invoke($"--batch auto: out of device memory warming up, trying {batch} layer(s) per batch");
                    }
                }
            }
            HostWarmUp.Run(pipe.Device, PngZlibLevel);
            warmupS += warm.Elapsed.TotalSeconds;
            timer.SampleMemory();
        }
        else if (o.AutoBatch) batch = 1;
        if (o.AutoBatch) log?.Invoke($"--batch auto: {batch} layer(s) per UNet batch");

        // --seed-policy continue: each layer's generator in the state the previous layers' calls leave it in (their draws
        // replayed on the CPU), so batched layers draw exactly what the serial loop draws
        // (with a stage II a layer's draws are its stage I call's, then its stage II call's)
        var layerGenerators = o.SeedPolicy != "continue" ? new List<Generator>()
            : LayerGenerators.Continue(o.Seed, layers.Length, g =>
            {
                pipe.ConsumeCallNoise(g, gen);
                stage2?.ConsumeCallNoise(g, gen2!, perLayerImages);
            });
        using var disposeGenerators = new DisposeAll(layerGenerators);

        var files = new SortedDictionary<int, string>();
        var layerFiles = new SortedDictionary<int, string[]>();
        var stage1Files = new SortedDictionary<int, string[]>();
        int stage2Calls = 0;
        var images = new List<(string, RgbImage)>();
        var perLayer = new SortedDictionary<string, double>(SweepManifest.LayerOrder);
        var writes = new List<Task<double>>(); // PNG encoding runs on the thread pool while the next batch denoises
        double toHostS = 0;
        int unetCalls = 0;
        for (int start = 0; start < layers.Length;)
        {
            var chunk = layers.Skip(start).Take(batch).ToArray();
            var t0 = Stopwatch.StartNew();
            var conds = chunk.Select(l => pipe.LensEmbedding(prompt, numbering, l)).ToList();
            // forks: a retried batch (out of memory) starts again from the same states
            var chunkGenerators = layerGenerators.Count == 0 ? null
                : layerGenerators.Skip(start).Take(chunk.Length).Select(Schedulers.NoisePlan.Fork).ToList();
            int lastReported = -1;
            Interrupt.ThrowIfRequested();
            Tensor unit;
            Tensor? unit1 = null;
            try
            {
                // --batch-invariant: the batch's convolutions give each layer --batch 1's numbers
                using var invariant = BatchInvariance.Layers(batchInvariant ? chunk.Length : 0);
                Action<int, int> OnStep(string stage, Action<int> calls) => (step, of) =>
                {
                    Interrupt.ThrowIfRequested(); // Ctrl-C: stop here; the output folder is removed on the way out
                    calls(of);
                    int pct = step * 100 / of;
                    if (pct / 10 != lastReported || step == of)
                    {
                        lastReported = pct / 10;
                        log?.Invoke($"  layer {(lensNumbering ? "" : "hidden state ")}{string.Join(",", chunk)} [{start + chunk.Length}/{layers.Length}] {stage}step {step}/{of}");
                    }
                };
                if (stage2 is null)
                    unit = pipe.Generate(conds, uncond, gen, OnStep("", of => unetCalls = of), timer, chunkGenerators, onDevice: true);
                else
                {
                    // diffusers' two-stage usage per layer: stage I with output_type="pt", then stage II on those
                    // images with the same layer's embedding, drawing from the same generator (reseed: one seeded
                    // generator stands for every layer's; continue: each layer's own, in its replayed state)
                    using var scope = NewDisposeScope();
                    using var seeded = chunkGenerators is null ? new Generator((ulong)o.Seed) : null;
                    IReadOnlyList<Generator> generators = chunkGenerators ?? [seeded!];
                    var images1 = pipe.GenerateImages(conds, uncond, gen, generators, OnStep("", of => unetCalls = of), timer);
                    unit1 = DenoisingPipeline.ToUnitHwc(images1, onDevice: true).MoveToOuterDisposeScope();
                    lastReported = -1;
                    unit = stage2.Generate(images1, conds, uncond, gen2!, generators, perLayerImages, OnStep("stage II ", of => stage2Calls = of), timer2, onDevice: true)
                        .MoveToOuterDisposeScope();
                }
            }
            catch (Exception e) when (o.AutoBatch && batch > 1 && e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase))
            {
                batch = Math.Max(1, batch / 2);
                log?.Invoke($"--batch auto: out of device memory, retrying with {batch} layer(s) per batch");
                continue;
            }
            finally
            {
                foreach (var c in conds) c.Dispose();
                foreach (var g in chunkGenerators ?? []) g.Dispose();
            }
            using (unit)
            using (unit1)
            {
                var toHost = Stopwatch.StartNew();
                Trace($"to host: start (torch threads {torch.get_num_threads()}, processors {Environment.ProcessorCount})");
                var rgb = RgbImage.FromUnitNhwc(unit);
                var rgb1 = unit1 is null ? null : RgbImage.FromUnitNhwc(unit1);
                toHostS += toHost.Elapsed.TotalSeconds;
                Trace($"to host: done {toHost.Elapsed.TotalMilliseconds:F1} ms");
                for (int j = 0; j < chunk.Length; j++)
                {
                    var names = new string[perLayerImages];
                    var names1 = new string[perLayerImages];
                    var stem = LayerNumbering.FileStem(numbering, chunk[j]);
                    var label = LayerNumbering.Label(numbering, chunk[j]);
                    for (int i = 0; i < perLayerImages; i++)
                    {
                        var img = rgb[j * perLayerImages + i];
                        var name = perLayerImages == 1 ? $"{stem}.png" : $"{stem}-{i}.png";
                        var path = output.PathOf(name);
                        writes.Add(WritePng(img, path));
                        names[i] = name;
                        images.Add((perLayerImages == 1 ? label : $"{label}-{i}", img));
                        if (rgb1 is not null)
                        {
                            // the stage I image stage II upscaled into `name`: layer-XX-stage1.png, or layer-XX-stage1-i.png
                            var img1 = rgb1[j * perLayerImages + i];
                            var name1 = perLayerImages == 1 ? $"{stem}-stage1.png" : $"{stem}-stage1-{i}.png";
                            var path1 = output.PathOf(name1);
                            writes.Add(WritePng(img1, path1));
                            names1[i] = name1;
                        }
                    }
                    files[chunk[j]] = names[0];
                    layerFiles[chunk[j]] = names;
                    if (rgb1 is not null) stage1Files[chunk[j]] = names1;
                    perLayer[chunk[j].ToString()] = Math.Round(t0.Elapsed.TotalSeconds / chunk.Length, 4);
                }
            }
            start += chunk.Length;
        }
        var writeClock = Stopwatch.StartNew();
        Trace("grid queued");
        writes.Add(Task.Run(() =>
        {
            var sw = Stopwatch.StartNew();
            var grid = Grid.Compose(images, perLayerImages > 1 ? perLayerImages : null);
            Trace($"grid composed {grid.Width}x{grid.Height} {sw.Elapsed.TotalMilliseconds:F1} ms");
            grid.SavePng(output.PathOf("grid.png"), PngZlibLevel);
            Trace($"grid written {sw.Elapsed.TotalMilliseconds:F1} ms");
            return sw.Elapsed.TotalSeconds;
        }));
        Task.WaitAll(writes);
        Trace("all images written");
        double imageEncodeS = writes.Sum(t => t.Result);
        var hashWait = Stopwatch.StartNew();
        var (weightHashes, hashS) = hashes.Result;
        var weightHashes2 = hashes2?.Result;
        double hashWaitS = hashWait.Elapsed.TotalSeconds;

        var imageModules = pipe.ImageModules.Concat(stage2?.ImageModules ?? []).ToList(); // for the manifest's counts
        var manifest = new SweepManifest
        {
            CreatedUtc = DateTime.UtcNow.ToString("o"),
            Model = Path.GetFullPath(o.ModelDir),
            Pipeline = pipe.PipelineName,
            Kind = pipe.Kind,
            Prompt = o.Prompt,
            ProcessedPrompt = prompt.Text,
            NegativePrompt = o.NegativePrompt,
            CleanCaption = pipe.Kind == "if" ? (o.CleanCaption ?? true) : null,
            Seed = o.Seed,
            Steps = gen.Steps,
            UnetCallsPerImage = unetCalls,
            Guidance = gen.Guidance,
            Scheduler = pipe.SchedulerName,
            SchedulerConfig = pipe.SchedulerEffectiveConfig(),
            Height = gen.Height,
            Width = gen.Width,
            Dtype = o.DType,
            Device = o.Device,
            Variant = pipe.Variant,
            WeightsSha256 = weightHashes,
            Batch = batch,
            BatchRequested = o.AutoBatch ? "auto" : o.Batch.ToString(),
            BatchInvariant = batchInvariant,
            FusedKernels = Kernels.FusedKernels.Describe(),
            BatchInvariance = batchInvariant
                && BatchInvariance.Count(imageModules) is { Count: > 0 } counts
                ? new BatchInvarianceManifest
                {
                    CanonicalLayers = BatchInvariance.CanonicalLayers,
                    CheckedShapes = new(counts.ToDictionary(kv => kv.Key, kv => kv.Value.Checked), StringComparer.Ordinal),
                    PaddedShapes = new(counts.ToDictionary(kv => kv.Key, kv => kv.Value.Padded), StringComparer.Ordinal),
                    PerLayerShapes = new(counts.ToDictionary(kv => kv.Key, kv => kv.Value.PerLayer), StringComparer.Ordinal),
                } : null,
            ConvWeightsChannelsLast = Models.Conv2d.CountChannelsLast(imageModules) is > 0 and var cl ? cl : null,
            NumLayers = pipe.NumLayers,
            LayerNumbering = numbering,
            Layers = layers,
            Lens = pipe is StableDiffusionXLPipeline sdxl ? SweepManifest.SdxlLensDescription(sdxl.LensLayerNorm, lensNumbering)
                : pipe is FluxPipeline ? SweepManifest.FluxLensDescription(lensNumbering)
                : lensNumbering ? SweepManifest.LensDescription : SweepManifest.HiddenStateLensDescription,
            LensLayerNorm = pipe is StableDiffusionXLPipeline sdxl2 ? sdxl2.LensLayerNorm : null,
            MaxSequenceLength = pipe is FluxPipeline flux2 ? flux2.MaxSequenceLength : null,
            Files = new SortedDictionary<string, string>(files.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value), SweepManifest.LayerOrder),
            SeedPolicy = o.SeedPolicy,
            ImagesPerLayer = perLayerImages,
            LayerFiles = perLayerImages == 1 ? null
                : new SortedDictionary<string, string[]>(layerFiles.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value), SweepManifest.LayerOrder),
            Stage1Files = stage2 is null ? null : new SortedDictionary<string, string>(stage1Files.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value[0]), SweepManifest.LayerOrder),
            Stage1LayerFiles = stage2 is null || perLayerImages == 1 ? null
                : new SortedDictionary<string, string[]>(stage1Files.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value), SweepManifest.LayerOrder),
            Stage2 = stage2 is null ? null : new Stage2Manifest
            {
                Model = Path.GetFullPath(stage2.ModelDir),
                Pipeline = stage2.PipelineName,
                Scheduler = stage2.SchedulerName,
                SchedulerConfig = stage2.SchedulerEffectiveConfig(),
                Steps = gen2!.Steps,
                UnetCallsPerImage = stage2Calls,
                Guidance = gen2.Guidance,
                NoiseLevel = gen2.NoiseLevel,
                Height = gen2.Height,
                Width = gen2.Width,
                Variant = stage2.Variant,
                WeightsSha256 = weightHashes2!,
                LoadS = Math.Round(stage2LoadS, 4),
                DenoiseS = Math.Round(timer2.Seconds.GetValueOrDefault("denoise"), 4),
            },
            TimingsS = new SweepTimings
            {
                Prepare = Math.Round(prepareS, 4),
                Load = Math.Round(loadS, 4),
                Encode = Math.Round(encodeS, 4),
                Warmup = Math.Round(warmupS, 4),
                Denoise = Math.Round(timer.Seconds.GetValueOrDefault("denoise"), 4),
                DenoisePerStep = timer.Steps > 0 ? Math.Round(timer.Seconds.GetValueOrDefault("denoise") / timer.Steps, 5) : 0,
                Decode = Math.Round(timer.Seconds.GetValueOrDefault("decode"), 4),
                ImagesToHost = Math.Round(toHostS, 4),
                WriteImages = 0, // set below, once the manifest itself is written
                ImageEncodingBackground = Math.Round(imageEncodeS, 4),
                WeightsHashBackground = Math.Round(hashS, 4),
                WeightsHashWait = Math.Round(hashWaitS, 4),
                GcPause = Math.Round((GC.GetTotalPauseDuration() - gcPause0).TotalSeconds, 4),
                GcFullCollections = GC.CollectionCount(2) - gcFull0,
                StepSeconds = timer.Profile ? timer.StepSeconds.Select(x => Math.Round(x, 5)).ToArray() : null,
                StepQueueSeconds = timer.Profile ? timer.StepQueueSeconds.Select(x => Math.Round(x, 5)).ToArray() : null,
                PerLayer = perLayer,
                Total = 0,
            },
            GpuMemoryPeakGib = Math.Max(timer.PeakDeviceBytes ?? -1, timer2.PeakDeviceBytes ?? -1) is long peak && peak >= 0 ? Math.Round(peak / (double)(1L << 30), 3) : null,
        };
        // image writing on the critical path: waiting for the background PNGs, the grid, and the manifest
        double writeS = writeClock.Elapsed.TotalSeconds, sweepS = total.Elapsed.TotalSeconds;
        double otherS = sweepS - warmupS - encodeS - timer.Seconds.Values.Sum() - timer2.Seconds.Values.Sum() - toHostS - writeS;
        manifest = manifest with { TimingsS = manifest.TimingsS with
        {
            WriteImages = Math.Round(writeS, 4), Other = Math.Round(Math.Max(0, otherS), 4),
            Total = Math.Round(sweepS + prepareS + loadS + stage2LoadS, 4),
        } };
        File.WriteAllText(output.PathOf("manifest.json"), manifest.ToJson());
        return new SweepResult
        {
            OutDir = output.FinalPath,
            Layers = layers,
            LayerNumbering = numbering,
            LayerImages = files.ToDictionary(kv => kv.Key, kv => Path.Combine(output.FinalPath, kv.Value)),
            GridPath = Path.Combine(output.FinalPath, "grid.png"),
            ManifestPath = Path.Combine(output.FinalPath, "manifest.json"),
        };
    }
}

/// <summary>Disposes every item of a list on the way out of a using block.</summary>
internal sealed class DisposeAll(IReadOnlyList<IDisposable> items) : IDisposable
{
    public void Dispose()
    {
        foreach (var item in items) item.Dispose();
    }
}
