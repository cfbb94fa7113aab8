using DiffusionLens.Loading;
namespace DiffusionLens.Pipelines;

public abstract partial class LensPipeline
{
    /// <summary>Opens a diffusers folder, picking the pipeline from model_index.json.</summary>
    /// <param name="variant">weights variant (e.g. "fp16"): each component with that variant's files loads them, the
    /// others their plain files, as diffusers does (<see cref="WeightSet.ComponentVariant"/>); null: plain files only</param>
    /// <param name="scheduler">a scheduler class name or alias to run instead of the model's own (see
    /// <see cref="Schedulers.Scheduler.ResolveClassName"/>); null: the model's own</param>
    public static LensPipeline Load(string modelDir, string device = "cpu", string dtype = "float32", string? variant = null, string? scheduler = null)
    {
        var schedulerClass = scheduler is null ? null : Schedulers.Scheduler.ResolveClassName(scheduler);
        var index = ModelIndex.Load(modelDir);
        var dev = ParseDevice(device);
        var dt = ParseDType(dtype);
        var components = PipelineComponents(index);
        WeightSet.CheckPipelineVariant(modelDir, components.Select(index.Require), variant);
        LensPipeline pipe = index.ClassName switch
        {
            "IFPipeline" => IFPipeline.Load(index, dev, dt, variant, schedulerClass),
            "StableDiffusionXLPipeline" => StableDiffusionXLPipeline.Load(index, dev, dt, variant, schedulerClass),
            FluxPipeline.ClassName => FluxPipeline.Load(index, dev, dt, variant, schedulerClass),
            _ => StableDiffusionPipeline.Load(index, dev, dt, variant, schedulerClass),
        };
        pipe.Variant = variant;
        pipe.WeightFiles = components.SelectMany(c =>
        {
            var dir = index.Require(c);
            return WeightSet.FromFolder(dir, WeightSet.ComponentVariant(dir, variant)).FilePaths;
        }).ToList();
        return pipe;
    }

    /// <summary>The pipeline classes this library runs, for messages.</summary>
    internal const string SupportedPipelines = "StableDiffusionPipeline, StableDiffusionXLPipeline, IFPipeline, FluxPipeline";

    /// <summary>The weighted components a pipeline class loads; throws for an unsupported class.</summary>
    internal static string[] PipelineComponents(ModelIndex index) => index.ClassName switch
    {
        "StableDiffusionPipeline" => new[] { "text_encoder", "unet", "vae" },
        "StableDiffusionXLPipeline" => new[] { "text_encoder", "text_encoder_2", "unet", "vae" },
        "IFPipeline" => new[] { "text_encoder", "unet" },
        FluxPipeline.ClassName => new[] { "text_encoder", "text_encoder_2", "transformer", "vae" },
        _ => throw new LensException($"unsupported pipeline '{index.ClassName}' in {Path.Combine(index.Folder, "model_index.json")}; supported: {SupportedPipelines}"),
    };
}
