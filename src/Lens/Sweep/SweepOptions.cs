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
