using System.Text.Json;
using System.Text.Json.Serialization;

namespace DiffusionLens.Sweep;

/// <summary>
/// The schema of a sweep's <c>manifest.json</c>: what was rendered, from which model and settings, and how long it took.
/// Property names are the JSON keys (snake_case).
/// </summary>
internal sealed record SweepManifest
{
    public const string ToolName = "diffusion-lens-dotnet";
    public string Tool { get; init; } = ToolName;
    public string? Version { get; init; } = typeof(SweepManifest).Assembly.GetName().Version?.ToString();
    public required string CreatedUtc { get; init; }
    public required string Model { get; init; }
    public required string Pipeline { get; init; }
    /// <summary>"sd", "sdxl", "if" or "flux".</summary>
    public required string Kind { get; init; }
    public required string Prompt { get; init; }
    /// <summary>The prompt as the tokenizer saw it (IF: after caption cleaning).</summary>
    public required string ProcessedPrompt { get; init; }
    public required string NegativePrompt { get; init; }
    /// <summary>IF: whether diffusers' caption cleaning ran; SD: null.</summary>
    public bool? CleanCaption { get; init; }
    public required long Seed { get; init; }
    public required int Steps { get; init; }
    public required int UnetCallsPerImage { get; init; }
    public required double Guidance { get; init; }
    /// <summary>The diffusers class name of the scheduler that ran (the model's own, or <c>--scheduler</c>'s).</summary>
    public required string Scheduler { get; init; }
    /// <summary>The scheduler's effective configuration: each __init__ argument of its class, from the model's scheduler
    /// config where present, else the class's diffusers default (as diffusers' <c>from_config</c>).</summary>
    public SortedDictionary<string, System.Text.Json.Nodes.JsonNode?>? SchedulerConfig { get; init; }
    public required int Height { get; init; }
    public required int Width { get; init; }
    public required string Dtype { get; init; }
    public required string Device { get; init; }
    /// <summary>The weights variant loaded (e.g. "fp16"), null for the plain files.</summary>
    public string? Variant { get; init; }
    /// <summary>Each weights file read (path relative to the model folder) to its sha256, hex.</summary>
    public SortedDictionary<string, string>? WeightsSha256 { get; init; }
    /// <summary>Layers per UNet batch (with <c>--batch auto</c>: the batch it chose).</summary>
    public required int Batch { get; init; }
    /// <summary>What was asked for: "auto" or the number.</summary>
    public string? BatchRequested { get; init; }
    /// <summary>--batch-invariant (auto resolved): whether every layer's images were independent of its batch's size.</summary>
    public bool BatchInvariant { get; init; }
    /// <summary>--fused-kernels: the mode, and the kernels' image (cubin/PTX, NVRTC) or why libtorch's ops ran instead.</summary>
    public string? FusedKernels { get; init; }
    /// <summary>With --batch-invariant on: per module kind, the input shapes checked, padded to the canonical call and
    /// run per layer (<see cref="BatchInvarianceManifest"/>); null otherwise.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public BatchInvarianceManifest? BatchInvariance { get; init; }
    /// <summary>The image models' convolutions whose weight ran channels-last (CUDA, 16-bit types: weights larger than 24
    /// rows of their input; <c>LENS_CONV_WEIGHT_LAYOUT=off</c> for none); null where none did.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? ConvWeightsChannelsLast { get; init; }
    public required int NumLayers { get; init; }
    /// <summary>"lens" (layers 0..N-1, layer-XX.png) or "hidden-state" (transformers' hidden_states 0..N, 0 = the
    /// embedding output, hidden-KK.png): how <see cref="Layers"/>, <see cref="Files"/> and the other keys number layers.</summary>
    public string LayerNumbering { get; init; } = "lens";
    public required int[] Layers { get; init; }
    public string Lens { get; init; } = LensDescription;
    public const string LensDescription = "final_layer_norm(output of encoder layer L) as the conditional embedding; unconditional = full-depth negative prompt";
    /// <summary>The SDXL lens (the nnsight tutorial's): text_encoder_2's penultimate output replaced, text_encoder fed the empty prompt.</summary>
    public static string SdxlLensDescription(bool layerNorm, bool lensNumbering) =>
        $"text_encoder_2's penultimate-layer output replaced by {(layerNorm ? "final_layer_norm(" : "")}{(lensNumbering ? "output of encoder layer L" : "transformers' hidden_states[k]")}{(layerNorm ? ")" : "")} (its last layer and pooled embeddings recomputed from it); text_encoder fed the empty prompt; unconditional = diffusers' negative conditioning (zeros for an empty negative prompt with force_zeros_for_empty_prompt)";
    /// <summary>SDXL only: whether the lens applied text_encoder_2's final layer norm (--lens-layer-norm); absent otherwise.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public bool? LensLayerNorm { get; init; }
    /// <summary>The FLUX lens (the nnsight tutorial's): T5's final_layer_norm applied to block L's output, CLIP fed the empty prompt.</summary>
    public static string FluxLensDescription(bool lensNumbering) =>
        $"final_layer_norm of text_encoder_2 (T5) applied to {(lensNumbering ? "the output of encoder block L" : "transformers' hidden_states[k]")} as the prompt embedding; text_encoder (CLIP) fed the empty prompt for the pooled embedding; no unconditional embedding (FluxPipeline runs no classifier-free guidance)";
    /// <summary>FLUX only: T5's padding/truncation length (max_sequence_length); absent otherwise.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? MaxSequenceLength { get; init; }
    public const string HiddenStateLensDescription = "final_layer_norm(transformers' hidden_states[k]: k = 0 the embedding output, k >= 1 the output of encoder layer k-1) as the conditional embedding; unconditional = full-depth negative prompt";
    /// <summary>Layer (or hidden-state) index, as a string, to its PNG file name (with a stage II: the stage II image).</summary>
    public required SortedDictionary<string, string> Files { get; init; }
    /// <summary>reseed (every layer's call from a generator seeded with the seed) or continue (one generator, layer after layer).</summary>
    public string SeedPolicy { get; init; } = "reseed";
    /// <summary>Images per layer (diffusers' num_images_per_prompt); above 1, <see cref="Files"/> names each layer's first.</summary>
    public int ImagesPerLayer { get; init; } = 1;
    /// <summary>Every image of each layer, in draw order; null with one image per layer.</summary>
    public SortedDictionary<string, string[]>? LayerFiles { get; init; }
    /// <summary>With a stage II: layer index (as a string) to its stage I image (layer-XX-stage1.png; with several images
    /// per layer the first, layer-XX-stage1-0.png); null otherwise.</summary>
    public SortedDictionary<string, string>? Stage1Files { get; init; }
    /// <summary>With a stage II and several images per layer: every stage I image of each layer, in the order of
    /// <see cref="LayerFiles"/> (layer-XX-stage1-i.png was upscaled into layer-XX-i.png); null otherwise.</summary>
    public SortedDictionary<string, string[]>? Stage1LayerFiles { get; init; }
    /// <summary>DeepFloyd IF stage II (--stage2), or null: the top-level steps, guidance and size are stage I's.</summary>
    public Stage2Manifest? Stage2 { get; init; }
    public string Grid { get; init; } = "grid.png";
    public required SweepTimings TimingsS { get; init; }
    /// <summary>CUDA: the most device memory in use at a phase end (driver view: total - free, so it includes the CUDA
    /// context, the allocator's cache and any other process on the device), GiB; null elsewhere.</summary>
    public double? GpuMemoryPeakGib { get; init; }

    /// <summary>Orders layer keys numerically ("2" before "10").</summary>
    public static readonly IComparer<string> LayerOrder = Comparer<string>.Create((a, b) =>
        int.TryParse(a, out var x) && int.TryParse(b, out var y) ? x.CompareTo(y) : string.CompareOrdinal(a, b));

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json) + "\n";
    public static SweepManifest FromJson(string json) =>
        JsonSerializer.Deserialize<SweepManifest>(json, Json) ?? throw new LensException("manifest.json is empty");
}

