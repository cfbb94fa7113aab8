namespace DiffusionLens.Sweep;

/// <summary>What one lens sweep renders. Null sampling settings take the pipeline's diffusers defaults.</summary>
public sealed record SweepOptions
{
    public required string ModelDir { get; init; }
    public required string Prompt { get; init; }
    public string NegativePrompt { get; init; } = "";
    public long Seed { get; init; } = 17;
    public int? Steps { get; init; }
    public double? Guidance { get; init; }
    public int? Height { get; init; }
    public int? Width { get; init; }
    /// <summary>"all", "0,3,5" or "0:12:2".</summary>
    public string Layers { get; init; } = "all";
    public string Device { get; init; } = "cpu";
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
    public required string OutDir { get; init; }
    /// <summary>Layers denoised together in one UNet batch. 1 reproduces diffusers' batch of 2 exactly.</summary>
    public int Batch { get; init; } = 1;
    /// <summary>
    /// <c>--batch auto</c> (the CLI's default on CUDA): the largest layer batch that fits in free device memory, measured
    /// by a probe (<see cref="Pipelines.LensPipeline.AutoBatch"/>), halved on out-of-memory; 1 on the CPU. Overrides <see cref="Batch"/>.
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
    /// <summary>Replace an existing, non-empty output folder.</summary>
    public bool Overwrite { get; init; }
}

/// <summary>What a sweep wrote.</summary>
public sealed record SweepResult
{
    public required string OutDir { get; init; }
    public required int[] Layers { get; init; }
    public required IReadOnlyDictionary<int, string> LayerImages { get; init; }
    public required string GridPath { get; init; }
    public required string ManifestPath { get; init; }
}
