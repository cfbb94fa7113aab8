using DiffusionLens.Sweep;
using DiffusionLens.Pipelines;

namespace DiffusionLens.Findings;

/// <summary>
/// The audit's sweeps, run by <see cref="LensSweep"/>. A model is loaded once and reused for every prompt and seed of
/// the audit (a real text encoder is large); the cache is released with the runner.
/// </summary>
public sealed class LensSweepRunner : ISweepRunner, IDisposable
{
    private readonly Dictionary<(string, string, string), LensPipeline> _pipelines = new();
    private readonly Action<string>? _log;

    public LensSweepRunner() : this(null) { }
    public LensSweepRunner(Action<string>? log) => _log = log;

    public SweepOutput Run(SweepRequest request)
    {
        var key = (Path.GetFullPath(request.ModelDir), request.Device, request.DType);
        if (!_pipelines.TryGetValue(key, out var pipe))
            _pipelines[key] = pipe = LensPipeline.Load(request.ModelDir, request.Device, request.DType);
        if (pipe.Kind != request.Model)
            throw new LensException($"the claim is for a '{request.Model}' model but {request.ModelDir} holds a {pipe.PipelineName}");
        var result = LensSweep.Run(pipe, new SweepOptions
        {
            ModelDir = request.ModelDir,
            Prompt = request.Prompt,
            NegativePrompt = request.NegativePrompt,
            Seed = request.Seed,
            Steps = request.Steps,
            Guidance = request.Guidance,
            Height = request.Height,
            Width = request.Width,
            Layers = request.LayersText,
            Device = request.Device,
            DType = request.DType,
            CleanCaption = request.Model == "if" ? request.CleanCaption : null,
            OutDir = request.OutDir,
        }, _log);
        return new SweepOutput
        {
            OutDir = result.OutDir,
            LayerImages = result.LayerImages,
            GridPath = result.GridPath,
            ManifestPath = result.ManifestPath,
        };
    }

    public void Dispose()
    {
        foreach (var p in _pipelines.Values) p.Dispose();
        _pipelines.Clear();
    }
}
