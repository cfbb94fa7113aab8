using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// The CLIP tokenizer as transformers 5 builds it (<c>CLIPTokenizer</c>, backed by <c>tokenizers</c>) from a folder
/// with <c>vocab.json</c> and <c>merges.txt</c>:
/// <list type="bullet">
/// <item>added/special tokens (bos, eos, unk, pad and any <c>added_tokens_decoder</c> entry) are split out first;</item>
/// <item>normalizer: NFC, every run of whitespace to one space, lowercase;</item>
/// <item>pre-tokenizer: keep the matches of
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
/// (whitespace is dropped), then byte-level mapping;</item>
/// <item>model: BPE with the end-of-word suffix <c>&lt;/w&gt;</c> (Microsoft.ML.Tokenizers' BpeTokenizer);</item>
/// <item>post-processing: <c>BOS ids EOS</c>.</item>
/// </list>
/// <see cref="Encode(string)"/> equals <c>tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length,
/// truncation=True)</c>, as the diffusers Stable Diffusion pipelines call it.
/// </summary>
internal sealed class ClipTokenizer : DiffusionLens.Judge.ITextTokenizer
{
    private readonly BpeTokenizer _bpe;
    private readonly AddedTokenSplitter _splitter;
    private readonly Dictionary<string, int[]> _wordCache = new(StringComparer.Ordinal);
    private readonly object _lock = new();

    /// <summary><c>model_max_length</c> (77 for CLIP; also the default when tokenizer_config.json has none).</summary>
    public int ModelMaxLength { get; }
    public int BosTokenId { get; }
    public int EosTokenId { get; }
    public int PadTokenId { get; }
    public string BosToken { get; }
    public string EosToken { get; }
    public string PadToken { get; }
    /// <summary>Size of vocab.json.</summary>
    public int VocabSize { get; }

    private ClipTokenizer(BpeTokenizer bpe, AddedTokenSplitter splitter, int maxLen, (string, int) bos, (string, int) eos,
        (string, int) pad, int vocabSize)
    {
        _bpe = bpe;
        _splitter = splitter;
        ModelMaxLength = maxLen;
        (BosToken, BosTokenId) = bos;
        (EosToken, EosTokenId) = eos;
        (PadToken, PadTokenId) = pad;
        VocabSize = vocabSize;
    }

    /// <summary>
    /// Loads the tokenizer of <paramref name="tokenizerDir"/> (or of its <c>tokenizer/</c> sub-folder): tokenizer.json
    /// when present (as transformers does; the only file transformers 5 saves), else vocab.json + merges.txt, with
    /// tokenizer_config.json / special_tokens_map.json when present (model_max_length, bos/eos/unk/pad tokens: SD 2
    /// pads with "!").
    /// </summary>
    public static ClipTokenizer FromFolder(string tokenizerDir)
    {
        var folder = TokenizerFolder.Open(tokenizerDir, "tokenizer.json", "vocab.json");
        var json = folder.Json;
        var added = new List<AddedTokenSpec>();
        var addedByContent = new Dictionary<string, AddedTokenSpec>(StringComparer.Ordinal);
        void Add(AddedTokenSpec t)
        {
            if (addedByContent.ContainsKey(t.Content)) return;
            addedByContent[t.Content] = t;
            added.Add(t);
        }

        BpeTokenizer bpe;
        (int Bos, int Eos)? postProcessor = null;
        if (json is not null)
        {
            bpe = ClipTokenizerJson.CreateBpe(json);
            foreach (var (t, _) in json.AddedTokens) Add(t);
            var (prefix, suffix) = json.SingleSequenceSpecials();
            if (prefix.Length != 1 || suffix.Length != 1)
                throw json.Error("post_processor", json.PostProcessor, "the CLIP tokenizer needs exactly one special token before and one after the text");
            postProcessor = (prefix[0], suffix[0]);
        }
        else
        {
            string vocabPath = folder.FilePath("vocab.json"), mergesPath = folder.FilePath("merges.txt");
            if (!File.Exists(mergesPath)) throw new LensException($"tokenizer file not found: {mergesPath}");
            try
            {
                bpe = BpeTokenizer.Create(new BpeOptions(vocabPath, mergesPath)
                {
                    ByteLevel = true,
                    EndOfWordSuffix = "</w>",
                    PreTokenizer = WholeTextPreTokenizer.Instance,
                    Normalizer = null,
                    FuseUnknownTokens = false,
                });
            }
            catch (Exception e) when (e is not LensException)
            {
                throw new LensException($"cannot read the CLIP tokenizer files in {folder.Dir}: {e.Message}", e);
            }
        }
        var vocab = bpe.Vocabulary;

        int nextId = Math.Max(vocab.Count, added.Count == 0 ? 0 : added.Max(t => t.Id) + 1);
        foreach (var (id, tok) in folder.AddedTokensDecoder()) Add(tok.WithId(id));

        (string, int)? Named(string key, string dflt)
        {
            var t = folder.NamedToken(key, dflt);
            if (t is null) return null;
            if (addedByContent.TryGetValue(t.Content, out var existing)) return (t.Content, existing.Id);
            // transformers adds a special token that is not yet an added token; its id is the vocab id when it
            // exists there, else the next free id.
            int id = vocab.TryGetValue(t.Content, out int v) ? v : nextId++;
            Add(t.WithId(id));
            return (t.Content, id);
        }
        var bos = Named("bos_token", "<|startoftext|>") ?? throw new LensException($"{folder.Dir}: the CLIP tokenizer needs a bos_token");
        var eos = Named("eos_token", "<|endoftext|>") ?? throw new LensException($"{folder.Dir}: the CLIP tokenizer needs an eos_token");
        Named("unk_token", "<|endoftext|>");
        var pad = Named("pad_token", "<|endoftext|>") ?? throw new LensException($"{folder.Dir}: the CLIP tokenizer needs a pad_token for padding=\"max_length\"");
        foreach (var t in folder.AdditionalSpecialTokens())
            if (!addedByContent.ContainsKey(t.Content))
                Add(t.WithId(vocab.TryGetValue(t.Content, out int v) ? v : nextId++));
        // tokenizer.json: the post-processor, not the named tokens, puts the ids around the text
        if (postProcessor is (int pb, int pe))
        {
            bos = (TokenContent(pb) ?? bos.Item1, pb);
            eos = (TokenContent(pe) ?? eos.Item1, pe);
        }
        string? TokenContent(int id) => added.FirstOrDefault(a => a.Id == id)?.Content ?? vocab.FirstOrDefault(kv => kv.Value == id).Key;

        int maxLen = folder.ModelMaxLength ?? 77;
        if (maxLen < 2) throw new LensException($"{folder.Dir}: model_max_length {maxLen} leaves no room for BOS and EOS");
        return new ClipTokenizer(bpe, new AddedTokenSplitter(added, Normalize), maxLen, bos, eos, pad, vocab.Count);
    }

