using System.Text.Json;
using System.Text.Json.Nodes;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// A <c>tokenizers</c> <c>tokenizer.json</c> (what transformers 5 saves, alone with tokenizer_config.json): the added
/// tokens, normalizer, pre-tokenizer, model and post-processor as JSON, read and checked here. The CLIP and T5
/// tokenizers turn the parts they support into their pipelines and name any part they do not support.
/// </summary>
internal sealed class TokenizerJson
{
    public string Path { get; }
    public JsonObject Root { get; }
    public JsonObject Model { get; }
    public JsonNode? Normalizer => Root["normalizer"];
    public JsonNode? PreTokenizer => Root["pre_tokenizer"];
    public JsonNode? PostProcessor => Root["post_processor"];
    /// <summary>"added_tokens": content, id and AddedToken flags, in file order.</summary>
    public List<(AddedTokenSpec Token, bool Special)> AddedTokens { get; } = new();

    private TokenizerJson(string path, JsonObject root, JsonObject model)
    {
        Path = path;
        Root = root;
        Model = model;
    }

    public static TokenizerJson Load(string path)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                   ?? throw new LensException($"malformed tokenizer file {path}: the top level is not a JSON object");
        }
        catch (JsonException e) { throw new LensException($"malformed JSON in {path}: {e.Message}"); }
        var model = root["model"] as JsonObject ?? throw new LensException($"malformed tokenizer file {path}: no \"model\" object");
        var tj = new TokenizerJson(path, root, model);
        if (root["added_tokens"] is JsonArray arr)
        {
            foreach (var item in arr)
            {
                if (item is not JsonObject o) throw tj.Error("added_tokens", item, "an entry is not an object");
                try
                {
                    bool B(string k) => o[k] is JsonNode b && b.GetValue<bool>();
                    var spec = new AddedTokenSpec(o["content"]!.GetValue<string>(), o["id"]!.GetValue<int>(), B("lstrip"), B("rstrip"),
                        B("single_word"), B("normalized"));
                    tj.AddedTokens.Add((spec, B("special")));
                }
                catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
                {
                    throw tj.Error("added_tokens", item, "an entry lacks content/id or has a flag that is not a boolean");
                }
            }
        }
        else if (root["added_tokens"] is not null) throw tj.Error("added_tokens", root["added_tokens"], "not a list");
        return tj;
    }

    public LensException Error(string part, JsonNode? node, string why)
    {
        var text = node?.ToJsonString() ?? "null";
        if (text.Length > 300) text = text[..300] + "…";
        return new LensException($"{Path}: unsupported {part} {text}: {why}");
    }

    public string ModelType => Str(Model, "type", "model") ?? throw Error("model", Model, "no \"type\"");

    /// <summary>A component's "type" (null for a JSON null component).</summary>
    public static string? TypeOf(JsonNode? n) => n is JsonObject o && o["type"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;

    public string? Str(JsonObject o, string key, string part)
    {
        var n = o[key];
        if (n is null) return null;
        if (n is JsonValue v && v.TryGetValue(out string? s)) return s;
        throw Error(part, o, $"\"{key}\" is not a string");
    }

    /// <summary>The list inside a "Sequence" component (normalizers / pretokenizers), or the component alone.</summary>
    public static List<JsonNode> Flatten(JsonNode? n, string listKey)
    {
        var list = new List<JsonNode>();
        if (n is null) return list;
        if (TypeOf(n) == "Sequence" && n[listKey] is JsonArray a)
        {
            foreach (var item in a) list.AddRange(Flatten(item, listKey));
            return list;
        }
        list.Add(n);
        return list;
    }

    /// <summary>A Replace/Split pattern: ("String", s) or ("Regex", s).</summary>
    public (string Kind, string Value) Pattern(JsonObject component, string part)
    {
        if (component["pattern"] is JsonObject p)
        {
            if (p["String"] is JsonValue s && s.TryGetValue(out string? str)) return ("String", str);
            if (p["Regex"] is JsonValue r && r.TryGetValue(out string? rx)) return ("Regex", rx);
        }
        throw Error(part, component, "its pattern is neither {\"String\": …} nor {\"Regex\": …}");
    }

    /// <summary>
    /// The special tokens the post-processor puts around a single sequence: (prefix ids, suffix ids). Supports
    /// RobertaProcessing / BertProcessing (cls … sep) and TemplateProcessing ("single" made of special tokens around
    /// $A); null post-processor adds nothing.
    /// </summary>
    public (int[] Prefix, int[] Suffix) SingleSequenceSpecials()
    {
        var pp = PostProcessor;
        if (pp is null) return (Array.Empty<int>(), Array.Empty<int>());
        var type = TypeOf(pp);
        try
        {
            switch (type)
            {
                case "RobertaProcessing":
                case "BertProcessing":
                    return (new[] { pp["cls"]![1]!.GetValue<int>() }, new[] { pp["sep"]![1]!.GetValue<int>() });
                case "TemplateProcessing":
                {
                    var prefix = new List<int>();
                    var suffix = new List<int>();
                    bool seenA = false;
                    foreach (var piece in pp["single"]!.AsArray())
                    {
                        if (piece!["Sequence"] is JsonObject seq)
                        {
                            if (seenA || seq["id"]!.GetValue<string>() != "A") throw Error("post_processor", pp, "its single template is not [specials] $A [specials]");
                            seenA = true;
                            continue;
                        }
                        var id = piece["SpecialToken"]!["id"]!.GetValue<string>();
                        var ids = pp["special_tokens"]![id]!["ids"]!.AsArray().Select(x => x!.GetValue<int>());
                        (seenA ? suffix : prefix).AddRange(ids);
                    }
                    if (!seenA) throw Error("post_processor", pp, "its single template has no $A");
                    return (prefix.ToArray(), suffix.ToArray());
                }
            }
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException or KeyNotFoundException)
        {
            throw Error("post_processor", pp, "malformed");
        }
        throw Error("post_processor", pp, "supported: RobertaProcessing, BertProcessing, TemplateProcessing");
    }
}
