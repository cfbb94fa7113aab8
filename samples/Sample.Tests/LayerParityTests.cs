using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Testing;
using Xunit;
using static TorchSharp.torch;

namespace Sample.Tests;

/// <summary>
/// Per-layer parity with diffusers, the way a user's repository gates its own models: every reference folder that
/// lens-make-reference wrote (here the committed fixtures/references/*), each layer's hidden state and lens embedding
/// against diffusers' within the reference's tolerances; float16 references by the error-ratio criterion; a reference
/// whose model or CUDA is absent is skipped with the reason.
/// </summary>
public class LayerParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> StableDiffusionReferences() => new(ReferenceData.All(kind: "sd"));

    [Theory, MemberData(nameof(StableDiffusionReferences))]
    public void EveryLayerMatchesDiffusers(string name)
    {
        using var r = ReferenceData.OpenOrSkip(name);
        using var pipe = LensPipeline.Load(r.ModelPath!, r.Device, r.DType, r.Variant);
        using var layers = pipe.EncodeLayers(r.Prompt);
        Assert.Equal(r.ReadLongs("input_ids"), layers.InputIds);
        Assert.Equal(r.NumLayers, pipe.NumLayers);
        for (int l = 0; l < r.NumLayers; l++)
        {
            using var scope = NewDisposeScope();
            r.AssertMatches($"hidden.{l}", layers.Hidden[l], output, rowDim: r.IsLowPrecision ? null : 1);
            r.AssertMatches($"lens.{l}", pipe.Lens(layers.Hidden[l]), output, rowDim: r.IsLowPrecision ? null : 1);
        }
    }

    [Fact]
    public void FirstAndLastLayerImagesMatchDiffusers()
    {
        using var r = ReferenceData.OpenOrSkip("sd-tiny-12");
        using var pipe = LensPipeline.Load(r.ModelPath!);
        var gen = new GenerationOptions(r.Seed, r.Steps, r.Guidance, r.Height, r.Width);
        using var layers = pipe.EncodeLayers(r.Prompt);
        using var uncond = pipe.EncodeStock(r.NegativePrompt);
        foreach (var l in new[] { 0, r.NumLayers - 1 })
        {
            using var scope = NewDisposeScope();
            var image = pipe.Generate([pipe.Lens(layers.Hidden[l])], uncond, gen);
            var ours = RgbImage.FromUnitHwc(image[0]);
            var theirs = RgbImage.FromUnitHwc(r.Read($"layer.{l}.image"));
            int levels = ours.Pixels.Zip(theirs.Pixels, (a, b) => Math.Abs(a - b)).Max();
            output.WriteLine($"layer {l}: 8-bit max diff {levels} (tolerance {r.Tol.ImageLevels})");
            Assert.True(levels <= r.Tol.ImageLevels, $"layer {l}: images differ by {levels} levels");
        }
    }

    [Fact]
    public void AReferenceWithoutItsModelIsSkippedWithTheReason()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"lens-sample-{Guid.NewGuid():N}", "no-model");
        Directory.CreateDirectory(folder);
        try
        {
            File.WriteAllText(Path.Combine(folder, "reference.json"),
                """{"kind": "sd", "model": {"path": "/nonexistent/model", "env": "LENS_SAMPLE_UNSET_MODEL"}}""");
            using var r = ReferenceData.OpenFolder(folder);
            Assert.NotNull(r.SkipReason);
            Assert.Contains("not on this machine", r.SkipReason);
            Assert.Contains("LENS_SAMPLE_UNSET_MODEL", r.SkipReason);
        }
        finally { Directory.Delete(Path.GetDirectoryName(folder)!, true); }
    }
}
