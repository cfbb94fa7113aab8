namespace DiffusionLens.Sweep;

/// <summary>What one lens sweep renders. Null sampling settings take the pipeline's diffusers defaults.</summary>
public sealed record SweepOptions
{
    /// <summary>A diffusers folder (StableDiffusionPipeline, StableDiffusionXLPipeline, IFPipeline or FluxPipeline in model_index.json).</summary>
    public required string ModelDir { get; init; }
    /// <summary>The prompt.</summary>
    public required string Prompt { get; init; }
    /// <summary>The negative prompt: the unconditional embedding (full depth) when guidance runs.</summary>
    public string NegativePrompt { get; init; } = "";
    /// <summary>Seed of diffusers' CPU generator: the same seed gives diffusers' image.</summary>
    public long Seed { get; init; } = 17;
    /// <summary>Denoising steps; null: the pipeline's default (SD 50, IF 100).</summary>
    public int? Steps { get; init; }
    /// <summary>Guidance scale; null: the pipeline's default (SD 7.5, IF 7.0).</summary>
    public double? Guidance { get; init; }
    /// <summary>Image height in pixels; null: the model's default size.</summary>
    public int? Height { get; init; }
    /// <summary>Image width in pixels; null: the model's default size.</summary>
    public int? Width { get; init; }
    /// <summary>"all", "0,3,5" or "0:12:2", in <see cref="LayerNumbering"/>.</summary>
    public string Layers { get; init; } = "all";
    /// <summary>
    /// How <see cref="Layers"/> and the outputs number layers: "lens" (default; 0..N-1, layer L = the output of encoder
    /// layer L, files layer-XX.png) or "hidden-state" (0..N, transformers' <c>hidden_states[k]</c>: 0 = the embedding
    /// output, k = the output of layer k-1; files hidden-KK.png).
    /// </summary>
    public string LayerNumbering { get; init; } = "lens";
    /// <summary>"cpu", "cuda" or "cuda:N".</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>"float32", "float16" or "bfloat16".</summary>
    public string DType { get; init; } = "float32";
    /// <summary>Weights variant (e.g. "fp16"), as diffusers' <c>variant=</c>; null: the plain files.</summary>
    public string? Variant { get; init; }
    /// <summary>
    /// The scheduler to run instead of the model's own: a diffusers class name (DPMSolverMultistepScheduler,
    /// DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler, DDPMScheduler) or an alias (dpm++, ddim, euler, pndm, ddpm),
    /// built from the model's scheduler config as diffusers' <c>from_config</c>; null: the model's own.
    /// </summary>
    public string? Scheduler { get; init; }
    /// <summary>IF only: diffusers' caption cleaning (default on for IF).</summary>
    public bool? CleanCaption { get; init; }
    /// <summary>The output folder (written to a hidden sibling, renamed into place when complete).</summary>
    public required string OutDir { get; init; }
    /// <summary>Layers denoised together in one UNet batch. 1 reproduces diffusers' batch of 2 exactly.</summary>
    public int Batch { get; init; } = 1;
    /// <summary>
    /// <c>--batch auto</c> (the CLI's default on CUDA): the largest layer batch that fits in free device memory: all
    /// layers first, halved while the warm-up at that batch (one UNet call and one decode) runs out of memory (with a
    /// DeepFloyd IF stage II: estimated from one-layer probes of both stages, <see cref="Pipelines.LensPipeline.AutoBatch"/>);
    /// 1 on the CPU. Overrides <see cref="Batch"/>.
    /// </summary>
    public bool AutoBatch { get; init; }
    /// <summary>
    /// <c>reseed</c> (default): every layer's call starts from a CPU generator seeded with <see cref="Seed"/> (the
    /// tutorial's loop); <c>continue</c>: one generator for the whole sweep, consumed call after call in layer order
    /// (the original Diffusion Lens code). Both are exact at any <see cref="Batch"/>.
    /// </summary>
    public string SeedPolicy { get; init; } = "reseed";
    /// <summary>diffusers' <c>num_images_per_prompt</c> for every layer's call: files layer-XX-0.png ... when above 1.</summary>
    public int ImagesPerLayer { get; init; } = 1;
    /// <summary>
    /// SDXL only (<c>--lens-layer-norm on|off</c>): whether text_encoder_2's layer output passes through its final layer
    /// norm before it replaces the penultimate layer's output (the nnsight tutorial's ADD_LAYER_NORM); null: on. Any
    /// other pipeline rejects a value.
    /// </summary>
    public bool? LensLayerNorm { get; init; }
    /// <summary>
    /// <c>--batch-invariant auto|on|off</c> (null: auto, on for CUDA, off for the CPU): every layer's images do not
    /// depend on how many layers share its batch, so <c>--batch auto</c> gives exactly <c>--batch 1</c>'s images. Every
    /// convolution, norm, projection and attention kernel of the image models gives each layer's rows the numbers of a
    /// canonical call of <see cref="Models.BatchInvariance.CanonicalLayers"/> layers (12): a full batch of 12 runs as it
    /// is; other batches run as they are where that gives the canonical numbers (checked once per shape and batch) and
    /// otherwise in canonical calls padded with zeros (<see cref="Models.BatchInvariance"/>). Measured on an H200 (SD
    /// 1.5-sized, float16, 12 layers x 50 steps) the batched sweep costs the same as off; <c>--batch 1</c> pays for the
    /// padded shapes. Off: every call as it is, images within a level of 255 of --batch 1's.
    /// </summary>
    public bool? BatchInvariant { get; init; }
    /// <summary>
    /// <c>--fused-kernels auto|on|off</c> (null: <c>LENS_FUSED_KERNELS</c>, else auto): GroupNorm fused with the bias
    /// before it and the scale-shift and activation after it, and the residual sums, as CUDA kernels compiled by NVRTC
    /// (<see cref="Kernels.FusedKernels"/>). auto: for float16/bfloat16 on CUDA when NVRTC is found (libtorch's ops
    /// otherwise); on: also float32, and an error without NVRTC; off: libtorch's ops, diffusers' op-for-op numbers.
    /// </summary>
    public string? FusedKernels { get; init; }
    /// <summary>
    /// FLUX only (<c>--max-sequence-length N</c>): T5's padding/truncation length, diffusers' max_sequence_length
    /// (1..512); null: FluxPipeline's default 512. Any other pipeline rejects a value.
    /// </summary>
    public int? MaxSequenceLength { get; init; }
    /// <summary>Replace an existing, non-empty output folder.</summary>
    public bool Overwrite { get; init; }

