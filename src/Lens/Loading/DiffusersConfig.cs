using System.Text.Json;
using System.Text.Json.Nodes;

namespace DiffusionLens.Loading;

/// <summary>
/// A component's <c>config.json</c> (diffusers or transformers). Every size and option of a model is read from here;
/// a default is only used where diffusers/transformers use the same default for a missing key.
/// </summary>
internal sealed class DiffusersConfig
{
    private readonly JsonObject _root;
    public string Path { get; }

    public DiffusersConfig(JsonObject root, string path)
    {
        _root = root;
        Path = path;
    }

    public static DiffusersConfig Load(string path)
    {
        if (!File.Exists(path)) throw new LensException($"config file not found: {path}");
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new LensException($"malformed JSON in {path}: {e.Message}"); }
        if (node is not JsonObject obj) throw new LensException($"malformed config {path}: the top level is not a JSON object");
        return new DiffusersConfig(obj, path);
    }

    public static DiffusersConfig FromJson(string json, string name = "<inline>")
    {
        var node = JsonNode.Parse(json) as JsonObject ?? throw new LensException($"malformed config {name}");
        return new DiffusersConfig(node, name);
    }

    public JsonObject Root => _root;

    public bool Has(string key) => _root.TryGetPropertyValue(key, out var v) && v is not null;

    private JsonNode Required(string key) =>
        _root.TryGetPropertyValue(key, out var v) && v is not null
            ? v
            : throw new LensException($"{Path}: required key '{key}' is missing");

    private T Convert<T>(string key, Func<JsonNode, T> f)
    {
        var node = Required(key);
        try { return f(node); }
        catch (Exception e) when (e is InvalidOperationException or FormatException or JsonException)
        {
            throw new LensException($"{Path}: key '{key}' has an unexpected value {node.ToJsonString()}");
        }
    }

    public int Int(string key) => Convert(key, n => n.GetValue<int>());
    public int Int(string key, int dflt) => Has(key) ? Int(key) : dflt;
    public int? IntOrNull(string key) => Has(key) ? Int(key) : null;
    public long Long(string key) => Convert(key, n => n.GetValue<long>());
    public double Double(string key) => Convert(key, n => n.GetValue<double>());
    public double Double(string key, double dflt) => Has(key) ? Double(key) : dflt;
    public double? DoubleOrNull(string key) => Has(key) ? Double(key) : null;
    public bool Bool(string key) => Convert(key, n => n.GetValue<bool>());
    public bool Bool(string key, bool dflt) => Has(key) ? Bool(key) : dflt;
    public string Str(string key) => Convert(key, n => n.GetValue<string>());
    public string Str(string key, string dflt) => Has(key) ? Str(key) : dflt;
    public string? StrOrNull(string key) => Has(key) ? Str(key) : null;

    public bool IsArray(string key) => Has(key) && _root[key] is JsonArray;

    public double[] DoubleArray(string key) => Convert(key, n => n.AsArray().Select(x => x!.GetValue<double>()).ToArray());
    public int[] IntArray(string key) => Convert(key, n => n.AsArray().Select(x => x!.GetValue<int>()).ToArray());
    public string[] StrArray(string key) => Convert(key, n => n.AsArray().Select(x => x!.GetValue<string>()).ToArray());

    /// <summary>An int or a list of ints (e.g. attention_head_dim), broadcast to <paramref name="count"/> entries.</summary>
    public int[] IntOrArray(string key, int count)
    {
        if (IsArray(key))
        {
            var a = IntArray(key);
            if (a.Length != count) throw new LensException($"{Path}: '{key}' has {a.Length} entries, expected {count}");
            return a;
        }
        return Enumerable.Repeat(Int(key), count).ToArray();
    }

    public int[]? IntOrArrayOrNull(string key, int count) => Has(key) ? IntOrArray(key, count) : null;

    /// <summary>A bool or a list of bools (e.g. only_cross_attention), broadcast to <paramref name="count"/> entries.</summary>
    public bool[] BoolOrArray(string key, int count, bool dflt)
    {
        if (!Has(key)) return Enumerable.Repeat(dflt, count).ToArray();
        if (IsArray(key))
        {
            var a = Convert(key, n => n.AsArray().Select(x => x!.GetValue<bool>()).ToArray());
            if (a.Length != count) throw new LensException($"{Path}: '{key}' has {a.Length} entries, expected {count}");
            return a;
        }
        return Enumerable.Repeat(Bool(key), count).ToArray();
    }

    /// <summary>
    /// Fails clearly when a string option (or, for a list, any of its entries) has a value this implementation does not
    /// support: the message names the file, the field and the value. An absent key or explicit null is accepted.
    /// </summary>
    public void RequireSupported(string key, IEnumerable<string> supported, bool ignoreCase = false)
    {
        if (!Has(key)) return;
        var allowed = supported.ToArray();
        var cmp = ignoreCase ? StringComparer.OrdinalIgnoreCase : StringComparer.Ordinal;
        string[] values = IsArray(key) ? StrArray(key) : [Str(key)];
        for (int i = 0; i < values.Length; i++)
        {
            if (allowed.Contains(values[i], cmp)) continue;
            var where = IsArray(key) ? $"'{key}'[{i}]" : $"'{key}'";
            throw new LensException($"{Path}: {where} = {values[i]} is not supported (supported: {string.Join(", ", allowed)})");
        }
    }

    /// <summary>Fails clearly on a config option this implementation does not support.</summary>
    public void RequireValue<T>(string key, T expected, T dflt) where T : notnull
    {
        T actual = Has(key) ? Convert(key, n => n.GetValue<T>()) : dflt;
        if (!actual.Equals(expected))
            throw new LensException($"{Path}: '{key}' = {actual} is not supported (only {expected})");
    }
}
