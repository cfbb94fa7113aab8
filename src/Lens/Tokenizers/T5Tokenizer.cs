using System.Text.Json.Nodes;
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
internal sealed class T5Tokenizer
{
    /// <summary>The max_length the DeepFloyd IF pipeline uses (hard-coded there).</summary>
    public const int IfMaxLength = 77;

    private readonly SentencePieceTokenizer _spm;
    private readonly AddedTokenSplitter _splitter;
    private readonly T5Pipeline _pipeline;
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

    private T5Tokenizer(SentencePieceTokenizer spm, AddedTokenSplitter splitter, T5Pipeline pipeline, int eos, int pad, int unk, int pieces,
        int extraIds, int? maxLen)
    {
        _spm = spm;
        _splitter = splitter;
        _pipeline = pipeline;
        EosTokenId = eos;
        PadTokenId = pad;
        UnkTokenId = unk;
        PieceCount = pieces;
        ExtraIds = extraIds;
        ModelMaxLength = maxLen;
    }

    /// <summary>
    /// Loads the tokenizer of <paramref name="tokenizerDir"/> (or of its <c>tokenizer/</c> sub-folder): tokenizer.json
    /// when present (as transformers does; the only file transformers 5 saves), else spiece.model, with
    /// tokenizer_config.json / special_tokens_map.json when present (eos/pad/unk tokens, extra_ids,
    /// additional_special_tokens).
    /// </summary>
    public static T5Tokenizer FromFolder(string tokenizerDir)
    {
        var folder = TokenizerFolder.Open(tokenizerDir, "tokenizer.json", "spiece.model");
        var json = folder.Json;
        var added = new List<AddedTokenSpec>();
        var byContent = new Dictionary<string, AddedTokenSpec>(StringComparer.Ordinal);
        void Add(AddedTokenSpec t)
        {
            if (byContent.ContainsKey(t.Content)) return;
            byContent[t.Content] = t;
            added.Add(t);
        }

        SentencePieceTokenizer spm;
        T5Pipeline pipeline;
        int pieceCount, specUnk, specEos, specPad;
        int? postEos = null;
        int extraIds = folder.IntConfig("extra_ids") ?? 100;
        if (extraIds < 0) throw new LensException($"{folder.Dir}: extra_ids {extraIds} is negative");
        var sentinelIds = new Dictionary<string, int>(StringComparer.Ordinal);
        if (json is not null)
        {
            pipeline = T5Pipeline.FromJson(json);
            foreach (var (t, _) in json.AddedTokens) Add(t);
            (spm, pieceCount, specUnk, specEos, specPad) = UnigramFromJson(json);
            var (prefix, suffix) = json.SingleSequenceSpecials();
            if (prefix.Length != 0 || suffix.Length != 1)
                throw json.Error("post_processor", json.PostProcessor, "the T5 tokenizer puts exactly one token (</s>) after the text and none before");
            postEos = suffix[0];
        }
        else
        {
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
            spm = CreateSpm(model, modelPath);
            pipeline = T5Pipeline.FromSpiece(info.Charsmap.Length > 0 ? new PrecompiledCharsmap(info.Charsmap) : null);
            (pieceCount, specUnk, specEos, specPad) = (info.PieceCount, info.UnkId, info.EosId, info.PadId >= 0 ? info.PadId : 0);
            // transformers: the sentinels follow the pieces in reverse order (<extra_id_{n-1}> first).
            for (int i = 0; i < extraIds; i++) sentinelIds[$"<extra_id_{i}>"] = info.PieceCount + extraIds - 1 - i;
        }
        var vocab = spm.Vocabulary;
        int nextId = Math.Max(Math.Max(pieceCount + (json is null ? extraIds : 0), vocab.Count), added.Count == 0 ? 0 : added.Max(t => t.Id) + 1);

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
        int eos = Named("eos_token", "</s>", specEos);
        int unk = Named("unk_token", "<unk>", specUnk);
        int pad = Named("pad_token", "<pad>", specPad);
        if (postEos is int pe) eos = pe; // tokenizer.json: the post-processor appends the EOS
        var additional = folder.AdditionalSpecialTokens();
        if (!additional.Any(t => t.Content.Contains("<extra_id_", StringComparison.Ordinal)))
            additional.AddRange(Enumerable.Range(0, extraIds).Select(i => new TokenFlags($"<extra_id_{i}>")));
        foreach (var t in additional)
            if (!byContent.ContainsKey(t.Content)) Add(t.WithId(IdOf(t.Content)));

        return new T5Tokenizer(spm, new AddedTokenSplitter(added, pipeline.Normalize), pipeline, eos, pad, unk, pieceCount, extraIds,
            folder.ModelMaxLength);
    }

