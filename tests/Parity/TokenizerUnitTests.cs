using DiffusionLens;
using DiffusionLens.Tokenizers;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Tokenizer and caption-cleaning checks that need no Python fixtures. Expected ids were produced by Hugging Face
/// <c>tokenizers</c> (0.23, the backend of transformers 5) configured as transformers 5's CLIPTokenizer / T5Tokenizer
/// build themselves, on the vocabulary files in shared/tokenizers; expected cleaned captions were produced by
/// diffusers' <c>IFPipeline._clean_caption</c> (with bs4 and ftfy 6.3).
/// </summary>
public class TokenizerUnitTests
{
    /// <summary>
    /// ../shared/tokenizers/NAME beside the checkout (or $DIFFUSION_LENS_SHARED/tokenizers/NAME); where that is absent
    /// (a GPU host), the identical copies the fixture models carry in their tokenizer/ folders.
    /// </summary>
    private static string SharedTokenizerDir(string name)
    {
        var candidates = new List<string>();
        var env = Environment.GetEnvironmentVariable("DIFFUSION_LENS_SHARED");
        if (!string.IsNullOrEmpty(env)) candidates.Add(Path.Combine(env, "tokenizers", name));
        for (var d = new DirectoryInfo(ReferenceData.RepoRoot); d is not null; d = d.Parent)
            candidates.Add(Path.Combine(d.FullName, "shared", "tokenizers", name));
        var fixtureModel = name.StartsWith("clip") ? "sd-tiny-12" : "if-tiny-a";
        candidates.Add(Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", fixtureModel, "tokenizer"));
        foreach (var c in candidates)
            if (Directory.Exists(c)) return c;
        Assert.Fail($"tokenizer files for {name} not found (looked in: {string.Join(", ", candidates)})");
        return "";
    }

    private static readonly Lazy<ClipTokenizer> Clip = new(() => ClipTokenizer.FromFolder(SharedTokenizerDir("clip-vit-large-patch14")));
    private static readonly Lazy<T5Tokenizer> T5 = new(() => T5Tokenizer.FromFolder(SharedTokenizerDir("t5-v1_1")));

    private static long[] Padded(int length, long pad, params long[] head)
    {
        var a = Enumerable.Repeat(pad, length).ToArray();
        head.CopyTo(a, 0);
        return a;
    }

    private static long[] Mask(int length, int ones) => Enumerable.Range(0, length).Select(i => i < ones ? 1L : 0L).ToArray();

    private static string TempDir()
    {
        string d = Path.Combine(Path.GetTempPath(), "lens-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }

    // ------------------------------------------------------------------ CLIP

    [Fact]
    public void Clip_KnownPrompt()
    {
        var (ids, mask) = Clip.Value.Encode("a photo of a cat");
        Assert.Equal(Padded(77, 49407, 49406, 320, 1125, 539, 320, 2368, 49407), ids);
        Assert.Equal(Mask(77, 7), mask);
        Assert.Equal(77, Clip.Value.ModelMaxLength);
        Assert.Equal((49406, 49407, 49407), (Clip.Value.BosTokenId, Clip.Value.EosTokenId, Clip.Value.PadTokenId));
    }

    [Theory]
    [InlineData("an astronaut riding a horse on mars", new long[] { 550, 18376, 6765, 320, 4558, 525, 7496 })]
    [InlineData("it's a dog's life", new long[] { 585, 568, 320, 1929, 568, 970 })]
    [InlineData("2023", new long[] { 273, 271, 273, 274 })]
    [InlineData("café naïve", new long[] { 15304, 1097, 35689, 563 })]
    [InlineData("a cat!", new long[] { 320, 2368, 256 })]
    [InlineData("日本語", new long[] { 39121, 44353, 34002, 508 })]
    [InlineData("<extra_id_0>", new long[] { 283, 4231, 318, 1014, 318, 271, 285 })]
    public void Clip_TokenIds(string text, long[] expected)
    {
        Assert.Equal(expected, Clip.Value.Tokenize(text).Select(i => (long)i).ToArray());
    }

    [Fact]
    public void Clip_NormalizesCaseAndWhitespace()
    {
        Assert.Equal(Clip.Value.Encode("a photo of a cat").InputIds, Clip.Value.Encode("  A  Photo\tOF a\nCAT ").InputIds);
    }

    [Fact]
    public void Clip_EmptyPrompt()
    {
        var (ids, mask) = Clip.Value.Encode("");
        Assert.Equal(Padded(77, 49407, 49406, 49407), ids);
        Assert.Equal(Mask(77, 2), mask);
    }

    [Fact]
    public void Clip_TruncationKeepsBosAndEos()
    {
        string prompt = string.Join(" ", Enumerable.Repeat("cat", 100));
        Assert.Equal(100, Clip.Value.Tokenize(prompt).Count);
        var (ids, mask) = Clip.Value.Encode(prompt);
        Assert.Equal(77, ids.Length);
        Assert.Equal(49406, ids[0]);
        Assert.All(ids[1..76], id => Assert.Equal(2368, id));
        Assert.Equal(49407, ids[76]);
        Assert.All(mask, m => Assert.Equal(1, m));
    }

    [Fact]
    public void Clip_SpecialTokenInTextIsOneId()
    {
        Assert.Equal(new[] { 320, 49407, 2368 }, Clip.Value.Tokenize("a<|endoftext|>cat"));
    }

    [Fact]
    public void Clip_PadTokenFromSpecialTokensMap()
    {
        // SD 2's tokenizer: pad_token "!" (id 0); "!" in the text is then split out as that special token.
        string dir = TempDir();
        try
        {
            string src = SharedTokenizerDir("clip-vit-large-patch14");
            File.Copy(Path.Combine(src, "vocab.json"), Path.Combine(dir, "vocab.json"));
            File.Copy(Path.Combine(src, "merges.txt"), Path.Combine(dir, "merges.txt"));
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
                """{"model_max_length": 77, "pad_token": "<|endoftext|>", "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false}}""");
            File.WriteAllText(Path.Combine(dir, "special_tokens_map.json"), """{"pad_token": "!"}""");
            var tok = ClipTokenizer.FromFolder(dir);
            Assert.Equal(0, tok.PadTokenId);
            var (ids, mask) = tok.Encode("a cat!");
            Assert.Equal(Padded(77, 0, 49406, 320, 2368, 0, 49407), ids);
            Assert.Equal(Mask(77, 5), mask);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Clip_Sd2TokenizerConfigPadsWithBang()
    {
        // SD 2.x's tokenizer folder: CLIP's BPE files and a tokenizer_config.json with pad_token "!" (no
        // special_tokens_map.json here). The padding is the vocab id of "!", not the EOS; the ids up to the EOS are SD 1.x's.
        string dir = TempDir();
        try
        {
            string src = SharedTokenizerDir("clip-vit-large-patch14");
            File.Copy(Path.Combine(src, "vocab.json"), Path.Combine(dir, "vocab.json"));
            File.Copy(Path.Combine(src, "merges.txt"), Path.Combine(dir, "merges.txt"));
            const string added = """{"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false}""";
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
                $$"""{"do_lower_case": true, "eos_token": {{added}}, "unk_token": {{added}}, "model_max_length": 77, "pad_token": "!", "tokenizer_class": "CLIPTokenizer"}""");
            var tok = ClipTokenizer.FromFolder(dir);
            var vocab = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(src, "vocab.json")))!;
            int bang = vocab["!"]!.GetValue<int>();
            Assert.Equal("!", tok.PadToken);
            Assert.Equal(bang, tok.PadTokenId);
            Assert.NotEqual(tok.EosTokenId, tok.PadTokenId);
            var (ids, mask) = tok.Encode("a photo of a cat");
            var (sd1, sd1Mask) = Clip.Value.Encode("a photo of a cat");
            int eos = Array.IndexOf(sd1, (long)Clip.Value.EosTokenId);
            Assert.Equal(sd1[..(eos + 1)], ids[..(eos + 1)]);
            Assert.All(ids[(eos + 1)..], id => Assert.Equal(bang, id));
            Assert.Equal(sd1Mask, mask);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Clip_ModelMaxLengthFromConfig_AndTokenizerSubfolder()
    {
        string root = TempDir();
        try
        {
            string dir = Path.Combine(root, "tokenizer");
            Directory.CreateDirectory(dir);
            string src = SharedTokenizerDir("clip-vit-large-patch14");
            File.Copy(Path.Combine(src, "vocab.json"), Path.Combine(dir, "vocab.json"));
            File.Copy(Path.Combine(src, "merges.txt"), Path.Combine(dir, "merges.txt"));
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"model_max_length": 6}""");
            var tok = ClipTokenizer.FromFolder(root);
            Assert.Equal(6, tok.ModelMaxLength);
            Assert.Equal(new long[] { 49406, 320, 1125, 539, 320, 49407 }, tok.Encode("a photo of a cat").InputIds);
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void Clip_MissingFolderIsLensException()
    {
        var e = Assert.Throws<LensException>(() => ClipTokenizer.FromFolder("/nonexistent/tokenizer/dir"));
        Assert.Contains("/nonexistent/tokenizer/dir", e.Message);
    }

    // ------------------------------------------------------------------ T5

    [Fact]
    public void T5_KnownPrompt()
    {
        var (ids, mask) = T5.Value.Encode("a photo of a cat");
        Assert.Equal(Padded(77, 0, 3, 9, 1202, 13, 3, 9, 1712, 1), ids);
        Assert.Equal(Mask(77, 8), mask);
        Assert.Equal((1, 0, 2), (T5.Value.EosTokenId, T5.Value.PadTokenId, T5.Value.UnkTokenId));
    }

    [Theory]
    [InlineData("an astronaut riding a horse on mars", new long[] { 46, 30059, 7494, 3, 9, 4952, 30, 8113 })]
    [InlineData("it's a dog's life", new long[] { 34, 31, 7, 3, 9, 1782, 31, 7, 280 })]
    [InlineData("2023", new long[] { 460, 2773 })]
    [InlineData("café naïve", new long[] { 11949, 3, 29, 9, 2, 162 })]
    [InlineData("a cat!", new long[] { 3, 9, 1712, 55 })]
    [InlineData("日本語", new long[] { 3, 2 })] // unknown characters fuse into one <unk>
    [InlineData("<extra_id_0>", new long[] { 32099 })]
    [InlineData("<extra_id_99>", new long[] { 32000 })]
    [InlineData("a <extra_id_5> b", new long[] { 3, 9, 32094, 3, 115 })]
    [InlineData("ctrl\u0007chars", new long[] { 3, 75, 17, 52, 40, 4059, 7 })] // nmt_nfkc drops control characters
    public void T5_TokenIds(string text, long[] expected)
    {
        Assert.Equal(expected, T5.Value.Tokenize(text).Select(i => (long)i).ToArray());
    }

    [Fact]
    public void T5_EmptyPrompt()
    {
        var (ids, mask) = T5.Value.Encode("");
        Assert.Equal(Padded(77, 0, 1), ids);
        Assert.Equal(Mask(77, 1), mask);
    }

    [Fact]
    public void T5_CollapsesWhitespace()
    {
        Assert.Equal(T5.Value.Encode("a photo of a cat").InputIds, T5.Value.Encode("  a   photo\tof\na cat  ").InputIds);
    }

    [Fact]
    public void T5_TruncationKeepsEos()
    {
        string prompt = string.Join(" ", Enumerable.Repeat("cat", 100));
        var (ids, mask) = T5.Value.Encode(prompt);
        Assert.Equal(77, ids.Length);
        Assert.Equal(1, ids[76]);
        Assert.DoesNotContain(0L, ids);
        Assert.All(mask, m => Assert.Equal(1, m));
        Assert.Equal(T5.Value.Tokenize(prompt).Take(76).Select(i => (long)i), ids[..76]);
    }

    // ------------------------------------------------------------------ caption cleaning

    [Theory]
    [InlineData("  A Photo OF a Cat ", "a photo of a cat")]
    [InlineData("ΟΔΟΣ", "οδος")] // Python str.lower applies the final-sigma rule
    [InlineData("İstanbul", "i\u0307stanbul")]
    public void Preprocess_WithoutCleaning_LowerStrip(string input, string expected)
    {
        Assert.Equal(expected, CaptionCleaner.Preprocess(input, cleanCaption: false));
    }

    [Theory]
    [InlineData("A photo of a cat https://example.com/cat.jpg #cute @john", "a photo of a cat . cute", "a photo of a cat cute")]
    [InlineData("&amp; &lt;b&gt;bold&lt;/b&gt; <p>para</p>", "<b>bold< b> para", "bold< b> para")]
    [InlineData("a &#147;q&#148; &#x41;", "a \"q\" A", "a \"q\" a")]
    public void Clean_OnePassAndTwo(string input, string once, string twice)
    {
        Assert.Equal(once, CaptionCleaner.Clean(input));
        Assert.Equal(twice, CaptionCleaner.Preprocess(input, cleanCaption: true));
    }

    [Theory]
    [InlineData("  An astronaut riding a horse on Mars, 4K, trending on ArtStation  ", "an astronaut riding a horse on mars, 4k, trending on artstation")]
    [InlineData("Check www.site.org/path now", "check now")]
    [InlineData("#hashtag #123 #12345 #1234", "hashtag 1234")]
    [InlineData("phone 1234567 and 12345", "phone and 12345")]
    [InlineData("ip 192.168.0.1 here", "ip here")]
    [InlineData("file image_001.png and photo.JPG", "file and")]
    [InlineData("\"\"\"AUSVERKAUFT\"\"\"", "ausverkauft")]
    [InlineData("***SALE*** [new] {x} (y) |z| a/b a\\b ~tilde", "sale new x y z a b a b tilde")]
    [InlineData("this-is-my-cute-cat", "this is my cute cat")]
    [InlineData("this_is-my_cute", "this_is-my_cute")]
    [InlineData("free download now download free", "now")]
    [InlineData("size 1920x1080 and 3.5×2", "size and")]
    [InlineData("title : subtitle", "title: subtitle")]
    [InlineData("a,b.c/d e, f. g", "a, b. c d e, f. g")]
    [InlineData("'quoted whole'", "quoted whole")]
    [InlineData("漢字 mixed 中文 text", "mixed text")]
    [InlineData("Café naïve ＬＯＵＤ ﬁne", "café naïve loud fine")]
    [InlineData("a%20b+c%2Fd %zz %E2%9C%94", "a b c d %zz \u2714")]
    [InlineData("<person> is here", "person is here")]
    [InlineData("A <i>beautiful</i> painting of a <b>sunset</b>", "a beautiful painting of a sunset")]
    [InlineData("“Smart quotes” and ‘single’", "smart quotes\" and 'single")]
    [InlineData("P&EACUTE;REZ", "p\u00e9rez")]
    [InlineData("dash—em–en―bar", "dash-em-en-bar")]
    [InlineData("U.S.A.", "u. s. a.")]
    [InlineData("", "")]
    public void Preprocess_Cleaning(string input, string expected)
    {
        Assert.Equal(expected, CaptionCleaner.Preprocess(input, cleanCaption: true));
    }
}
