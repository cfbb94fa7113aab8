using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Schedulers;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Guidance at or below 1: diffusers' <c>do_classifier_free_guidance = guidance_scale > 1</c>, so at g = 1 and g = 0 the
/// pipeline runs the conditional prompt alone (one UNet row per image; the negative prompt is not used). References:
/// fixtures/references-guidance/&lt;model&gt;/ made by <c>fixtures/make_reference.py guidance</c> with real diffusers
/// (CPU float32): per guidance scale, the stock image and some lens layers' images with the first guided prediction.
/// Tolerances (float32 CPU, as the main references): first prediction rel L2 1e-5 and max |diff| 1e-4 x max(1, max|ref|)
/// per channel; images at most 2 8-bit levels.
/// </summary>
[Collection("pipelines")]
public class GuidanceParityTests
{
    private readonly ITestOutputHelper _out;
    public GuidanceParityTests(ITestOutputHelper output) => _out = output;

    public static string GuidanceRefsDir => Path.Combine(ReferenceData.RepoRoot, "fixtures", "references-guidance");

    /// <summary>The models make_reference.py's GUIDANCE_CASES records.</summary>
    public static TheoryData<string> Models() => new("sd-tiny-12", "if-tiny-b");

    [Theory, MemberData(nameof(Models))]
    public void GuidanceAtMostOneMatchesDiffusers(string model)
    {
        var folder = Path.Combine(GuidanceRefsDir, model);
        using var r = ReferenceData.OpenRecordedOrSkip(folder, "run `python3 fixtures/make_reference.py guidance` with real diffusers (CPU float32) and commit fixtures/references-guidance/");
        using var pipe = LensPipeline.Load(r.ModelPath!, "cpu", "float32", r.Variant);
        bool? clean = r.Kind == "if" ? r.Json["clean_caption"]?.GetValue<bool>() ?? false : null;
        using var layers = pipe.EncodeLayers(r.Prompt, clean);
        using var neg = pipe.EncodeLayers(r.NegativePrompt, clean);
        using var uncond = pipe.Lens(neg.Hidden[^1]);
        int checkedCases = 0;
        foreach (var c in r.Json["cases"]!.AsArray())
        {
            using var scope = NewDisposeScope();
            double g = c!["guidance"]!.GetValue<double>();
            string key = c["key"]!.GetValue<string>();
            int? layer = c["layer"]?.GetValue<int>();
            Assert.True(g <= 1, $"{key}: the guidance references are for g <= 1");
            Assert.Equal(1, c["unet_batch"]!.GetValue<int>()); // diffusers ran the conditional row alone
            var cond = layer is int l ? pipe.Lens(layers.Hidden[l]) : pipe.EncodeStock(r.Prompt, clean);
            var gen = new GenerationOptions(r.Seed, r.Steps, g, r.Height, r.Width);

            // the first guided prediction, from the pipeline's own initial sample
            using var scheduler = Scheduler.FromConfig(pipe.SchedulerConfig);
            scheduler.SetTimesteps(r.Steps);
            var sample = pipe.InitialSample(gen, scheduler, new Generator((ulong)r.Seed));
            var pred = pipe.GuidedPrediction(scheduler, sample, scheduler.Timesteps[0], cond, g);
            AssertPerChannel($"{model} {key} first prediction", pred.cpu(), r.Read($"{key}.first_prediction"));

            int calls = 0;
            var img = pipe.Generate(new[] { cond }, uncond, gen, (_, of) => calls = of);
            Assert.Equal(c["unet_calls"]!.GetValue<int>(), calls);
            AssertImage($"{model} {key}", img[0], r.Read($"{key}.image"), 2);
            checkedCases++;
        }
        Assert.True(checkedCases >= 4, $"{model}: expected images at g = 0 and g = 1, found {checkedCases} cases");
    }

    /// <summary>
    /// Without references: at g &lt;= 1 the negative prompt must not matter (diffusers never encodes or uses it), and
    /// above 1 it must. Fails if guidance is applied at g = 1 or g = 0.
    /// </summary>
    [Theory]
    [InlineData("sd-tiny-b", 1.0)]
    [InlineData("sd-tiny-b", 0.0)]
    [InlineData("if-tiny-b", 1.0)]
    [InlineData("if-tiny-b", 0.5)]
    public void AtGuidanceAtMostOneTheNegativePromptIsUnused(string model, double g)
    {
        using var pipe = LensPipeline.Load(Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", model));
        using var scope = NewDisposeScope();
        var cond = pipe.EncodeStock("a red cube on a table");
        var negA = pipe.EncodeStock("");
        var negB = pipe.EncodeStock("blurry, low quality, a dog");
        var d = pipe.Defaults;
        var gen = new GenerationOptions(3, 3, g, d.Height, d.Width);
        var a = pipe.Generate(new[] { cond }, negA, gen);
        var b = pipe.Generate(new[] { cond }, negB, gen);
        Assert.True(ReferenceData.Identical(a, b), $"{model} at guidance {g}: the negative prompt changed the image (guidance ran)");
        var guided = gen with { Guidance = 3.0 };
        var ga = pipe.Generate(new[] { cond }, negA, guided);
        var gb = pipe.Generate(new[] { cond }, negB, guided);
        Assert.False(ReferenceData.Identical(ga, gb), $"{model} at guidance 3: the negative prompt must change the image");
    }

    private void AssertPerChannel(string what, Tensor actual, Tensor expected)
    {
        Assert.Equal(expected.shape, actual.shape);
        double worst = 0;
        for (long ch = 0; ch < expected.shape[1]; ch++)
        {
            using var a = actual[.., ch];
            using var e = expected[.., ch];
            var (maxAbs, refMax, rel) = ReferenceData.Compare(a, e);
            worst = Math.Max(worst, rel);
            Assert.True(rel <= 1e-5 && maxAbs <= 1e-4 * Math.Max(1, refMax),
                $"{what}: channel {ch}: rel L2 {rel:E2}, max |diff| {maxAbs:E2} (ref max {refMax:E2}) over tolerance");
        }
        _out.WriteLine($"{what}: worst per-channel rel L2 {worst:E2}");
    }

    private void AssertImage(string what, Tensor actual, Tensor expected, int levels)
    {
        var a8 = RgbImage.FromUnitHwc(actual);
        var e8 = RgbImage.FromUnitHwc(expected);
        int max = a8.Pixels.Zip(e8.Pixels, (x, y) => Math.Abs(x - y)).Max();
        _out.WriteLine($"{what}: 8-bit max diff {max}");
        Assert.True(max <= levels, $"{what}: 8-bit images differ by {max} levels (tolerance {levels})");
    }
}
