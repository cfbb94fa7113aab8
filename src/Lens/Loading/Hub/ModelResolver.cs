using System.Text.Json;
using System.Text.RegularExpressions;
using DiffusionLens.Pipelines;

namespace DiffusionLens.Loading.Hub;

/// <summary>
/// Turns a <c>--model</c> value into a local diffusers folder: an existing folder as it is; a Hub id (<c>org/name</c>)
/// as its snapshot in the Hugging Face cache (<see cref="HubCache"/>), downloading what the pipeline needs and the
/// cache lacks (model_index.json, the configs, the tokenizer files and the weights of the chosen variant, with the
/// shards an index lists). <c>HF_HUB_OFFLINE=1</c> uses the cache alone.
/// </summary>
internal static class ModelResolver
{
    /// <summary>The components a Stable Diffusion (XL), IF or FLUX lens sweep loads.</summary>
    public static readonly string[] NeededComponents = { "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "unet", "transformer", "vae", "scheduler" };
    /// <summary>The components a DeepFloyd IF super-resolution stage loads (its text encoder is never used).</summary>
    public static readonly string[] Stage2Components = { "unet", "scheduler", "image_noising_scheduler" };

    private static readonly string[] SmallFiles =
    {
        "config.json", "scheduler_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "added_tokens.json", "vocab.json", "merges.txt", "spiece.model",
    };

    private static readonly Regex RepoId = new(@"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$");

    public static bool LooksLikeRepoId(string model) => RepoId.IsMatch(model) && !model.Contains("..") && !model.EndsWith(".");

    /// <param name="variant">weights variant to prefer (e.g. "fp16"); null: plain weights, else fp16 (as WeightSet.FromFolder)</param>
    /// <param name="log">one line per downloaded file / note (null: silent)</param>
    /// <param name="progress">bytes of the file being downloaded: (file, done, total or -1)</param>
    /// <param name="components">the components to fetch (default <see cref="NeededComponents"/>; IF stage II:
    /// <see cref="Stage2Components"/>)</param>
    public static string Resolve(string model, string? revision = null, string? variant = null, Action<string>? log = null,
        Action<string, long, long>? progress = null, HubCache? cache = null, string? endpoint = null, bool? offline = null, string? token = null,
        IReadOnlyList<string>? components = null)
    {
        if (Directory.Exists(model))
        {
            if (revision is not null) throw new LensException($"--revision applies to Hub ids (org/name); {model} is a local folder");
            return model;
        }
        if (!LooksLikeRepoId(model))
            throw new LensException($"model folder not found: {model} (and it is not a Hub id of the form org/name)");
        cache ??= HubCache.Default;
        var rev = revision ?? "main";
        var cached = cache.ResolveRef(model, rev) is string c ? cache.SnapshotDir(model, c) : null;
        bool complete = cached is not null && File.Exists(Path.Combine(cached, "model_index.json"));
        if (offline ?? HubCache.Offline)
        {
            if (complete) return cached!;
            throw new LensException($"{model} (revision {rev}) is not in the Hugging Face cache {cache.Root}, and HF_HUB_OFFLINE is set; " +
                                    "download it once with the network on, or point --model at a local folder");
        }

        using var hub = new HubClient(endpoint ?? HubCache.Endpoint, token ?? HubCache.Token);
        string commit;
        List<string> files;
        try { (commit, files) = hub.RepoInfo(model, rev); }
        catch (LensException e) when (complete && e.Message.Contains("cannot reach"))
        {
            log?.Invoke($"the Hub is unreachable; using the cached snapshot of {model} ({rev})");
            return cached!;
        }
        cache.WriteRef(model, rev, commit);
        var have = new HashSet<string>(files, StringComparer.Ordinal);
        string Get(string f)
        {
            if (!have.Contains(f)) throw new LensException($"{model} at {commit[..8]} has no file '{f}'");
            var snap = Path.Combine(cache.SnapshotDir(model, commit), f);
            if (!File.Exists(snap)) log?.Invoke($"downloading {model}/{f}");
            return hub.Download(cache, model, commit, f, progress);
        }

        Get("model_index.json");
        var snapshot = cache.SnapshotDir(model, commit);
        var index = ModelIndex.Load(snapshot);
        // every component's configs and weight list first, so a refused variant downloads no weights at all
        var weights = new List<string>();
        foreach (var comp in components ?? NeededComponents)
        {
            if (!index.Components.TryGetValue(comp, out var spec) || spec is null) continue;
            foreach (var f in SmallFiles)
                if (have.Contains($"{comp}/{f}")) Get($"{comp}/{f}");
            weights.AddRange(WeightFiles(model, comp, files, variant, Get));
        }
        foreach (var w in weights) Get(w);
        return snapshot;
    }

    /// <summary>
    /// The weights files of one component: the variant's (an index and the shards it lists, or one file) if given and
    /// present, else the plain ones. Components without safetensors (a tokenizer, the scheduler) have none.
    /// </summary>
    private static IEnumerable<string> WeightFiles(string model, string comp, List<string> files, string? variant, Func<string, string> get)
    {
        var have = new HashSet<string>(files, StringComparer.Ordinal);
        // diffusers' rule, as WeightSet.FromFolder loads: with a variant, each component's variant files if it has
        // them, else its plain files; without one, plain files only (a component holding only variant files is refused
        // here, before anything is downloaded)
        if (variant is null && !WeightSet.BaseNames.Any(b => have.Contains($"{comp}/{b}.safetensors") || have.Contains($"{comp}/{b}.safetensors.index.json")))
        {
            var names = files.Where(f => f.StartsWith(comp + "/", StringComparison.Ordinal)).Select(f => f[(comp.Length + 1)..]).ToList();
            if (WeightSet.VariantsOf(names) is { Count: > 0 } variants)
            {
                var variantFiles = names.Where(n => n.EndsWith(".safetensors", StringComparison.Ordinal)).Select(n => $"{comp}/{n}").ToList();
                throw new LensException($"{model}: {comp} has only variant weights ({string.Join(", ", variantFiles.Take(4))}{(variantFiles.Count > 4 ? ", ..." : "")}) and no --variant was given; pass --variant {variants[0]}");
            }
        }
        foreach (var v in variant is null ? new string?[] { null } : new string?[] { variant, null })
        foreach (var b in WeightSet.BaseNames)
        {
            var idx = $"{comp}/{(v is null ? $"{b}.safetensors.index.json" : $"{b}.safetensors.index.{v}.json")}";
            var single = $"{comp}/{(v is null ? $"{b}.safetensors" : $"{b}.{v}.safetensors")}";
            if (have.Contains(idx))
            {
                var local = get(idx);
                var shards = ShardNames(local);
                foreach (var s in shards)
                {
                    if (s.Contains('/') || s.Contains('\\') || s.Contains(".."))
                        throw new LensException($"shard index {model}/{idx} names a shard outside its folder: '{s}'");
                }
                return shards.Select(s => $"{comp}/{s}").ToList();
            }
            if (have.Contains(single)) return new[] { single };
        }
        return Array.Empty<string>();
    }

    private static List<string> ShardNames(string indexPath)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(indexPath));
            return doc.RootElement.GetProperty("weight_map").EnumerateObject().Select(p => p.Value.GetString()!).Distinct().ToList();
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new LensException($"malformed shard index {indexPath}: no 'weight_map' object of file names");
        }
    }
}