    /// <summary>
    /// DeepFloyd IF only: a super-resolution folder (IFSuperResolutionPipeline, e.g. IF-II-L) run on every layer's
    /// stage I image with that layer's lens embedding (and the negative embedding), continuing stage I's generator as
    /// diffusers' two-stage usage does. layer-XX.png is then the stage II image, layer-XX-stage1.png stage I's. Loaded
    /// with <see cref="Variant"/>, as stage I.
    /// </summary>
    public string? Stage2Dir { get; init; }
    /// <summary>Stage II inference steps (null: diffusers' default, 50).</summary>
    public int? Stage2Steps { get; init; }
    /// <summary>Stage II guidance scale (null: diffusers' default, 4.0).</summary>
    public double? Stage2Guidance { get; init; }
    /// <summary>Stage II noise level of the upscaled image, in [0, the image noising scheduler's num_train_timesteps) (null: 250).</summary>
    public int? NoiseLevel { get; init; }
    /// <summary>
    /// Stage II's denoising scheduler instead of the folder's own (a class name or alias, as <see cref="Scheduler"/>),
    /// built from stage II's scheduler config as diffusers' <c>from_config</c>; null: its own (IF-II-L: DDPMScheduler).
    /// <see cref="Scheduler"/> applies to stage I only, as in the paper's code (<c>pipe.scheduler =
    /// DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)</c> on the IF-I pipeline, IF-II-L left as loaded)
    /// and diffusers (each pipeline has its own scheduler). With IF's learned variance only DDPMScheduler and
    /// DPMSolverMultistepScheduler can run (diffusers' DDIM, Euler and PNDM steps fail on the predicted variance).
    /// </summary>
    public string? Stage2Scheduler { get; init; }
}

/// <summary>What a sweep wrote.</summary>
public sealed record SweepResult
{
    /// <summary>The output folder.</summary>
    public required string OutDir { get; init; }
    /// <summary>The layers rendered (0-based, in <see cref="LayerNumbering"/>).</summary>
    public required int[] Layers { get; init; }
    /// <summary>"lens" or "hidden-state": how <see cref="Layers"/> and <see cref="LayerImages"/> number layers.</summary>
    public string LayerNumbering { get; init; } = "lens";
    /// <summary>Layer (or hidden-state index) to its image (layer-XX.png, or hidden-KK.png).</summary>
    public required IReadOnlyDictionary<int, string> LayerImages { get; init; }
    /// <summary>The labelled grid of every layer's image (grid.png).</summary>
    public required string GridPath { get; init; }
    /// <summary>manifest.json: options, versions, weights hashes, timings.</summary>
    public required string ManifestPath { get; init; }
}
