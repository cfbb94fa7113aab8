using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// One added (special) token, with the flags of a <c>tokenizers</c> <c>AddedToken</c>: <c>lstrip</c>/<c>rstrip</c>
/// swallow the whitespace beside a match, <c>single_word</c> only matches a whole word, and a <c>normalized</c>
/// token is matched in the normalized text rather than in the raw text.
/// </summary>
internal sealed record AddedTokenSpec(
    string Content, int Id, bool LStrip = false, bool RStrip = false, bool SingleWord = false, bool Normalized = false);

/// <summary>
/// The files of a transformers tokenizer folder: the vocabulary files plus the optional <c>tokenizer_config.json</c>
/// and <c>special_tokens_map.json</c>. Named special tokens in <c>special_tokens_map.json</c> override those in
/// <c>tokenizer_config.json</c>, as in transformers' <c>from_pretrained</c>.
/// </summary>
internal sealed class TokenizerFolder
{
    public string Dir { get; }
    public JsonObject? Config { get; }
    public JsonObject? SpecialTokensMap { get; }

    private TokenizerFolder(string dir, JsonObject? config, JsonObject? map)
    {
        Dir = dir;
        Config = config;
        SpecialTokensMap = map;
    }

    /// <summary>
    /// Opens <paramref name="dir"/> if it holds one of <paramref name="anyOf"/>, else its <c>tokenizer/</c> sub-folder
    /// (so a whole diffusers model folder can be given too). transformers 5 saves only <c>tokenizer.json</c> +
    /// <c>tokenizer_config.json</c>; older folders hold the vocabulary files.
    /// </summary>
    public static TokenizerFolder Open(string dir, params string[] anyOf)
    {
        if (!Directory.Exists(dir)) throw new LensException($"tokenizer folder not found: {dir}");
        bool Holds(string d) => anyOf.Any(f => File.Exists(Path.Combine(d, f)));
        string resolved = dir;
        if (!Holds(dir))
        {
            string sub = Path.Combine(dir, "tokenizer");
            if (Holds(sub)) resolved = sub;
            else throw new LensException($"tokenizer files not found in {dir}: expected {string.Join(" or ", anyOf)}");
        }
        return new TokenizerFolder(resolved, ReadJson(Path.Combine(resolved, "tokenizer_config.json")),
            ReadJson(Path.Combine(resolved, "special_tokens_map.json")));
    }

    /// <summary>tokenizer.json when the folder has one (transformers loads it in preference to the vocabulary files).</summary>
    public TokenizerJson? Json => File.Exists(FilePath("tokenizer.json")) ? _json ??= TokenizerJson.Load(FilePath("tokenizer.json")) : null;
    private TokenizerJson? _json;

    public string FilePath(string name) => Path.Combine(Dir, name);

    private static JsonObject? ReadJson(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                   ?? throw new LensException($"malformed tokenizer file {path}: the top level is not a JSON object");
        }
        catch (JsonException e) { throw new LensException($"malformed JSON in {path}: {e.Message}"); }
    }

    /// <summary><c>model_max_length</c> from tokenizer_config.json, or null when absent or "very large"
    /// (transformers writes 1e30 when the tokenizer has no limit).</summary>
    public int? ModelMaxLength
    {
        get
        {
            if (Config is null || !Config.TryGetPropertyValue("model_max_length", out var n) || n is null) return null;
            double v;
            try { v = n.GetValue<double>(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new LensException($"{FilePath("tokenizer_config.json")}: model_max_length has an unexpected value {n.ToJsonString()}");
            }
            return v >= 1 && v <= 1_000_000 ? (int)v : null;
        }
    }

    public int? IntConfig(string key)
    {
        if (Config is null || !Config.TryGetPropertyValue(key, out var n) || n is null) return null;
        try { return n.GetValue<int>(); }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new LensException($"{FilePath("tokenizer_config.json")}: {key} has an unexpected value {n.ToJsonString()}");
        }
    }

    /// <summary>
    /// A named special token ("bos_token", "eos_token", "pad_token", "unk_token"): special_tokens_map.json first,
    /// then tokenizer_config.json, else <paramref name="dflt"/>. A plain string becomes a non-normalized token
    /// (transformers' <c>AddedToken(token, special=True, normalized=False)</c>); an object keeps its flags.
    /// Returns null when the token is explicitly null.
    /// </summary>
    public TokenFlags? NamedToken(string key, string? dflt)
    {
        foreach (var src in new[] { SpecialTokensMap, Config })
        {
            if (src is null || !src.TryGetPropertyValue(key, out var node)) continue;
            if (node is null) return null;
            return ParseToken(node, key);
        }
        return dflt is null ? null : new TokenFlags(dflt);
    }

    /// <summary>"additional_special_tokens" (or transformers 5's "extra_special_tokens" list), map first.</summary>
    public List<TokenFlags> AdditionalSpecialTokens()
    {
        foreach (var src in new[] { SpecialTokensMap, Config })
        {
            if (src is null) continue;
            foreach (var key in new[] { "additional_special_tokens", "extra_special_tokens" })
            {
                if (!src.TryGetPropertyValue(key, out var node) || node is not JsonArray arr) continue;
                var list = new List<TokenFlags>();
                foreach (var item in arr)
                    if (item is not null) list.Add(ParseToken(item, key));
                return list;
            }
        }
        return new List<TokenFlags>();
    }

    /// <summary>"added_tokens_decoder" of tokenizer_config.json (transformers >= 4.34): id -> token with flags.</summary>
    public List<(int Id, TokenFlags Token)> AddedTokensDecoder()
    {
        var list = new List<(int, TokenFlags)>();
        if (Config is null || !Config.TryGetPropertyValue("added_tokens_decoder", out var node) || node is not JsonObject obj)
            return list;
        foreach (var (k, v) in obj)
        {
            if (v is null) continue;
            if (!int.TryParse(k, NumberStyles.Integer, CultureInfo.InvariantCulture, out int id))
                throw new LensException($"{FilePath("tokenizer_config.json")}: added_tokens_decoder has a non-integer id '{k}'");
            list.Add((id, ParseToken(v, "added_tokens_decoder")));
        }
        return list;
    }

    private TokenFlags ParseToken(JsonNode node, string key)
    {
        try
        {
            if (node is JsonValue) return new TokenFlags(node.GetValue<string>());
            if (node is JsonObject o && o["content"] is JsonNode c)
            {
                bool B(string k, bool d) => o[k] is JsonNode b ? b.GetValue<bool>() : d;
                bool special = B("special", true);
                return new TokenFlags(c.GetValue<string>(), B("lstrip", false), B("rstrip", false),
                    B("single_word", false), B("normalized", !special));
            }
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException) { }
        throw new LensException($"tokenizer files in {Dir}: '{key}' has an unexpected value {node.ToJsonString()}");
    }
}

