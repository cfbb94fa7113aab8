using DiffusionLens.Sweep;
using DiffusionLens.Pipelines;

namespace DiffusionLens.Findings;

/// <summary>
/// The audit's sweeps, run by <see cref="LensSweep"/>. One model is loaded at a time: it is reused for every prompt and
/// seed of a claim (a real text encoder is large) and released before another model loads, so an audit of SD and IF
/// never holds both. A claim's DeepFloyd IF stage II is held beside its stage I the same way (loaded once, released
/// when another is needed or none).
/// </summary>
internal sealed class LensSweepRunner : ISweepRunner, IModelHasher, IDisposable
{
    private (string Dir, string Device, string DType, string? Variant, string? Scheduler)? _key;
    private LensPipeline? _pipe;
    private (string Dir, string Device, string DType, string? Variant, string? Scheduler)? _key2;
    private IFSuperResolutionPipeline? _stage2;
    private readonly Action<string>? _log;

    /// <summary>How many times a model was loaded (a new model replaces the loaded one).</summary>
    public int Loads { get; private set; }
    /// <summary>The folder of the model held now, or null.</summary>
    public string? LoadedModel => _key?.Dir;

    public LensSweepRunner() : this(null) { }
    public LensSweepRunner(Action<string>? log) => _log = log;

    public SweepOutput Run(SweepRequest request)
    {
        var key = (Path.GetFullPath(request.ModelDir), request.Device, request.DType, request.Variant, request.Scheduler);
        if (_pipe is null || _key != key)
        {
            _pipe?.Dispose(); // one model at a time
            _pipe = null;
            _log?.Invoke($"loading {request.ModelDir} ({request.DType} on {request.Device})");
            _pipe = LensPipeline.Load(request.ModelDir, request.Device, request.DType, request.Variant, request.Scheduler);
            _key = key;
            Loads++;
        }
        var pipe = _pipe;
        if (pipe.Kind != request.Model)
            throw new LensException($"the claim is for a '{request.Model}' model but {request.ModelDir} holds a {pipe.PipelineName}");
        var stage2 = Stage2(request);
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
            Variant = request.Variant,
            Batch = request.Batch,
            CleanCaption = request.Model == "if" ? request.CleanCaption : null,
            Scheduler = request.Scheduler,
            SeedPolicy = request.SeedPolicy,
            Stage2Dir = request.Stage2Dir,
            Stage2Steps = request.Stage2Steps,
            Stage2Guidance = request.Stage2Guidance,
            NoiseLevel = request.NoiseLevel,
            Stage2Scheduler = request.Stage2Scheduler,
            OutDir = request.OutDir,
        }, _log, stage2);
        return new SweepOutput
        {
            OutDir = result.OutDir,
            LayerImages = result.LayerImages,
            GridPath = result.GridPath,
            ManifestPath = result.ManifestPath,
        };
    }

    /// <summary>The request's stage II, loaded (its configs checked against stage I first) unless held already; null without one.</summary>
    private IFSuperResolutionPipeline? Stage2(SweepRequest request)
    {
        if (request.Stage2Dir is null)
        {
            _stage2?.Dispose();
            (_stage2, _key2) = (null, null);
            return null;
        }
        var key = (Path.GetFullPath(request.Stage2Dir), request.Device, request.DType, request.Variant, request.Stage2Scheduler);
        if (_stage2 is not null && _key2 == key) return _stage2;
        _stage2?.Dispose();
        (_stage2, _key2) = (null, null);
        _log?.Invoke($"loading stage II {request.Stage2Dir} ({request.DType} on {request.Device})");
        _stage2 = IFSuperResolutionPipeline.Load(request.Stage2Dir, request.Device, request.DType, request.Variant, request.Stage2Scheduler);
        _key2 = key;
        Loads++;
        return _stage2;
    }

    /// <summary>The model's weights hash (<see cref="Findings.ModelHash.Of"/>), read from its files without loading it.</summary>
    public string ModelHash(string modelDir, string? variant) => Findings.ModelHash.Of(modelDir, variant);

    public void Dispose()
    {
        _pipe?.Dispose();
        _pipe = null;
        _key = null;
        _stage2?.Dispose();
        (_stage2, _key2) = (null, null);
    }
}
