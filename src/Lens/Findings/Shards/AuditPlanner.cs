using System.Text.Json;

namespace DiffusionLens.Findings;

/// <summary>Turns claims into <see cref="ClaimPlan"/>s: model folder and hash, prompt set, and the keyed runs.</summary>
internal sealed class AuditPlanner
{
    private readonly ClaimsFile _file;
    private readonly AuditOptions _options;
    private readonly string _device;
    private readonly IModelHasher? _hasher;
    private readonly Dictionary<(string, string?), string> _hashes = new();

    public AuditPlanner(ClaimsFile file, AuditOptions options, string device, IModelHasher? hasher)
    {
        _file = file;
        _options = options;
        _device = device;
        _hasher = hasher;
    }

    public ClaimPlan Plan(Claim claim)
    {
        var seeds = _options.Seeds ?? claim.Seeds;
        var (modelDir, reason) = _file.ResolveModelDir(claim, _options.GetEnv);
        if (modelDir is null)
        {
            _options.Log?.Invoke($"claim {claim.Id}: skipped: {reason}");
            return new ClaimPlan { Id = claim.Id, Skipped = reason ?? "no model folder", Seeds = seeds };
        }
        modelDir = Path.GetFullPath(modelDir);
        var (stage2Dir, stage2Reason) = _file.ResolveStage2Dir(claim, _options.GetEnv);
        if (claim.HasStage2 && stage2Dir is null)
        {
            _options.Log?.Invoke($"claim {claim.Id}: skipped: {stage2Reason}");
            return new ClaimPlan { Id = claim.Id, Skipped = stage2Reason ?? "no stage II folder", Seeds = seeds };
        }
        if (stage2Dir is not null) stage2Dir = Path.GetFullPath(stage2Dir);
        PromptSetData? set = null;
        if (claim.PromptSet is { } spec)
        {
            (set, var why) = PromptSetData.Resolve(spec, _file.Folder, _options.GetEnv);
            if (set is null)
            {
                _options.Log?.Invoke($"claim {claim.Id}: skipped: {why}");
                return new ClaimPlan { Id = claim.Id, Skipped = why, Seeds = seeds };
            }
        }
        var variant = claim.Variant ?? _options.Variant;
        var hash = Hash(modelDir, variant);
        var stage2Hash = stage2Dir is null ? null : Hash(stage2Dir, variant);
        var prompts = set is not null
            ? set.Prompts.Select(p => (p.Prompt, p.Concepts)).ToList()
            : claim.Prompts.Select(p => (Prompt: p, Concepts: claim.Concepts)).ToList();
        var template = _file.TemplateFor(claim);
        string judge = _options.JudgeInfo is { } j ? $"{j.Source}|{j.ImageSize}|{j.LogitScale:R}" : "";
        var runs = new List<PlannedRun>();
        for (int pi = 0; pi < prompts.Count; pi++)
            foreach (var seed in seeds)
            {
                var inputs = RunKey.Inputs(claim, template, hash, variant, _options.DType, _device, _options.Batch, prompts[pi].Prompt, prompts[pi].Concepts, seed, judge, stage2Hash);
                runs.Add(new PlannedRun
                {
                    Key = RunKey.Hash(inputs),
                    Inputs = inputs,
                    ClaimId = claim.Id,
                    PromptIndex = pi,
                    Prompt = prompts[pi].Prompt,
                    Concepts = prompts[pi].Concepts,
                    Seed = seed,
                    OutDir = Path.Combine(claim.Id, $"p{pi}-seed{seed}"),
                });
            }
        return new ClaimPlan { Id = claim.Id, ModelDir = modelDir, ModelHash = hash, Stage2Dir = stage2Dir, Stage2ModelHash = stage2Hash, PromptSet = set, Seeds = seeds, Runs = runs };
    }

    /// <summary>A model folder's weights hash (a stage II's too), once per folder and variant.</summary>
    private string Hash(string dir, string? variant)
    {
        if (!_hashes.TryGetValue((dir, variant), out var hash))
        {
            if (_hasher is not null) _options.Log?.Invoke($"hashing the weights of {dir}");
            hash = _hasher?.ModelHash(dir, variant) ?? "unhashed:" + dir;
            _hashes[(dir, variant)] = hash;
        }
        return hash;
    }

    /// <summary>The options every shard of one audit must share.</summary>
    public static string OptionsFingerprint(AuditOptions o, string device) => JsonSerializer.Serialize(new SortedDictionary<string, object?>(StringComparer.Ordinal)
    {
        ["seeds"] = o.Seeds,
        ["only"] = o.Only,
        ["dtype"] = o.DType,
        ["device"] = RunKey.DeviceKind(device),
        ["variant"] = o.Variant,
        ["batch"] = o.Batch,
    });
}
