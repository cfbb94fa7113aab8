using Microsoft.ML.Tokenizers;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// The T5 tokenizer as transformers 5 builds it from <c>spiece.model</c> (<c>T5Tokenizer</c>, backed by
/// <c>tokenizers</c>):
/// <list type="bullet">
/// <item>added tokens split out first: <c>&lt;pad&gt;</c>, <c>&lt;/s&gt;</c>, <c>&lt;unk&gt;</c> and the sentinels
/// <c>&lt;extra_id_0&gt;</c>..<c>&lt;extra_id_{extra_ids-1}&gt;</c> (ids counted down from the top:
/// <c>&lt;extra_id_0&gt;</c> = 32099 for 32000 pieces and 100 extra ids);</item>
/// <item>each remaining piece: the model's precompiled (nmt_nfkc) normalization as <c>tokenizers</c>'
/// <c>Precompiled</c> normalizer applies it (<see cref="PrecompiledCharsmap"/>), split on Unicode whitespace
/// (<c>WhitespaceSplit</c>), "▁" before every word (<c>Metaspace</c>, prepend_scheme "always"), then unigram
/// (Viterbi) segmentation of each word by Microsoft.ML.Tokenizers' SentencePieceTokenizer with its own
/// normalization off; consecutive unknown tokens fuse into one <c>&lt;unk&gt;</c> as in <c>tokenizers</c>' Unigram.
/// (The SentencePieceTokenizer's own normalizer is not used: it keeps control characters that nmt_nfkc removes and
/// never fuses unknowns.)</item>
/// <item>post-processing: append <c>&lt;/s&gt;</c>.</item>
/// </list>
/// <see cref="Encode(string)"/> equals what the DeepFloyd IF pipeline calls: <c>tokenizer(text, padding="max_length",
/// max_length=77, truncation=True, add_special_tokens=True, return_attention_mask=True)</c>.
/// </summary>
public sealed class T5Tokenizer
{
    /// <summary>The max_length the DeepFloyd IF pipeline uses (hard-coded there).</summary>
    public const int IfMaxLength = 77;

    private readonly SentencePieceTokenizer _spm;
    private readonly AddedTokenSplitter _splitter;
    private readonly PrecompiledCharsmap? _charsmap;
    private readonly object _lock = new();

    public int EosTokenId { get; }
    public int PadTokenId { get; }
    public int UnkTokenId { get; }
    /// <summary>Number of pieces in spiece.model (32000 for T5 v1.1).</summary>
    public int PieceCount { get; }
    /// <summary>Number of sentinel tokens <c>&lt;extra_id_N&gt;</c> (tokenizer_config "extra_ids", default 100).</summary>
    public int ExtraIds { get; }
    /// <summary>tokenizer_config.json's model_max_length, if any (the IF pipeline ignores it and uses 77).</summary>
    public int? ModelMaxLength { get; }

    private T5Tokenizer(SentencePieceTokenizer spm, AddedTokenSplitter splitter, PrecompiledCharsmap? charsmap, int eos, int pad, int unk, int pieces,
        int extraIds, int? maxLen)
    {
        _spm = spm;
        _splitter = splitter;
        _charsmap = charsmap;
        EosTokenId = eos;
        PadTokenId = pad;
        UnkTokenId = unk;
        PieceCount = pieces;
        ExtraIds = extraIds;
        ModelMaxLength = maxLen;
    }

