using System.Text.Json.Nodes;
using DiffusionLens.Sweep;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>The sweep's own promises beyond per-image parity: batching, IF options, the manifest.</summary>
[Collection("pipelines")]
public class SweepTests
{
    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    /// <summary>
    /// Denoising four layers in one UNet batch gives the images of one layer at a time (diffusers' batch of two) up to
    /// kernel rounding: at most 1 8-bit level apart on any pixel.
    /// </summary>
    [Theory]
    [InlineData("sd-tiny-b")]
    [InlineData("if-tiny-b")] // DDPM draws variance noise every step: each layer must get a single run's noise
    public void BatchedLayersMatchOneLayerAtATime(string model)
    {
        var one = CliRunner.TempPath("b1");
        var four = CliRunner.TempPath("b4");
        var common = new SweepOptions { ModelDir = Model(model), Prompt = "A few people are in the ocean splashing around", Steps = 6, OutDir = one };
        var r1 = LensSweep.Run(common);
        var r4 = LensSweep.Run(common with { OutDir = four, Batch = 4 });
        Assert.Equal(r1.Layers, r4.Layers);
        foreach (var l in r1.Layers)
        {
            var a = RgbImage.Load(r1.LayerImages[l]);
            var b = RgbImage.Load(r4.LayerImages[l]);
            int worst = a.Pixels.Zip(b.Pixels, (x, y) => Math.Abs(x - y)).Max();
            Assert.True(worst <= 1, $"layer {l}: batched image differs by {worst} levels");
        }
        Assert.Equal(4, JsonNode.Parse(File.ReadAllText(r4.ManifestPath))!["batch"]!.GetValue<int>());
        Directory.Delete(one, true);
        Directory.Delete(four, true);
    }

    [Fact]
    public void IfSweepFollowsTheIfPipelinesDefaultsAndCaptionOption()
    {
        var outDir = CliRunner.TempPath("if");
        var r = CliRunner.Run("sweep", "--model", Model("if-tiny-b"), "--prompt", "A Photo of #People in the OCEAN", "--steps", "2",
            "--layers", "1:4:2", "--clean-caption", "false", "--out", outDir, "--quiet");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var m = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
        Assert.Equal("IFPipeline", m["pipeline"]!.GetValue<string>());
        Assert.Equal("DDPMScheduler", m["scheduler"]!.GetValue<string>());
        Assert.Equal(7.0, m["guidance"]!.GetValue<double>()); // diffusers' IF default
        Assert.Equal(24, m["height"]!.GetValue<int>());       // the UNet's sample_size
        Assert.False(m["clean_caption"]!.GetValue<bool>());
        Assert.Equal("a photo of #people in the ocean", m["processed_prompt"]!.GetValue<string>()); // lower + strip only
        Assert.Equal(new[] { 1, 3 }, m["layers"]!.AsArray().Select(x => x!.GetValue<int>()));
        Assert.Equal(2, m["unet_calls_per_image"]!.GetValue<int>());
        Directory.Delete(outDir, true);

        var (_, _, cleaned) = PromptTokenizer.Load(Model("if-tiny-b")).Tokenize("A Photo of #People in the OCEAN", null);
        Assert.Equal("a photo of people in the ocean", cleaned); // clean_caption defaults to true, as in diffusers
    }

    [Fact]
    public void CleanCaptionIsRejectedForStableDiffusion()
    {
        var outDir = CliRunner.TempPath("sdcc");
        var r = CliRunner.Run("sweep", "--model", Model("sd-tiny-b"), "--prompt", "x", "--clean-caption", "true", "--out", outDir);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("--clean-caption applies to DeepFloyd IF models only", r.Stderr);
        Assert.False(Directory.Exists(outDir));
    }
}
