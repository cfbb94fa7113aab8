using System.Text.Json.Nodes;
using DiffusionLens.Tokenizers;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Tokenizer folders holding only tokenizer.json + tokenizer_config.json (what transformers 5 saves) give the ids
/// transformers produced (fixtures/tokenizers/{clip,t5}.json, exact equality):
/// the folders in fixtures/tokenizers/transformers5 were written by transformers 5.17's <c>save_pretrained</c>
/// (fixtures/make_tokenizer_json.py, run on the GPU host), with transformers' own ids in transformers5/{clip,t5}.json.
/// </summary>
public class TokenizerJsonParityTests
{
    private static string TokDir => Path.Combine(ReferenceData.RepoRoot, "fixtures", "tokenizers");

    private static JsonObject Load(string file) => JsonNode.Parse(File.ReadAllText(Path.Combine(TokDir, file)))!.AsObject();
    private static long[] Longs(JsonNode? n) => n!.AsArray().Select(x => x!.GetValue<long>()).ToArray();

    public static TheoryData<string, int> ClipCases()
    {
        var d = new TheoryData<string, int>();
        foreach (var src in new[] { "transformers5" })
            for (int i = 0; i < Load("clip.json")["cases"]!.AsArray().Count; i++) d.Add(src, i);
        return d;
    }

    public static TheoryData<string, int> T5Cases()
    {
        var d = new TheoryData<string, int>();
        foreach (var src in new[] { "transformers5" })
            for (int i = 0; i < Load("t5.json")["cases"]!.AsArray().Count; i++) d.Add(src, i);
        return d;
    }

    private static readonly Dictionary<string, object> Cache = new();

    private static readonly Dictionary<string, string> Unpacked = new();

    /// <summary>
    /// A saved tokenizer folder: fixtures keep it as &lt;src&gt;/&lt;name&gt;.tar.gz (tokenizer.json compresses 4x), unpacked
    /// once per run into a temp folder; a plain folder of that name is used as it is.
    /// </summary>
    internal static string Folder(string src, string name)
    {
        var dir = Path.Combine(TokDir, src, name);
        var archive = dir + ".tar.gz";
        if (Directory.Exists(dir) || !File.Exists(archive)) return dir;
        lock (Unpacked)
        {
            if (Unpacked.TryGetValue(archive, out var done)) return done;
            var to = Directory.CreateTempSubdirectory($"lens-tok-{src}-{name}-").FullName;
            using (var gz = new System.IO.Compression.GZipStream(File.OpenRead(archive), System.IO.Compression.CompressionMode.Decompress))
                System.Formats.Tar.TarFile.ExtractToDirectory(gz, to, overwriteFiles: false);
            return Unpacked[archive] = to;
        }
    }

    private static T Tokenizer<T>(string src, string name, Func<string, T> load)
    {
        var dir = Folder(src, name);
        if (!File.Exists(Path.Combine(dir, "tokenizer.json")))
            Assert.Skip($"{Path.Combine(TokDir, src, name)}(.tar.gz) not generated yet: run `python fixtures/make_tokenizer_json.py` where transformers 5 is installed");
        Assert.False(File.Exists(Path.Combine(dir, "vocab.json")) || File.Exists(Path.Combine(dir, "spiece.model")),
            $"{dir} must hold tokenizer.json alone");
        lock (Cache)
        {
            var key = src + "/" + name;
            if (!Cache.TryGetValue(key, out var t)) Cache[key] = t = load(dir)!;
            return (T)t;
        }
    }

    /// <summary>transformers5/{name}.json when that source has its own ids, else the original references.</summary>
    private static JsonNode Case(string src, string refFile, int i)
    {
        var own = Path.Combine(TokDir, src, refFile);
        var c = (File.Exists(own) ? Load(Path.Combine(src, refFile)) : Load(refFile))["cases"]![i]!;
        // the saved folder's ids must also equal the vocabulary-file references for the same prompt
        var orig = Load(refFile)["cases"]![i]!;
        Assert.Equal(orig["prompt"]!.GetValue<string>(), c["prompt"]!.GetValue<string>());
        Assert.Equal(Longs(orig["input_ids"]), Longs(c["input_ids"]));
        return c;
    }

    [Theory, MemberData(nameof(ClipCases))]
    public void ClipTokenizerJsonIdsMatchTransformers(string src, int i)
    {
        var tok = Tokenizer(src, "clip", ClipTokenizer.FromFolder);
        var c = Case(src, "clip.json", i);
        Assert.Equal(Longs(c["input_ids"]), tok.Encode(c["prompt"]!.GetValue<string>()).InputIds);
    }

    [Theory, MemberData(nameof(T5Cases))]
    public void T5TokenizerJsonIdsAndMaskMatchTransformers(string src, int i)
    {
        var tok = Tokenizer(src, "t5", T5Tokenizer.FromFolder);
        var c = Case(src, "t5.json", i);
        var (ids, mask) = tok.Encode(c["prompt"]!.GetValue<string>());
        Assert.Equal(Longs(c["input_ids"]), ids);
        Assert.Equal(Longs(c["attention_mask"]), mask);
    }

    [Fact]
    public void UnsupportedTokenizerJsonPartIsNamed()
    {
        var dir = Directory.CreateTempSubdirectory("lens-tokjson-").FullName;
        try
        {
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder("transformers5", "clip"), "tokenizer.json")))!.AsObject();
            json["normalizer"] = JsonNode.Parse("""{"type":"BertNormalizer","lowercase":true}""");
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
            var e = Assert.Throws<LensException>(() => ClipTokenizer.FromFolder(dir));
            Assert.Contains("unsupported normalizer", e.Message);
            Assert.Contains("BertNormalizer", e.Message);

            var t5 = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder("transformers5", "t5"), "tokenizer.json")))!.AsObject();
            t5["model"]!["type"] = "WordPiece";
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), t5.ToJsonString());
            e = Assert.Throws<LensException>(() => T5Tokenizer.FromFolder(dir));
            Assert.Contains("WordPiece", e.Message);

            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{not json");
            e = Assert.Throws<LensException>(() => T5Tokenizer.FromFolder(dir));
            Assert.Contains("tokenizer.json", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
