using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// The CLIP BPE model of a tokenizer.json, checked against the pipeline <see cref="ClipTokenizer"/> implements
/// (transformers' CLIPTokenizer): normalizer NFC + Replace(\s+ → " ") + Lowercase, pre-tokenizer Split(CLIP's regex,
/// removed, inverted) + ByteLevel(no prefix space), BPE with the end-of-word suffix "&lt;/w&gt;". Any other part is
/// an error naming it.
/// </summary>
internal static class ClipTokenizerJson
{
    public const string SplitRegex =
        @"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

    public static BpeTokenizer CreateBpe(TokenizerJson json)
    {
        CheckNormalizer(json);
        CheckPreTokenizer(json);
        var m = json.Model;
        if (json.ModelType != "BPE") throw json.Error("model", new JsonObject { ["type"] = json.ModelType }, "a CLIP tokenizer is a BPE model");
        if (json.Str(m, "end_of_word_suffix", "model") != "</w>")
            throw json.Error("model end_of_word_suffix", m["end_of_word_suffix"], "CLIP's BPE ends words with \"</w>\"");
        if (json.Str(m, "continuing_subword_prefix", "model") is { Length: > 0 } prefix)
            throw json.Error("model continuing_subword_prefix", JsonValue.Create(prefix), "CLIP's BPE has none");
        if (m["dropout"] is JsonNode d && d.ToJsonString() != "null")
            throw json.Error("model dropout", d, "BPE dropout is random at inference; transformers' CLIP has none");
        foreach (var flag in new[] { "byte_fallback", "ignore_merges" })
            if (m[flag] is JsonNode f && f.ToJsonString() != "false")
                throw json.Error($"model {flag}", f, "CLIP's BPE does not use it");

        if (m["vocab"] is not JsonObject vocabNode) throw json.Error("model", null, "the BPE model has no \"vocab\" object");
        var vocab = new Dictionary<string, int>(vocabNode.Count, StringComparer.Ordinal);
        var merges = new List<string>();
        try
        {
            foreach (var (k, v) in vocabNode) vocab[k] = v!.GetValue<int>();
            foreach (var item in m["merges"] as JsonArray ?? throw new InvalidOperationException())
            {
                // tokenizers writes merges as ["a", "b"] pairs (>= 0.20) or "a b" strings (older files)
                if (item is JsonArray pair && pair.Count == 2) merges.Add(pair[0]!.GetValue<string>() + " " + pair[1]!.GetValue<string>());
                else merges.Add(item!.GetValue<string>());
            }
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new LensException($"malformed tokenizer file {json.Path}: the BPE vocab must map strings to integer ids and \"merges\" must list pairs");
        }
        try
        {
            return BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                EndOfWordSuffix = "</w>",
                PreTokenizer = ClipTokenizer.WholeTextPreTokenizer.Instance,
                Normalizer = null,
                FuseUnknownTokens = false,
            });
        }
        catch (Exception e) when (e is not LensException)
        {
            throw new LensException($"cannot build the CLIP BPE model of {json.Path}: {e.Message}", e);
        }
    }

    private static void CheckNormalizer(TokenizerJson json)
    {
        var parts = TokenizerJson.Flatten(json.Normalizer, "normalizers");
        string why = "the CLIP tokenizer implements NFC + Replace(Regex \\s+, \" \") + Lowercase";
        if (parts.Count != 3) throw json.Error("normalizer", json.Normalizer, why);
        if (TokenizerJson.TypeOf(parts[0]) != "NFC") throw json.Error("normalizer", parts[0], why);
        if (TokenizerJson.TypeOf(parts[1]) != "Replace" || json.Pattern((JsonObject)parts[1], "normalizer") != ("Regex", @"\s+")
            || json.Str((JsonObject)parts[1], "content", "normalizer") != " ")
            throw json.Error("normalizer", parts[1], why);
        if (TokenizerJson.TypeOf(parts[2]) != "Lowercase") throw json.Error("normalizer", parts[2], why);
    }

    private static void CheckPreTokenizer(TokenizerJson json)
    {
        var parts = TokenizerJson.Flatten(json.PreTokenizer, "pretokenizers");
        string why = "the CLIP tokenizer implements Split(CLIP's regex, removed, invert) + ByteLevel(add_prefix_space false)";
        if (parts.Count != 2) throw json.Error("pre_tokenizer", json.PreTokenizer, why);
        var split = parts[0] as JsonObject;
        if (TokenizerJson.TypeOf(split) != "Split" || json.Pattern(split!, "pre_tokenizer") != ("Regex", SplitRegex)
            || json.Str(split!, "behavior", "pre_tokenizer") != "Removed" || split!["invert"]?.ToJsonString() != "true")
            throw json.Error("pre_tokenizer", parts[0], why);
        var bl = parts[1] as JsonObject;
        if (TokenizerJson.TypeOf(bl) != "ByteLevel" || bl!["add_prefix_space"]?.ToJsonString() == "true")
            throw json.Error("pre_tokenizer", parts[1], why);
        // use_regex false would keep the literal <|startoftext|>/<|endoftext|> whole; CLIP's files keep it true
        if (bl["use_regex"]?.ToJsonString() == "false") throw json.Error("pre_tokenizer", parts[1], why + " (with use_regex)");
    }
}