/// <summary>
/// Seconds spent in each phase of a sweep. On CUDA each phase ends with a device synchronisation (never per step,
/// unless LENS_PROFILE=1), so GPU work is counted in the phase that queued it.
/// </summary>
internal sealed record SweepTimings
{
    /// <summary>Before loading: the options checked against the config files, the output folder, the first libtorch
    /// call of the process (a sweep on an already loaded pipeline has none).</summary>
    public double Prepare { get; init; }
    public required double Load { get; init; }
    public required double Encode { get; init; }
    /// <summary>CUDA only, before the timed phases: the text encoder's first call, the --batch auto probe (one UNet call
    /// and one decode for one image) and one UNet call and decode at the batch the sweep runs (first-call setup).</summary>
    public double Warmup { get; init; }
    /// <summary>All denoising loops together, and that divided by the steps of all batches.</summary>
    public double Denoise { get; init; }
    public double DenoisePerStep { get; init; }
    /// <summary>Sample to image (SD: VAE decode), postprocessing and the copy to the host, all batches.</summary>
    public double Decode { get; init; }
    /// <summary>The images to 8 bits (on the device) and their copy to the host, all batches.</summary>
    public double ImagesToHost { get; init; }
    /// <summary>Image writing left on the critical path: waiting for the background PNG encoders, the grid, the manifest.</summary>
    public double WriteImages { get; init; }
    /// <summary>
    /// The sweep's time outside every phase above (the option checks, each batch's lens embeddings and initial noise, the
    /// loop's bookkeeping): the total after loading less warm-up, encode, denoise, decode, images to host and writing.
    /// </summary>
    public double Other { get; init; }
    /// <summary>Seconds the background PNG encoders worked in all (overlapping the denoising; not on the critical path).</summary>
    public double ImageEncodingBackground { get; init; }
    /// <summary>Seconds hashing the weights files took on a worker thread (started after loading, overlapping the sweep).</summary>
    public double WeightsHashBackground { get; init; }
    /// <summary>Seconds the manifest waited for those hashes (on the critical path; part of <see cref="WriteImages"/>).</summary>
    public double WeightsHashWait { get; init; }
    /// <summary>Seconds the .NET garbage collector paused the process during the sweep (after loading), and its
    /// full (generation 2) collections: a diagnosis of the host phases, not a phase of its own.</summary>
    public double GcPause { get; init; }
    public int GcFullCollections { get; init; }
    /// <summary>LENS_PROFILE=1 only: each step's seconds (synchronised) and the host-side seconds to queue it.</summary>
    public double[]? StepSeconds { get; init; }
    public double[]? StepQueueSeconds { get; init; }
    /// <summary>Layer index (as a string) to the seconds its batch took, divided by the batch's size.</summary>
    public required SortedDictionary<string, double> PerLayer { get; init; }
    /// <summary>Everything: prepare, load (and stage II's), and the sweep.</summary>
    public required double Total { get; init; }
}

