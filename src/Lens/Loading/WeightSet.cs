using System.Text.Json;
using static TorchSharp.torch;

namespace DiffusionLens.Loading;

/// <summary>
/// The weights of one component folder: a single <c>.safetensors</c> file, its <c>fp16</c> variant, or a sharded set
/// named by <c>*.safetensors.index.json</c>. Tensors are read lazily, key by key.
/// </summary>
internal sealed class WeightSet
{
    private readonly Dictionary<string, (SafetensorsFile File, SafetensorsEntry Entry)> _map = new();
    public IReadOnlyCollection<string> Keys => _map.Keys;
    public string Description { get; }

    private WeightSet(string description) => Description = description;

    public static readonly string[] BaseNames = { "diffusion_pytorch_model", "model" };

    /// <summary>
    /// Finds the weights of a component folder, as diffusers names them: with <paramref name="variant"/> (e.g. "fp16")
    /// only that variant's files (<c>model.fp16.safetensors</c>, or <c>model.safetensors.index.fp16.json</c> and its
    /// <c>model.fp16-0000N-of-0000M.safetensors</c> shards); without one only the plain files. Never falls back from one
    /// to the other: a missing set fails naming the folder and the weights files it does hold. (Whether a pipeline
    /// component without variant files loads its plain files instead is the pipeline's decision: <see cref="ComponentVariant"/>.)
    /// </summary>
    public static WeightSet FromFolder(string folder, string? variant = null)
    {
        if (!Directory.Exists(folder)) throw new LensException($"model component folder not found: {folder}");
        if (variant is not null && (variant.Length == 0 || variant.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))))
            throw new LensException($"bad --variant '{variant}': expected a name such as fp16");
        foreach (var b in BaseNames)
        {
            var idx = System.IO.Path.Combine(folder, variant is null ? $"{b}.safetensors.index.json" : $"{b}.safetensors.index.{variant}.json");
            if (File.Exists(idx)) return FromIndex(idx);
            var single = System.IO.Path.Combine(folder, variant is null ? $"{b}.safetensors" : $"{b}.{variant}.safetensors");
            if (File.Exists(single)) return FromFiles(single, new[] { single });
        }
        var present = WeightFileNames(folder);
        var listing = present.Count > 0 ? string.Join(", ", present) : "no weights files";
        if (variant is not null)
            throw new LensException($"no '{variant}' variant weights in {folder} (expected {BaseNames[1]}.{variant}.safetensors, {BaseNames[0]}.{variant}.safetensors or a *.safetensors.index.{variant}.json); it holds: {listing}");
        var variants = VariantsIn(folder);
        if (variants.Count > 0)
            throw new LensException($"no plain safetensors weights in {folder}, only variant files ({listing}); pass --variant {variants[0]} to load them");
        var bins = Directory.GetFiles(folder, "*.bin");
        var hint = bins.Length > 0 ? $" (found {System.IO.Path.GetFileName(bins[0])}: only .safetensors weights are supported)" : "";
        throw new LensException($"no safetensors weights in {folder}{hint}; expected one of {string.Join(", ", BaseNames.Select(b => b + ".safetensors"))} or a sharded *.safetensors.index.json");
    }

    private static readonly System.Text.RegularExpressions.Regex VariantFile = new(
        @"^(?:diffusion_pytorch_model|model)(?:\.([A-Za-z0-9_-]+?)(?:-\d{5}-of-\d{5})?\.safetensors|\.safetensors\.index\.([A-Za-z0-9_-]+)\.json)$");

    /// <summary>The weights files (safetensors, shard indexes, .bin) a folder holds, sorted.</summary>
    public static List<string> WeightFileNames(string folder) =>
        Directory.Exists(folder)
            ? Directory.GetFiles(folder).Select(f => System.IO.Path.GetFileName(f)!)
                .Where(n => n.EndsWith(".safetensors") || n.EndsWith(".bin") || n.Contains(".safetensors.index")).Order(StringComparer.Ordinal).ToList()
            : new List<string>();

    /// <summary>The variant names (e.g. "fp16") of the variant weights files in a folder.</summary>
    public static List<string> VariantsIn(string folder) => VariantsOf(WeightFileNames(folder));

    /// <summary>The variant names (e.g. "fp16") among weights file names (a folder's, or a Hub repository's listing).</summary>
    public static List<string> VariantsOf(IEnumerable<string> fileNames)
    {
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var n in fileNames)
        {
            var m = VariantFile.Match(n);
            if (!m.Success) continue;
            var v = m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value;
            if (v.Length > 0 && !System.Text.RegularExpressions.Regex.IsMatch(v, @"^\d{5}-of-\d{5}$")) names.Add(v);
        }
        return names.ToList();
    }

    /// <summary>
    /// The variant a pipeline loads one component with, as diffusers does. diffusers' <c>DiffusionPipeline.from_pretrained</c>
    /// (pipeline_utils.py / pipeline_loading_utils.py) decides per component: <c>_identify_model_variants</c> passes the
    /// variant to a component only when its folder holds files named with it, and <c>variant_compatible_siblings</c>
    /// takes, per component, the variant files if the component has any, else its plain files (warning about "a mixture
    /// of fp16 and non-fp16 filenames"); it raises only when no component at all has the variant's files. So a pipeline
    /// run with --variant fp16 loads the fp16 text encoder and a plain UNet; the no-component-has-it case is refused by
    /// <see cref="CheckPipelineVariant"/>. Without a variant, every component uses its plain files.
    /// </summary>
    public static string? ComponentVariant(string folder, string? variant) =>
        variant is not null && VariantsIn(folder).Contains(variant) ? variant : null;

    /// <summary>diffusers' "no such modeling files are available" check: some component must have the variant's files.</summary>
    public static void CheckPipelineVariant(string modelDir, IEnumerable<string> componentFolders, string? variant)
    {
        if (variant is null) return;
        var folders = componentFolders.ToList();
        if (folders.Any(f => ComponentVariant(f, variant) is not null)) return;
        var held = string.Join("; ", folders.Select(f => $"{System.IO.Path.GetFileName(f)}: {(WeightFileNames(f) is { Count: > 0 } l ? string.Join(", ", l) : "none")}"));
        throw new LensException($"--variant {variant}: no component of {modelDir} has '{variant}' weights files ({held})");
    }

    /// <summary>The files this set was read from (one file, or an index's shards).</summary>
    public IReadOnlyList<string> FilePaths => _map.Values.Select(v => v.File.Path).Distinct().Order(StringComparer.Ordinal).ToList();

    public static WeightSet FromFiles(string description, IEnumerable<string> files)
    {
        var ws = new WeightSet(description);
        foreach (var f in files)
        {
            var sf = new SafetensorsFile(f);
            foreach (var (k, e) in sf.Entries)
            {
                if (ws._map.ContainsKey(k)) throw new LensException($"tensor '{k}' appears in more than one weights file ({f})");
                ws._map[k] = (sf, e);
            }
        }
        return ws;
    }

    public static WeightSet FromIndex(string indexPath)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(indexPath)); }
        catch (JsonException e) { throw new LensException($"malformed shard index {indexPath}: {e.Message}"); }
        using (doc)
        {
            if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new LensException($"malformed shard index {indexPath}: no 'weight_map' object");
            var dir = System.IO.Path.GetDirectoryName(indexPath)!;
            var shardNames = wm.EnumerateObject().Select(p => p.Value.GetString()!).Distinct().ToList();
            var ws = FromFiles(indexPath, shardNames.Select(s => System.IO.Path.Combine(dir, s)));
            foreach (var p in wm.EnumerateObject())
                if (!ws._map.TryGetValue(p.Name, out var hit) || System.IO.Path.GetFileName(hit.File.Path) != p.Value.GetString())
                    throw new LensException($"shard index {indexPath} names '{p.Name}' in {p.Value.GetString()}, which does not hold it");
            return ws;
        }
    }

    public bool Contains(string key) => _map.ContainsKey(key);
    public SafetensorsEntry Entry(string key) => _map[key].Entry;
    /// <summary>The file and header entry that hold a key.</summary>
    public (SafetensorsFile File, SafetensorsEntry Entry) Locate(string key) =>
        _map.TryGetValue(key, out var hit) ? hit : throw new LensException($"{Description}: no tensor named '{key}'");
    public Tensor Read(string key) => _map.TryGetValue(key, out var hit) ? hit.File.Read(hit.Entry) : throw new LensException($"{Description}: no tensor named '{key}'");
}
