namespace DiffusionLens.Findings;

/// <summary>What the audit asks of one lens sweep (mirrors the sweep library's options).</summary>
internal sealed record SweepRequest
{
    /// <summary>"sd", "sdxl", "if" or "flux"</summary>
    public required string Model { get; init; }
    public required string ModelDir { get; init; }
    public required string Prompt { get; init; }
    public string NegativePrompt { get; init; } = "";
    public long Seed { get; init; }
    public int? Steps { get; init; }
    public double? Guidance { get; init; }
    public int? Height { get; init; }
    public int? Width { get; init; }
    /// <summary>layer numbers to render; null for all layers of the encoder</summary>
    public IReadOnlyList<int>? Layers { get; init; }
    public string Device { get; init; } = "cpu";
    public string DType { get; init; } = "float32";
    /// <summary>layers denoised together in one UNet batch</summary>
    public int Batch { get; init; } = 1;
    /// <summary>weights variant (e.g. "fp16"), or null for the plain files</summary>
    public string? Variant { get; init; }
    public bool? CleanCaption { get; init; }
    /// <summary>scheduler class name or alias instead of the model's own; null: the model's own</summary>
    public string? Scheduler { get; init; }
    /// <summary>"reseed" or "continue" (see SweepOptions.SeedPolicy)</summary>
    public string SeedPolicy { get; init; } = "reseed";
    /// <summary>DeepFloyd IF: the stage II (super-resolution) folder run on every layer's stage I image (then the layer
    /// images are the stage II images), or null</summary>
    public string? Stage2Dir { get; init; }
    /// <summary>stage II steps, guidance and noise level (null: diffusers' defaults)</summary>
    public int? Stage2Steps { get; init; }
    public double? Stage2Guidance { get; init; }
    public int? NoiseLevel { get; init; }
    /// <summary>stage II's denoising scheduler instead of its own (a class name or alias); null: its own</summary>
    public string? Stage2Scheduler { get; init; }
    /// <summary>the folder to write layer-XX.png (and grid/manifest) into</summary>
    public required string OutDir { get; init; }

    /// <summary>The layer list in the sweep library's string form ("all" or "0,2,4").</summary>
    public string LayersText => Layers is null ? "all" : string.Join(",", Layers);
}

/// <summary>What a sweep wrote.</summary>
internal sealed record SweepOutput
{
    public required string OutDir { get; init; }
    /// <summary>layer number to its image file</summary>
    public required IReadOnlyDictionary<int, string> LayerImages { get; init; }
    public string? GridPath { get; init; }
    public string? ManifestPath { get; init; }
}

/// <summary>Runs one Diffusion Lens sweep (one image per encoder layer). The CLI adapts the sweep library to this.</summary>
internal interface ISweepRunner
{
    SweepOutput Run(SweepRequest request);
}
