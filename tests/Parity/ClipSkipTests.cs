using DiffusionLens.Pipelines;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The lens of CLIP layer L is diffusers' <c>clip_skip = N - 1 - L</c> (StableDiffusionPipeline.encode_prompt: hidden
/// state -(clip_skip + 1) through the final layer norm; clip_skip 0 is the plain last layer). References:
/// fixtures/references-clipskip/&lt;model&gt;/ made by <c>fixtures/make_reference.py clipskip</c> with real diffusers (CPU
/// float32). Tolerance: as the main references' lens embeddings, rel L2 at most 1e-5 per token row.
/// </summary>
public class ClipSkipTests
{
    private readonly ITestOutputHelper _out;
    public ClipSkipTests(ITestOutputHelper output) => _out = output;

    public static TheoryData<string> Models() => new("sd-tiny-12", "sd-tiny-b");

    [Theory, MemberData(nameof(Models))]
    public void LensLayerEqualsDiffusersClipSkip(string model)
    {
        var folder = Path.Combine(ReferenceData.RepoRoot, "fixtures", "references-clipskip", model);
        using var r = ReferenceData.OpenRecordedOrSkip(folder, "run `python3 fixtures/make_reference.py clipskip` with real diffusers (CPU float32) and commit fixtures/references-clipskip/");
        using var pipe = LensPipeline.Load(r.ModelPath!);
        int n = pipe.NumLayers;
        Assert.Equal(r.Json["num_layers"]!.GetValue<int>(), n);
        using var layers = pipe.EncodeLayers(r.Prompt);
        var skips = r.Json["clip_skips"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        Assert.Equal(n - 1, skips.Length);
        foreach (var clipSkip in skips)
        {
            using var scope = NewDisposeScope();
            int layer = n - 1 - clipSkip;
            var lens = pipe.Lens(layers.Hidden[layer]);
            var expected = r.Read($"clip_skip.{clipSkip}");
            Assert.Equal(expected.shape, lens.shape);
            for (long t = 0; t < expected.shape[1]; t++)
            {
                var (maxAbs, _, rel) = ReferenceData.Compare(lens[0, t], expected[0, t]);
                Assert.True(rel <= 1e-5, $"{model} layer {layer} vs clip_skip {clipSkip}, token {t}: rel L2 {rel:E2} (max |diff| {maxAbs:E2})");
            }
            _out.WriteLine($"{model}: lens layer {layer} == diffusers clip_skip {clipSkip}");
        }
    }
}