    /// <summary>
    /// Loads spiece.model from <paramref name="tokenizerDir"/> (or its <c>tokenizer/</c> sub-folder), with
    /// tokenizer_config.json / special_tokens_map.json when present (eos/pad/unk tokens, extra_ids,
    /// additional_special_tokens).
    /// </summary>
    public static T5Tokenizer FromFolder(string tokenizerDir)
    {
        var folder = TokenizerFolder.Open(tokenizerDir, "spiece.model");
        string modelPath = folder.FilePath("spiece.model");
        byte[] model = File.ReadAllBytes(modelPath);
        var info = SentencePieceModelPatch.Read(model);
        if (info.PieceCount == 0) throw new LensException($"{modelPath}: no pieces in the SentencePiece model");
        if (info.EosId < 0 || info.EosId >= info.PieceCount)
            throw new LensException($"{modelPath}: eos_id {info.EosId} is not a piece of the model");
        if (info.UnkId < 0 || info.UnkId >= info.PieceCount)
            throw new LensException($"{modelPath}: unk_id {info.UnkId} is not a piece of the model");
        // T5's spiece.model has bos_id = -1, which Microsoft.ML.Tokenizers cannot load; BOS is never used here.
        if (info.BosId < 0 || info.BosId >= info.PieceCount) model = SentencePieceModelPatch.WithBosId(model, info.EosId);

        SentencePieceTokenizer spm;
        try
        {
            using var ms = new MemoryStream(model, writable: false);
            spm = SentencePieceTokenizer.Create(ms, addBeginningOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not LensException)
        {
            throw new LensException($"cannot load the SentencePiece model {modelPath}: {e.Message}", e);
        }
        var vocab = spm.Vocabulary;

        int extraIds = folder.IntConfig("extra_ids") ?? 100;
        if (extraIds < 0) throw new LensException($"{folder.Dir}: extra_ids {extraIds} is negative");
        // transformers: the sentinels follow the pieces in reverse order (<extra_id_{n-1}> first).
        var sentinelIds = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < extraIds; i++) sentinelIds[$"<extra_id_{i}>"] = info.PieceCount + extraIds - 1 - i;
        int nextId = info.PieceCount + extraIds;

        var added = new List<AddedTokenSpec>();
        var byContent = new Dictionary<string, AddedTokenSpec>(StringComparer.Ordinal);
        void Add(AddedTokenSpec t)
        {
            if (byContent.ContainsKey(t.Content)) return;
            byContent[t.Content] = t;
            added.Add(t);
        }
        int IdOf(string content) =>
            sentinelIds.TryGetValue(content, out int s) ? s : vocab.TryGetValue(content, out int v) ? v : nextId++;

        foreach (var (id, tok) in folder.AddedTokensDecoder()) Add(tok.WithId(id));
        int Named(string key, string dflt, int fallbackId)
        {
            var t = folder.NamedToken(key, dflt) ?? new TokenFlags(dflt);
            if (byContent.TryGetValue(t.Content, out var existing)) return existing.Id;
            int id = vocab.TryGetValue(t.Content, out int v) ? v : t.Content == dflt ? fallbackId : IdOf(t.Content);
            Add(t.WithId(id));
            return id;
        }
        int eos = Named("eos_token", "</s>", info.EosId);
        int unk = Named("unk_token", "<unk>", info.UnkId);
        int pad = Named("pad_token", "<pad>", info.PadId >= 0 ? info.PadId : 0);
        var additional = folder.AdditionalSpecialTokens();
        if (!additional.Any(t => t.Content.Contains("<extra_id_", StringComparison.Ordinal)))
            additional.AddRange(Enumerable.Range(0, extraIds).Select(i => new TokenFlags($"<extra_id_{i}>")));
        foreach (var t in additional)
            if (!byContent.ContainsKey(t.Content)) Add(t.WithId(IdOf(t.Content)));

        return new T5Tokenizer(spm, new AddedTokenSplitter(added, s => s),
            info.Charsmap.Length > 0 ? new PrecompiledCharsmap(info.Charsmap) : null, eos, pad, unk, info.PieceCount, extraIds,
            folder.ModelMaxLength);
    }

    /// <summary>
    /// The IF pipeline's call, max_length 77: the text ids truncated to 76, <c>&lt;/s&gt;</c>, then pad ids (0);
    /// the mask is 1 on the text ids and EOS.
    /// </summary>
    public (long[] InputIds, long[] AttentionMask) Encode(string text) => Encode(text, IfMaxLength);

    /// <summary>As <see cref="Encode(string)"/> with an explicit <c>max_length</c>.</summary>
    public (long[] InputIds, long[] AttentionMask) Encode(string text, int maxLength)
    {
        if (maxLength < 1) throw new LensException($"T5 max_length {maxLength} leaves no room for EOS");
        var ids = Tokenize(text);
        int n = Math.Min(ids.Count, maxLength - 1);
        var inputIds = new long[maxLength];
        var mask = new long[maxLength];
        for (int i = 0; i < n; i++) inputIds[i] = ids[i];
        inputIds[n] = EosTokenId;
        for (int i = n + 1; i < maxLength; i++) inputIds[i] = PadTokenId;
        for (int i = 0; i <= n; i++) mask[i] = 1;
        return (inputIds, mask);
    }

    /// <summary>The token ids of <paramref name="text"/> without EOS, untruncated.</summary>
    public List<int> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        foreach (var (piece, id) in _splitter.Split(text, s => s))
        {
            if (id is int tokenId) { ids.Add(tokenId); continue; }
            ids.AddRange(EncodePiece(piece));
        }
        return ids;
    }

    private List<int> EncodePiece(string piece)
    {
        var ids = new List<int>();
        string norm = _charsmap is null ? piece : _charsmap.Normalize(piece);
        foreach (var word in norm.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
        {
            IReadOnlyList<int> wordIds;
            lock (_lock)
                wordIds = _spm.EncodeToIds("\u2581" + word, addBeginningOfSentence: false, addEndOfSentence: false,
                    considerPreTokenization: false, considerNormalization: false);
            foreach (int id in wordIds)
            {
                // tokenizers' Unigram fuses consecutive unknown tokens into one.
                if (id == UnkTokenId && ids.Count > 0 && ids[^1] == UnkTokenId) continue;
                ids.Add(id);
            }
        }
        return ids;
    }
}
