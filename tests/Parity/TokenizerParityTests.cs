using System.Text.Json.Nodes;
using DiffusionLens.Tokenizers;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Tokenizers and IF caption cleaning against what transformers 5.17 / diffusers 0.40 produced
/// (fixtures/tokenizers/*.json, written by fixtures/make_reference.py from the same tokenizer files real
/// SD 1.5 and DeepFloyd IF folders ship). Exact equality: ids are integers.
/// </summary>
public class TokenizerParityTests
{
    private static JsonObject Load(string file) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(ReferenceData.RepoRoot, "fixtures", "tokenizers", file)))!.AsObject();

    public static TheoryData<int> ClipCases() => new(Enumerable.Range(0, Load("clip.json")["cases"]!.AsArray().Count));
    public static TheoryData<int> T5Cases() => new(Enumerable.Range(0, Load("t5.json")["cases"]!.AsArray().Count));
    public static TheoryData<int> CaptionCases() => new(Enumerable.Range(0, Load("captions.json")["cases"]!.AsArray().Count));

    private static readonly Lazy<ClipTokenizer> Clip = new(() =>
        ClipTokenizer.FromFolder(Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-12", "tokenizer")));
    private static readonly Lazy<T5Tokenizer> T5 = new(() =>
        T5Tokenizer.FromFolder(Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "if-tiny-a", "tokenizer")));

    private static long[] Longs(JsonNode? n) => n!.AsArray().Select(x => x!.GetValue<long>()).ToArray();

    [Theory, MemberData(nameof(ClipCases))]
    public void ClipIdsMatchTransformers(int i)
    {
        var c = Load("clip.json")["cases"]![i]!;
        var (ids, _) = Clip.Value.Encode(c["prompt"]!.GetValue<string>());
        Assert.Equal(Longs(c["input_ids"]), ids);
    }

    [Theory, MemberData(nameof(T5Cases))]
    public void T5IdsAndMaskMatchTransformers(int i)
    {
        var c = Load("t5.json")["cases"]![i]!;
        var (ids, mask) = T5.Value.Encode(c["prompt"]!.GetValue<string>());
        Assert.Equal(Longs(c["input_ids"]), ids);
        Assert.Equal(Longs(c["attention_mask"]), mask);
    }

    [Theory, MemberData(nameof(CaptionCases))]
    public void CaptionCleaningMatchesDiffusers(int i)
    {
        var c = Load("captions.json")["cases"]![i]!;
        var caption = c["caption"]!.GetValue<string>();
        Assert.Equal(c["clean_once"]!.GetValue<string>(), CaptionCleaner.Clean(caption));
        Assert.Equal(c["preprocessed"]!.GetValue<string>(), CaptionCleaner.Preprocess(caption, true));
        Assert.Equal(c["preprocessed_no_clean"]!.GetValue<string>(), CaptionCleaner.Preprocess(caption, false));
    }
}
