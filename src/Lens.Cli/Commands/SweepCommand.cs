using DiffusionLens.Sweep;

namespace DiffusionLens.Cli.Commands;

internal sealed class SweepCommand : ICommand
{
    public string Name => "sweep";
    public string Summary => "render one image per text-encoder layer (the Diffusion Lens)";
    public string Usage => """
        lens sweep --prompt TEXT --out DIR [options]

          --model DIR|ORG/NAME   diffusers model folder, or a Hub id looked up in / downloaded to the Hugging Face
                                 cache (HF_HUB_CACHE, HF_HOME; HF_TOKEN for gated models; HF_HUB_OFFLINE=1)
                                 (default: the embedded tiny SD model)
          --revision REV         Hub branch, tag or commit of a Hub id (default main)
          --prompt TEXT          the prompt
          --negative-prompt TEXT unconditional prompt, encoded at full depth (default ""; FLUX takes none)
          --seed N               seed of the CPU generator the initial noise is drawn from (default 17)
          --steps N              inference steps (default: the pipeline's, 50 for SD and SDXL, 100 for IF, 28 for FLUX)
          --guidance X           classifier-free guidance scale (default 7.5 for SD, 5.0 for SDXL, 7.0 for IF; FLUX:
                                 the embedded guidance of a guidance_embeds transformer, default 3.5, unused by
                                 FLUX.1-schnell)
          --height N --width N   image size (default: the model's sample size)
          --layers SPEC          all | 0,3,5 | 0:12:2 (start:stop:step, stop exclusive)   (default all)
          --layer-numbering N    lens: layers 0..N-1, layer L = the output of encoder layer L (layer-XX.png);
                                 hidden-state: transformers' hidden_states 0..N, the paper's numbering, where 0 is
                                 the embedding output and k the output of layer k-1 (hidden-KK.png); --layers and
                                 manifest.json use the chosen numbering (default lens)
          --device cpu|cuda|cuda:N (default cpu)
          --dtype float32|float16|bfloat16 (default float32)
          --scheduler NAME       run this scheduler instead of the model's own, built from the model's scheduler
                                 config as diffusers' SchedulerClass.from_config(pipe.scheduler.config): a diffusers
                                 class name (DPMSolverMultistepScheduler, DDIMScheduler, EulerDiscreteScheduler,
                                 PNDMScheduler, DDPMScheduler) or dpm++, ddim, euler, pndm, ddpm (default: the
                                 model's own; recorded in manifest.json with its effective config). With --stage2 it
                                 is stage I's only, as in the paper's code (see --stage2-scheduler)
          --variant NAME         weights variant, as diffusers' variant= (e.g. fp16: model.fp16.safetensors); each
                                 component with that variant's files loads them, the others their plain files
                                 (default: plain files only)
          --clean-caption BOOL   IF only: diffusers' caption cleaning (default true)
          --lens-layer-norm on|off  Stable Diffusion XL only: the layer output that replaces text_encoder_2's
                                 penultimate output passes through its final layer norm (on, the nnsight tutorial's
                                 default) or not (off); lens layers are 0..N-2 (default on)
          --max-sequence-length N  FLUX only: T5's padding/truncation length, diffusers' max_sequence_length (1..512,
                                 default 512)
          --batch N|auto         layers denoised together in one UNet batch (1 = diffusers' exact batch; auto = the
                                 largest that fits in free GPU memory, recorded in manifest.json; default: auto on
                                 cuda, 1 on cpu)
          --batch-invariant auto|on|off  on: a layer's images do not depend on how many layers share its batch
                                 (--batch auto gives exactly --batch 1's images): every kernel gives each layer's rows
                                 the numbers of a call of 12 layers, padding smaller calls where their numbers differ
                                 (checked once per shape; recorded in manifest.json); off: every call as it is, images
                                 within a level of --batch 1's (default auto: on for cuda, off for cpu)
          --fused-kernels auto|on|off  GroupNorm fused with the bias, scale-shift and activation around it, and the
                                 residual sums, as CUDA kernels compiled once by NVRTC (cached in ~/.cache/diffusion-lens);
                                 auto: float16/bfloat16 on CUDA when NVRTC is found; on: also float32, an error without
                                 NVRTC; off: libtorch's ops, diffusers' op-for-op numbers (default auto; recorded in
                                 manifest.json)
          --seed-policy P        reseed: every layer's call starts from a CPU generator seeded with --seed (the
                                 tutorial's loop); continue: one generator for the whole sweep, consumed call after
                                 call in layer order (the original Diffusion Lens code); exact at any --batch
                                 (default reseed)
          --images-per-layer N   diffusers' num_images_per_prompt for each layer's call: layer-XX-0.png ...
                                 layer-XX-(N-1).png, one grid row per layer (default 1)
          --stage2 DIR|ORG/NAME  DeepFloyd IF only: a super-resolution stage (IFSuperResolutionPipeline, e.g.
                                 DeepFloyd/IF-II-L-v1.0) run on every layer's stage I image with the same layer's
                                 lens embedding, continuing stage I's generator (diffusers' two-stage usage);
                                 layer-XX.png is then the stage II image, layer-XX-stage1.png stage I's, and the
                                 grid shows stage II. Its text encoder is never loaded; --variant applies to it too
          --stage2-steps N       stage II inference steps (default 50, as diffusers)
          --stage2-guidance X    stage II guidance scale (default 4.0, as diffusers)
          --noise-level N        noise added to the upscaled stage I image, a timestep of stage II's
                                 image_noising_scheduler in [0, its num_train_timesteps) (default 250, as diffusers)
          --stage2-scheduler NAME  stage II's denoising scheduler instead of its own (IF-II-L: DDPMScheduler), built
                                 from its scheduler config as --scheduler is from stage I's; the names of
                                 --scheduler, of which IF's learned variance allows DDPMScheduler and
                                 DPMSolverMultistepScheduler (dpm++) only. The image noising scheduler is never
                                 replaced (default: stage II's own; recorded in manifest.json's stage2 section)
          --overwrite            replace a non-empty output folder
          --quiet                print nothing but warnings and errors (no progress, no summary line); progress is
                                 one updating line on a terminal, plain lines when stderr is redirected
          --out DIR              output folder: layer-XX.png (or hidden-KK.png), grid.png, manifest.json (with
                                 --stage2 also layer-XX-stage1.png)
        """;