    private static SentencePieceTokenizer CreateSpm(byte[] model, string source)
    {
        try
        {
            using var ms = new MemoryStream(model, writable: false);
            return SentencePieceTokenizer.Create(ms, addBeginningOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not LensException)
        {
            throw new LensException($"cannot load the SentencePiece model {source}: {e.Message}", e);
        }
    }

    /// <summary>A tokenizer.json Unigram model as a SentencePiece model (unknown piece: type 2; special added tokens: control).</summary>
    private static (SentencePieceTokenizer, int Pieces, int Unk, int Eos, int Pad) UnigramFromJson(TokenizerJson json)
    {
        var m = json.Model;
        if (json.ModelType != "Unigram") throw json.Error("model", new JsonObject { ["type"] = json.ModelType }, "a T5 tokenizer is a Unigram model");
        if (m["byte_fallback"] is JsonNode bf && bf.ToJsonString() != "false")
            throw json.Error("model byte_fallback", bf, "T5's unigram model has no byte fallback");
        var specials = json.AddedTokens.Where(t => t.Special).Select(t => t.Token.Content).ToHashSet(StringComparer.Ordinal);
        var pieces = new List<(string, float, int)>();
        int unkId;
        try
        {
            unkId = m["unk_id"]?.GetValue<int>() ?? throw json.Error("model", null, "the Unigram model has no unk_id");
            var vocab = m["vocab"] as JsonArray ?? throw json.Error("model", null, "the Unigram model has no \"vocab\" list");
            foreach (var item in vocab)
            {
                var piece = item![0]!.GetValue<string>();
                float score = (float)item[1]!.GetValue<double>();
                pieces.Add((piece, score, pieces.Count == unkId ? 2 : specials.Contains(piece) ? 3 : 1));
            }
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException or ArgumentOutOfRangeException)
        {
            throw new LensException($"malformed tokenizer file {json.Path}: the Unigram vocab must list [piece, score] pairs and unk_id must be an integer");
        }
        if (unkId < 0 || unkId >= pieces.Count) throw new LensException($"{json.Path}: unk_id {unkId} is not a piece of the Unigram model");
        int Find(string p, int dflt) { int i = pieces.FindIndex(x => x.Item1 == p); return i >= 0 ? i : dflt; }
        int eos = Find("</s>", unkId), pad = Find("<pad>", 0);
        var model = SentencePieceModelPatch.BuildUnigram(pieces, unkId, eos, eos, pad);
        return (CreateSpm(model, json.Path), pieces.Count, unkId, eos, pad);
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
        bool atStart = true;
        foreach (var (piece, id) in _splitter.Split(text, _pipeline.Normalize))
        {
            if (id is int tokenId) { ids.Add(tokenId); atStart = false; continue; }
            EncodePiece(piece, atStart, ids);
            atStart = false;
        }
        return ids;
    }

    /// <summary>Unigram segmentation of each word of an (already normalized) piece, appended to <paramref name="ids"/>.</summary>
    private void EncodePiece(string normalized, bool atStart, List<int> ids)
    {
        foreach (var word in _pipeline.Words(normalized, atStart))
        {
            IReadOnlyList<int> wordIds;
            lock (_lock)
                wordIds = _spm.EncodeToIds(word, addBeginningOfSentence: false, addEndOfSentence: false,
                    considerPreTokenization: false, considerNormalization: false);
            int wordStart = ids.Count;
            foreach (int id in wordIds)
            {
                // tokenizers' Unigram fuses consecutive unknown tokens of a word into one.
                if (id == UnkTokenId && ids.Count > wordStart && ids[^1] == UnkTokenId) continue;
                ids.Add(id);
            }
        }
    }
}
