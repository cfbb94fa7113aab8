namespace DiffusionLens.Pipelines;

public abstract partial class LensPipeline
{
    /// <summary>Opens a diffusers folder, picking the pipeline from model_index.json.</summary>
    public static LensPipeline Load(string modelDir, string device = "cpu", string dtype = "float32")
    {
        var index = ModelIndex.Load(modelDir);
        var dev = ParseDevice(device);
        var dt = ParseDType(dtype);
        return index.ClassName switch
        {
            "StableDiffusionPipeline" => StableDiffusionPipeline.Load(index, dev, dt),
            "IFPipeline" => IFPipeline.Load(index, dev, dt),
            _ => throw new LensException($"unsupported pipeline '{index.ClassName}' in {Path.Combine(modelDir, "model_index.json")}; supported: StableDiffusionPipeline, IFPipeline"),
        };
    }

}