/// <summary>The super-resolution stage of an IF sweep: what upscaled the stage I images in <see cref="SweepManifest.Files"/>.</summary>
internal sealed record Stage2Manifest
{
    public required string Model { get; init; }
    public required string Pipeline { get; init; }
    /// <summary>The denoising scheduler's class: the folder's own (IF-II-L: DDPMScheduler) or <c>--stage2-scheduler</c>'s.</summary>
    public required string Scheduler { get; init; }
    /// <summary>Its effective options (each from the folder's scheduler_config.json, else the class's diffusers default).</summary>
    public SortedDictionary<string, System.Text.Json.Nodes.JsonNode?>? SchedulerConfig { get; init; }
    public required int Steps { get; init; }
    public required int UnetCallsPerImage { get; init; }
    public required double Guidance { get; init; }
    public required int NoiseLevel { get; init; }
    public required int Height { get; init; }
    public required int Width { get; init; }
    public string? Variant { get; init; }
    public SortedDictionary<string, string>? WeightsSha256 { get; init; }
    public string Input { get; init; } = "each layer's stage I image(s) ([-1, 1], as diffusers' output_type=\"pt\") with the same layer's lens embedding and the negative embedding, both repeated per image (num_images_per_prompt=1: one stage II image per stage I image); the generator continues from that layer's stage I call";
    /// <summary>Seconds of the stage II load and of all its denoising loops.</summary>
    public double LoadS { get; init; }
    public double DenoiseS { get; init; }
}

/// <summary>
/// What --batch-invariant did (<see cref="Models.BatchInvariance"/>), per module kind (Attention, Conv2d, GroupNorm,
/// LayerNorm, Linear): every kernel gave each layer's rows the numbers of a call of canonical_layers layers; the input
/// shapes checked, those that ran in canonical calls padded with zeros at some batch (their own call gave other
/// numbers), and those that ran one call per layer (their canonical call's rows depended on their slot).
/// </summary>
internal sealed record BatchInvarianceManifest
{
    public required int CanonicalLayers { get; init; }
    public required SortedDictionary<string, int> CheckedShapes { get; init; }
    public required SortedDictionary<string, int> PaddedShapes { get; init; }
    public required SortedDictionary<string, int> PerLayerShapes { get; init; }
}