    public int Run(IReadOnlyList<string> args)
    {
        var a = CliArgs.Parse(Name, args,
            new[] { "model", "revision", "prompt", "negative-prompt", "seed", "steps", "guidance", "height", "width", "layers", "layer-numbering", "device", "dtype", "variant", "scheduler", "clean-caption", "batch", "seed-policy", "images-per-layer", "out",
                "lens-layer-norm", "batch-invariant", "fused-kernels", "max-sequence-length", "stage2", "stage2-steps", "stage2-guidance", "noise-level", "stage2-scheduler" },
            new[] { "overwrite", "quiet" });
        // an unknown --scheduler is a usage error before any model is resolved, downloaded or read
        var scheduler = a.Get("scheduler") is string name ? DiffusionLens.Schedulers.Scheduler.ResolveClassName(name) : null;
        var stage2Scheduler = a.Get("stage2-scheduler") is string name2 ? LensSweep.ResolveStage2Scheduler(name2) : null;
        var numbering = LayerNumbering.Check(a.Get("layer-numbering", LayerNumbering.Lens));
        var device = a.Get("device", "cpu");
        bool autoBatch = a.Get("batch", device.StartsWith("cuda") ? "auto" : "1") == "auto";
        var modelDir = ModelDefaults.Resolve(a.Get("model"), a.Get("revision"), a.Flag("quiet"), variant: a.Get("variant"));
        // before a Hub id given as --stage2 downloads anything: a stage II needs an IF stage I
        if (a.Has("stage2") && DiffusionLens.Pipelines.ModelIndex.Load(modelDir) is { ClassName: not "IFPipeline" } index)
            throw new LensException($"--stage2 applies to DeepFloyd IF stage I models (IFPipeline) only; {modelDir} is a {index.ClassName}");
        var options = new SweepOptions
        {
            ModelDir = modelDir,
            Prompt = a.Require("prompt"),
            NegativePrompt = a.Get("negative-prompt", ""),
            Seed = a.Long("seed", 17),
            Steps = a.IntOrNull("steps"),
            Guidance = a.DoubleOrNull("guidance"),
            Height = a.IntOrNull("height"),
            Width = a.IntOrNull("width"),
            Layers = a.Get("layers", "all"),
            LayerNumbering = numbering,
            Device = device,
            DType = a.Get("dtype", "float32"),
            Variant = a.Get("variant"),
            Scheduler = scheduler,
            CleanCaption = a.Has("clean-caption") ? a.Bool("clean-caption", true) : null,
            LensLayerNorm = a.Get("lens-layer-norm") switch
            {
                null => null,
                "on" => true,
                "off" => false,
                var v => throw new LensException($"--lens-layer-norm must be on or off (got '{v}')"),
            },
            BatchInvariant = a.Get("batch-invariant", "auto") switch
            {
                "auto" => null,
                "on" => true,
                "off" => false,
                var v => throw new LensException($"--batch-invariant must be auto, on or off (got '{v}')"),
            },
            FusedKernels = a.Get("fused-kernels"),
            MaxSequenceLength = a.IntOrNull("max-sequence-length"),
            Batch = autoBatch ? 1 : a.Int("batch", 1),
            AutoBatch = autoBatch,
            SeedPolicy = a.Get("seed-policy", "reseed"),
            ImagesPerLayer = a.Int("images-per-layer", 1),
            OutDir = a.Require("out"),
            Overwrite = a.Flag("overwrite"),
            Stage2Dir = a.Get("stage2") is string stage2
                ? ModelDefaults.Resolve(stage2, null, a.Flag("quiet"), variant: a.Get("variant"), components: DiffusionLens.Loading.Hub.ModelResolver.Stage2Components)
                : null,
            Stage2Steps = a.IntOrNull("stage2-steps"),
            Stage2Guidance = a.DoubleOrNull("stage2-guidance"),
            NoiseLevel = a.IntOrNull("noise-level"),
            Stage2Scheduler = stage2Scheduler,
        };
        bool quiet = a.Flag("quiet");
        SweepResult result;
        using (var progress = new ProgressLog(quiet))
        {
            // the per-step lines ("  layer L [i/n] step s/of") update one line on a terminal
            result = LensSweep.Run(options,
                quiet ? null : m => { if (m.StartsWith("  layer ", StringComparison.Ordinal)) progress.Step(m); else progress.Line(m); },
                m => { progress.End(); Console.Error.WriteLine(m); });
        }
        if (!quiet) Console.WriteLine($"wrote {result.Layers.Length} layer image(s), grid.png and manifest.json to {result.OutDir}");
        return 0;
    }
}
