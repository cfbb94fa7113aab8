using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// The text steps of a SentencePiece-unigram tokenizer as <c>tokenizers</c> runs them: the normalizers in order, then
/// an optional WhitespaceSplit and the Metaspace pre-tokenizer (spaces to "▁", "▁" prepended by its scheme, split
/// before each "▁"). transformers 5's T5Tokenizer: Precompiled(charsmap) + WhitespaceSplit + Metaspace("▁", always,
/// split).
/// </summary>
internal sealed class T5Pipeline
{
    public IReadOnlyList<Func<string, string>> Normalizers { get; }
    public bool WhitespaceSplit { get; }
    public string Replacement { get; }
    /// <summary>"always", "first" or "never".</summary>
    public string PrependScheme { get; }
    public bool Split { get; }

    public T5Pipeline(IReadOnlyList<Func<string, string>> normalizers, bool whitespaceSplit, string replacement, string prependScheme, bool split)
    {
        Normalizers = normalizers;
        WhitespaceSplit = whitespaceSplit;
        Replacement = replacement;
        PrependScheme = prependScheme;
        Split = split;
    }

    /// <summary>transformers 5's T5Tokenizer built from spiece.model.</summary>
    public static T5Pipeline FromSpiece(PrecompiledCharsmap? charsmap) =>
        new(charsmap is null ? Array.Empty<Func<string, string>>() : new Func<string, string>[] { charsmap.Normalize }, true, "\u2581", "always", true);

    public string Normalize(string s)
    {
        foreach (var n in Normalizers) s = n(s);
        return s;
    }

    /// <summary>The words of one normalized piece (<paramref name="atStart"/>: the piece begins the text).</summary>
    public IEnumerable<string> Words(string normalized, bool atStart)
    {
        var pieces = WhitespaceSplit ? normalized.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries) : new[] { normalized };
        bool first = atStart;
        foreach (var p in pieces)
        {
            if (p.Length == 0) continue;
            var s = p.Replace(" ", Replacement);
            bool prepend = PrependScheme == "always" || (PrependScheme == "first" && first);
            first = false;
            if (prepend && !s.StartsWith(Replacement, StringComparison.Ordinal)) s = Replacement + s;
            if (!Split) { yield return s; continue; }
            // split before each replacement character, keeping it with what follows (MergedWithNext)
            int start = 0;
            for (int i = 1; i <= s.Length; i++)
            {
                if (i < s.Length && string.CompareOrdinal(s, i, Replacement, 0, Replacement.Length) != 0) continue;
                yield return s[start..i];
                start = i;
            }
        }
    }

    /// <summary>The normalizer and pre-tokenizer of a tokenizer.json, or an error naming the part not supported.</summary>
    public static T5Pipeline FromJson(TokenizerJson json)
    {
        var normalizers = new List<Func<string, string>>();
        foreach (var n in TokenizerJson.Flatten(json.Normalizer, "normalizers"))
            normalizers.Add(NormalizerStep(json, (JsonObject)n));

        var pre = TokenizerJson.Flatten(json.PreTokenizer, "pretokenizers");
        bool ws = false;
        int i = 0;
        if (i < pre.Count && TokenizerJson.TypeOf(pre[i]) == "WhitespaceSplit") { ws = true; i++; }
        const string why = "a unigram tokenizer here takes [WhitespaceSplit] + Metaspace";
        if (i != pre.Count - 1 || TokenizerJson.TypeOf(pre[i]) != "Metaspace") throw json.Error("pre_tokenizer", json.PreTokenizer, why);
        var ms = (JsonObject)pre[i];
        string replacement = json.Str(ms, "replacement", "pre_tokenizer") ?? "\u2581";
        string scheme = json.Str(ms, "prepend_scheme", "pre_tokenizer")
                        ?? (ms["add_prefix_space"]?.ToJsonString() == "false" ? "never" : "always");
        if (scheme is not ("always" or "first" or "never")) throw json.Error("pre_tokenizer", ms, "prepend_scheme must be always, first or never");
        bool split = ms["split"]?.ToJsonString() != "false";
        return new T5Pipeline(normalizers, ws, replacement, scheme, split);
    }

    private static Func<string, string> NormalizerStep(TokenizerJson json, JsonObject n)
    {
        switch (TokenizerJson.TypeOf(n))
        {
            case "Precompiled":
            {
                var b64 = json.Str(n, "precompiled_charsmap", "normalizer");
                if (string.IsNullOrEmpty(b64)) return s => s;
                byte[] bytes;
                try { bytes = Convert.FromBase64String(b64); }
                catch (FormatException) { throw json.Error("normalizer", n, "precompiled_charsmap is not base64"); }
                var cm = new PrecompiledCharsmap(bytes);
                return cm.Normalize;
            }
            case "Replace":
            {
                var (kind, pattern) = json.Pattern(n, "normalizer");
                var content = json.Str(n, "content", "normalizer") ?? throw json.Error("normalizer", n, "Replace has no content");
                if (kind == "String") return s => s.Replace(pattern, content, StringComparison.Ordinal);
                // only the patterns the SentencePiece converters write: runs of spaces (" {2,}") and of whitespace
                if (pattern is " {2,}" or " +" or @"\s+")
                {
                    var rx = new Regex(pattern, RegexOptions.CultureInvariant);
                    return s => rx.Replace(s, content);
                }
                throw json.Error("normalizer", n, "Replace supports a string pattern or the regex \" {2,}\"");
            }
            case "Strip":
            {
                bool left = n["strip_left"]?.ToJsonString() == "true", right = n["strip_right"]?.ToJsonString() == "true";
                return s => left && right ? s.Trim() : left ? s.TrimStart() : right ? s.TrimEnd() : s;
            }
            case "NFC": return s => s.Normalize(NormalizationForm.FormC);
            case "NFKC": return s => s.Normalize(NormalizationForm.FormKC);
            case "NFD": return s => s.Normalize(NormalizationForm.FormD);
            case "NFKD": return s => s.Normalize(NormalizationForm.FormKD);
            case "Prepend":
            {
                var p = json.Str(n, "prepend", "normalizer") ?? "";
                return s => s.Length == 0 ? s : p + s;
            }
            default:
                throw json.Error("normalizer", n, "supported: Precompiled, Replace, Strip, NFC, NFKC, NFD, NFKD, Prepend");
        }
    }
}
