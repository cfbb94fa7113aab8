using System.Text.Json;
using System.Text.Json.Nodes;

namespace DiffusionLens.Pipelines;

/// <summary>A diffusers model folder's <c>model_index.json</c>: the pipeline class and its components.</summary>
internal sealed class ModelIndex
{
    public string Folder { get; }
    public string ClassName { get; }
    /// <summary>component name -> (library, class), e.g. "unet" -> ("diffusers", "UNet2DConditionModel"); null entries are absent components.</summary>
    public IReadOnlyDictionary<string, (string Library, string Class)?> Components { get; }

    private readonly JsonObject _root;

    /// <summary>A boolean pipeline setting of model_index.json (e.g. SDXL's force_zeros_for_empty_prompt), or
    /// <paramref name="dflt"/> when absent or null.</summary>
    public bool Flag(string key, bool dflt)
    {
        if (!_root.TryGetPropertyValue(key, out var v) || v is null) return dflt;
        try { return v.GetValue<bool>(); }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new LensException($"{Path.Combine(Folder, "model_index.json")}: '{key}' must be true or false (got {v.ToJsonString()})");
        }
    }

    private ModelIndex(string folder, string className, Dictionary<string, (string, string)?> components, JsonObject root)
    {
        _root = root;
        Folder = folder;
        ClassName = className;
        Components = components;
    }

    public static ModelIndex Load(string folder)
    {
        if (!Directory.Exists(folder)) throw new LensException($"model folder not found: {folder}");
        var path = Path.Combine(folder, "model_index.json");
        if (!File.Exists(path)) throw new LensException($"not a diffusers model folder: {folder} has no model_index.json");
        JsonObject obj;
        try { obj = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new LensException($"malformed {path}: not a JSON object"); }
        catch (JsonException e) { throw new LensException($"malformed JSON in {path}: {e.Message}"); }
        var cls = obj["_class_name"]?.GetValue<string>() ?? throw new LensException($"malformed {path}: no _class_name");
        var comps = new Dictionary<string, (string, string)?>();
        foreach (var (k, v) in obj)
        {
            if (k.StartsWith('_')) continue;
            if (v is JsonArray a && a.Count == 2)
                comps[k] = a[0] is null || a[1] is null ? null : (a[0]!.GetValue<string>(), a[1]!.GetValue<string>());
        }
        return new ModelIndex(folder, cls, comps, obj);
    }

    /// <summary>The folder of a component the pipeline needs; a clear error when it is missing.</summary>
    public string Require(string component)
    {
        if (!Components.TryGetValue(component, out var c) || c is null)
            throw new LensException($"{Path.Combine(Folder, "model_index.json")} names no '{component}' component, which a {ClassName} needs");
        var dir = Path.Combine(Folder, component);
        if (!Directory.Exists(dir)) throw new LensException($"model component folder missing: {dir}");
        return dir;
    }
}