    /// <summary>
    /// <c>tokenizer(text, padding="max_length", max_length=model_max_length, truncation=True)</c>: BOS, the first
    /// <c>model_max_length - 2</c> text ids, EOS, then pad ids; the mask is 1 on BOS..EOS and 0 on padding.
    /// </summary>
    public (long[] InputIds, long[] AttentionMask) Encode(string text) => Encode(text, ModelMaxLength);

    (long[] ids, long[] mask) DiffusionLens.Judge.ITextTokenizer.Encode(string text) => Encode(text);

    /// <summary>As <see cref="Encode(string)"/> with an explicit <c>max_length</c>.</summary>
    public (long[] InputIds, long[] AttentionMask) Encode(string text, int maxLength)
    {
        if (maxLength < 2) throw new LensException($"CLIP max_length {maxLength} leaves no room for BOS and EOS");
        var ids = Tokenize(text);
        int n = Math.Min(ids.Count, maxLength - 2);
        var inputIds = new long[maxLength];
        var mask = new long[maxLength];
        inputIds[0] = BosTokenId;
        for (int i = 0; i < n; i++) inputIds[1 + i] = ids[i];
        inputIds[n + 1] = EosTokenId;
        for (int i = n + 2; i < maxLength; i++) inputIds[i] = PadTokenId;
        for (int i = 0; i < n + 2; i++) mask[i] = 1;
        return (inputIds, mask);
    }