/// <summary>A token string with its AddedToken flags (no id yet).</summary>
internal sealed record TokenFlags(string Content, bool LStrip = false, bool RStrip = false, bool SingleWord = false, bool Normalized = false)
{
    public AddedTokenSpec WithId(int id) => new(Content, id, LStrip, RStrip, SingleWord, Normalized);
}

/// <summary>
/// Splits text on added tokens the way <c>tokenizers</c>' AddedVocabulary does: first the non-normalized tokens are
/// found in the raw text (leftmost-longest), then each remaining piece is normalized and the normalized tokens are
/// found in it. Returns the pieces in order: either plain normalized text (Id null) or a token id.
/// </summary>
internal sealed class AddedTokenSplitter
{
    private readonly List<AddedTokenSpec> _raw;
    private readonly List<AddedTokenSpec> _normalized;

    public AddedTokenSplitter(IEnumerable<AddedTokenSpec> tokens, Func<string, string> normalize)
    {
        var all = tokens.Where(t => t.Content.Length > 0).ToList();
        _raw = all.Where(t => !t.Normalized).ToList();
        // Normalized tokens are matched by their normalized content.
        _normalized = all.Where(t => t.Normalized).Select(t => t with { Content = normalize(t.Content) })
            .Where(t => t.Content.Length > 0).ToList();
    }

    public List<(string Text, int? Id)> Split(string text, Func<string, string> normalize)
    {
        var result = new List<(string, int?)>();
        foreach (var (piece, id) in FindMatches(text, _raw))
        {
            if (id is not null) { result.Add((piece, id)); continue; }
            string norm = normalize(piece);
            foreach (var m in FindMatches(norm, _normalized)) result.Add(m);
        }
        return result;
    }

    private static List<(string Text, int? Id)> FindMatches(string s, List<AddedTokenSpec> tokens)
    {
        var splits = new List<(string, int?)>();
        if (tokens.Count == 0 || s.Length == 0)
        {
            splits.Add((s, null));
            return splits;
        }
        int startOffset = 0;
        int pos = 0;
        while (pos < s.Length)
        {
            // Leftmost-longest match starting at or after pos (aho-corasick LeftmostLongest).
            AddedTokenSpec? best = null;
            int bestStart = -1;
            for (int i = pos; i < s.Length && best is null; i++)
            {
                foreach (var t in tokens)
                {
                    if (string.CompareOrdinal(s, i, t.Content, 0, t.Content.Length) == 0 && i + t.Content.Length <= s.Length
                        && (best is null || t.Content.Length > best.Content.Length))
                    {
                        best = t;
                        bestStart = i;
                    }
                }
            }
            if (best is null) break;
            int start = bestStart, stop = bestStart + best.Content.Length;
            pos = stop;
            if (best.SingleWord)
            {
                bool startSpace = start == 0 || !IsWordChar(s, start - 1, before: true);
                bool stopSpace = stop == s.Length || !IsWordChar(s, stop, before: false);
                if (!startSpace || !stopSpace) continue;
            }
            if (best.LStrip)
            {
                int ns = start;
                while (ns > 0 && char.IsWhiteSpace(s[ns - 1])) ns--;
                start = Math.Max(ns, startOffset);
            }
            if (best.RStrip)
            {
                while (stop < s.Length && char.IsWhiteSpace(s[stop])) stop++;
                pos = stop;
            }
            if (startOffset < start) splits.Add((s[startOffset..start], null));
            splits.Add((s[start..stop], best.Id));
            startOffset = stop;
        }
        if (startOffset != s.Length || splits.Count == 0) splits.Add((s[startOffset..], null));
        return splits;
    }

    private static bool IsWordChar(string s, int index, bool before)
    {
        // Rust: c.is_alphanumeric() || c == '_' on the char before/after the match.
        Rune r;
        if (before)
        {
            if (char.IsLowSurrogate(s[index]) && index > 0 && char.IsHighSurrogate(s[index - 1]))
                r = new Rune(s[index - 1], s[index]);
            else if (!Rune.TryCreate(s[index], out r)) return false;
        }
        else if (Rune.DecodeFromUtf16(s.AsSpan(index), out r, out _) != System.Buffers.OperationStatus.Done) return false;
        return r.Value == '_' || Rune.IsLetterOrDigit(r) || Rune.GetUnicodeCategory(r) is UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;
    }
}
