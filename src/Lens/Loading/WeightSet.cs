using System.Text.Json;
using static TorchSharp.torch;

namespace DiffusionLens.Loading;

/// <summary>
/// The weights of one component folder: a single <c>.safetensors</c> file, its <c>fp16</c> variant, or a sharded set
/// named by <c>*.safetensors.index.json</c>. Tensors are read lazily, key by key.
/// </summary>
public sealed class WeightSet
{
    private readonly Dictionary<string, (SafetensorsFile File, SafetensorsEntry Entry)> _map = new();
    public IReadOnlyCollection<string> Keys => _map.Keys;
    public string Description { get; }

    private WeightSet(string description) => Description = description;

    public static readonly string[] BaseNames = { "diffusion_pytorch_model", "model" };

    /// <summary>Finds the weights of a component folder. <paramref name="variant"/> (e.g. "fp16") is preferred when given, with the plain files as fallback.</summary>
    public static WeightSet FromFolder(string folder, string? variant = null)
    {
        if (!Directory.Exists(folder)) throw new LensException($"model component folder not found: {folder}");
        var candidates = new List<string>();
        // diffusers/transformers name variants by inserting the variant before the last suffix:
        // model.fp16.safetensors, model.safetensors.index.fp16.json, model.fp16-00001-of-00002.safetensors
        foreach (var v in variant is null ? new string?[] { null, "fp16" } : new string?[] { variant, null })
        foreach (var b in BaseNames)
        {
            candidates.Add(System.IO.Path.Combine(folder, v is null ? $"{b}.safetensors.index.json" : $"{b}.safetensors.index.{v}.json"));
            candidates.Add(System.IO.Path.Combine(folder, v is null ? $"{b}.safetensors" : $"{b}.{v}.safetensors"));
        }
        foreach (var c in candidates)
        {
            if (!File.Exists(c)) continue;
            return System.IO.Path.GetFileName(c).Contains(".safetensors.index") ? FromIndex(c) : FromFiles(c, new[] { c });
        }
        var bins = Directory.GetFiles(folder, "*.bin");
        var hint = bins.Length > 0 ? $" (found {System.IO.Path.GetFileName(bins[0])}: only .safetensors weights are supported)" : "";
        throw new LensException($"no safetensors weights in {folder}{hint}; expected one of {string.Join(", ", BaseNames.Select(b => b + ".safetensors"))} or a sharded *.safetensors.index.json");
    }

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