    /// <summary>The token ids of <paramref name="text"/> without BOS/EOS, untruncated.</summary>
    public List<int> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        foreach (var (piece, id) in _splitter.Split(text, Normalize))
        {
            if (id is int tokenId) { ids.Add(tokenId); continue; }
            foreach (var word in PreTokenize(piece)) ids.AddRange(EncodeWord(word));
        }
        return ids;
    }

    /// <summary>The vocabulary string of a token id (byte-level symbols, with "&lt;/w&gt;"), or null.</summary>
    public string? IdToToken(int id)
    {
        lock (_lock)
        {
            _reverse ??= _bpe.Vocabulary.ToDictionary(kv => kv.Value, kv => kv.Key);
            return _reverse.TryGetValue(id, out var t) ? t : null;
        }
    }

    private Dictionary<int, string>? _reverse;

    private int[] EncodeWord(string word)
    {
        lock (_lock)
        {
            if (_wordCache.TryGetValue(word, out var cached)) return cached;
            var ids = _bpe.EncodeToIds(word, considerPreTokenization: true, considerNormalization: false).ToArray();
            if (_wordCache.Count < 100_000) _wordCache[word] = ids;
            return ids;
        }
    }

    /// <summary>tokenizers' <c>Sequence([NFC(), Replace(Regex(r"\s+"), " "), Lowercase()])</c>.</summary>
    internal static string Normalize(string text)
    {
        string nfc = text.Normalize(NormalizationForm.FormC);
        var sb = new StringBuilder(nfc.Length);
        bool inSpace = false;
        foreach (var rune in nfc.EnumerateRunes())
        {
            if (rune.IsBmp && char.IsWhiteSpace((char)rune.Value))
            {
                if (!inSpace) sb.Append(' ');
                inSpace = true;
                continue;
            }
            inSpace = false;
            AppendLower(sb, rune);
        }
        return sb.ToString();
    }

    /// <summary>Rust's <c>char::to_lowercase</c> (full mapping; U+0130 is the one multi-char case).</summary>
    private static void AppendLower(StringBuilder sb, Rune rune)
    {
        if (rune.Value == 0x130) { sb.Append("i\u0307"); return; }
        sb.Append(Rune.ToLowerInvariant(rune).ToString());
    }

    private enum CharClass { Letter, Number, Space, Other }

    private static CharClass Classify(Rune r)
    {
        if (r.IsBmp && char.IsWhiteSpace((char)r.Value)) return CharClass.Space;
        switch (Rune.GetUnicodeCategory(r))
        {
            case UnicodeCategory.UppercaseLetter:
            case UnicodeCategory.LowercaseLetter:
            case UnicodeCategory.TitlecaseLetter:
            case UnicodeCategory.ModifierLetter:
            case UnicodeCategory.OtherLetter:
                return CharClass.Letter;
            case UnicodeCategory.DecimalDigitNumber:
            case UnicodeCategory.LetterNumber:
            case UnicodeCategory.OtherNumber:
                return CharClass.Number;
            default:
                return CharClass.Other;
        }
    }

    private static readonly string[] Contractions = { "'s", "'t", "'re", "'ve", "'m", "'ll", "'d" };

    /// <summary>
    /// The matches of CLIP's split regex, scanned by hand on code points (so letters outside the BMP count as
    /// \p{L}, as in the Rust regex engine); text between matches (whitespace) is dropped. Alternation order is kept:
    /// at each position the first alternative that matches wins. The ByteLevel pre-tokenizer that follows splits
    /// again with the GPT-2 regex, which only changes the two literal alternatives.
    /// </summary>
    internal static List<string> PreTokenize(string s)
    {
        var words = new List<string>();
        int i = 0;
        while (i < s.Length)
        {
            // The literal alternatives match only where the text was not already split out as an added token
            // (e.g. in another case); the ByteLevel pre-tokenizer's GPT-2 regex then splits them in three.
            if (string.CompareOrdinal(s, i, "<|startoftext|>", 0, 15) == 0) { words.AddRange(new[] { "<|", "startoftext", "|>" }); i += 15; continue; }
            if (string.CompareOrdinal(s, i, "<|endoftext|>", 0, 13) == 0) { words.AddRange(new[] { "<|", "endoftext", "|>" }); i += 13; continue; }
            if (s[i] == '\'')
            {
                string? c = Contractions.FirstOrDefault(x => string.CompareOrdinal(s, i, x, 0, x.Length) == 0);
                if (c is not null) { words.Add(c); i += c.Length; continue; }
            }
            Rune.DecodeFromUtf16(s.AsSpan(i), out Rune r, out int len);
            var cls = Classify(r);
            if (cls == CharClass.Space) { i += len; continue; }
            if (cls == CharClass.Number) { words.Add(s.Substring(i, len)); i += len; continue; }
            int start = i;
            i += len;
            while (i < s.Length)
            {
                Rune.DecodeFromUtf16(s.AsSpan(i), out Rune r2, out int len2);
                if (Classify(r2) != cls) break;
                i += len2;
            }
            words.Add(s[start..i]);
        }
        return words;
    }

    /// <summary>A pre-tokenizer that keeps its input whole (the words are already split).</summary>
    internal sealed class WholeTextPreTokenizer : PreTokenizer
    {
        public static readonly WholeTextPreTokenizer Instance = new();

        public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) =>
            string.IsNullOrEmpty(text) ? Array.Empty<(int, int)>() : new[] { (0, text.Length) };

        public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) =>
            text.IsEmpty ? Array.Empty<(int, int)>() : new[] { (0, text.Length) };
    }
}
