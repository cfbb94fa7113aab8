using System.Text.Json.Nodes;
using DiffusionLens.Judge;
using DiffusionLens.Sweep;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// <c>--layer-numbering lens|hidden-state</c>: parsing in both numberings, the checks before weights load, and the CLI
/// end to end (hidden-KK.png files, manifest <c>layer_numbering</c>, usage errors). The numerics are in
/// <see cref="LayerNumberingModelTests"/> and <see cref="NumberingParityTests"/>.
/// </summary>
public class LayerNumberingTests
{
    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    [Theory]
    [InlineData("all", 4, new[] { 0, 1, 2, 3, 4 })]
    [InlineData("0:13:4", 12, new[] { 0, 4, 8, 12 })]
    [InlineData("12", 12, new[] { 12 })]
    [InlineData("0,3,12", 12, new[] { 0, 3, 12 })]
    [InlineData("10:", 12, new[] { 10, 11, 12 })]
    [InlineData("4:25:4", 24, new[] { 4, 8, 12, 16, 20, 24 })]
    public void ParsesHiddenStateIndices(string spec, int n, int[] expected) =>
        Assert.Equal(expected, LayerSelection.Parse(spec, n, LayerNumbering.HiddenState));

    [Fact]
    public void LensNumberingIsTheDefaultAndUnchanged()
    {
        Assert.Equal(Enumerable.Range(0, 12), LayerSelection.Parse("all", 12));
        Assert.Equal(LayerSelection.Parse("0:12:2", 12), LayerSelection.Parse("0:12:2", 12, LayerNumbering.Lens));
        Assert.Equal("lens", new SweepOptions { ModelDir = "m", Prompt = "p", OutDir = "o" }.LayerNumbering);
        var e = Assert.Throws<LensException>(() => LayerSelection.Parse("12", 12, LayerNumbering.Lens));
        Assert.Contains("layer 12 is out of range", e.Message);
        Assert.Contains("12 layers (0..11)", e.Message);
    }

    [Theory]
    [InlineData("13", 12, "hidden state 13 is out of range")]
    [InlineData("-1", 12, "hidden state -1 is out of range")]
    [InlineData("0:14", 12, "stop 14 must be in 1..13")]
    [InlineData("0:13:0", 12, "step must be positive")]
    [InlineData("x", 12, "'x' is not a hidden state number")]
    [InlineData("4,4", 12, "a hidden state is listed twice")]
    public void RejectsHiddenStateIndicesWithAClearMessage(string spec, int n, string fragment)
    {
        var e = Assert.Throws<LensException>(() => LayerSelection.Parse(spec, n, LayerNumbering.HiddenState));
        Assert.Contains(fragment, e.Message);
        Assert.Contains("hidden-state numbering", e.Message);
        Assert.Contains($"{n + 1} hidden states (0..{n}: 0 = the embedding output", e.Message);
    }

    [Fact]
    public void RejectsAnUnknownNumbering()
    {
        var e = Assert.Throws<LensException>(() => LayerSelection.Parse("all", 12, "paper"));
        Assert.Equal("--layer-numbering must be lens or hidden-state (got 'paper')", e.Message);
    }

    [Fact]
    public void ValidatesAgainstTheConfigBeforeWeightsLoad()
    {
        var o = new SweepOptions { ModelDir = Model("sd-tiny-12"), Prompt = "p", OutDir = "unused", LayerNumbering = LayerNumbering.HiddenState };
        LensSweep.Validate(o with { Layers = "0,12" }); // 12 CLIP layers: hidden states 0..12
        var e = Assert.Throws<LensException>(() => LensSweep.Validate(o with { Layers = "13" }));
        Assert.Contains("13 hidden states (0..12", e.Message);
        Assert.Throws<LensException>(() => LensSweep.Validate(o with { Layers = "12", LayerNumbering = LayerNumbering.Lens }));
        Assert.Throws<LensException>(() => LensSweep.Validate(o with { LayerNumbering = "hidden" }));
        var t5 = o with { ModelDir = Model("if-tiny-a"), Variant = "fp16" };
        LensSweep.Validate(t5 with { Layers = "24" }); // 24 T5 blocks: hidden states 0..24
        Assert.Throws<LensException>(() => LensSweep.Validate(t5 with { Layers = "25" }));
    }

    [Fact]
    public void CliWritesHiddenStateFilesAndRecordsTheNumbering()
    {
        var outDir = CliRunner.TempPath("hidden");
        try
        {
            var r = CliRunner.Run("sweep", "--model", Model("sd-tiny-12"), "--prompt", "A few people are in the ocean splashing around",
                "--steps", "2", "--layers", "0,12", "--layer-numbering", "hidden-state", "--out", outDir, "--quiet");
            Assert.True(r.ExitCode == 0, r.Stderr);
            var files = Directory.GetFiles(outDir).Select(Path.GetFileName).Order().ToArray();
            Assert.Equal(new[] { "grid.png", "hidden-00.png", "hidden-12.png", "manifest.json" }, files);
            var m = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
            Assert.Equal("hidden-state", m["layer_numbering"]!.GetValue<string>());
            Assert.Equal(12, m["num_layers"]!.GetValue<int>());
            Assert.Equal(new[] { 0, 12 }, m["layers"]!.AsArray().Select(x => x!.GetValue<int>()));
            Assert.Equal("hidden-00.png", m["files"]!["0"]!.GetValue<string>());
            Assert.Equal("hidden-12.png", m["files"]!["12"]!.GetValue<string>());
            Assert.Contains("embedding output", m["lens"]!.GetValue<string>());
            // lens judge scores lens-numbered folders only, and says so
            var e = Assert.Throws<LensException>(() => SweepImages.Find(outDir));
            Assert.Contains("hidden-state numbering", e.Message);
        }
        finally
        {
            if (Directory.Exists(outDir)) Directory.Delete(outDir, true);
        }
    }

    [Fact]
    public void CliLensNumberingIsTheDefault()
    {
        var outDir = CliRunner.TempPath("lensnum");
        try
        {
            var r = CliRunner.Run("sweep", "--model", Model("sd-tiny-12"), "--prompt", "a cat", "--steps", "1", "--layers", "11",
                "--out", outDir, "--quiet");
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.True(File.Exists(Path.Combine(outDir, "layer-11.png")));
            var m = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
            Assert.Equal("lens", m["layer_numbering"]!.GetValue<string>());
            Assert.Equal("layer-11.png", m["files"]!["11"]!.GetValue<string>());
        }
        finally
        {
            if (Directory.Exists(outDir)) Directory.Delete(outDir, true);
        }
    }

    [Theory]
    [InlineData("paper", "--layers", "0", "--layer-numbering must be lens or hidden-state (got 'paper')")]
    [InlineData("hidden-state", "--layers", "13", "in hidden-state numbering: hidden state 13 is out of range")]
    [InlineData("lens", "--layers", "12", "layer 12 is out of range")]
    public void CliRejectsBadValuesAsUsageErrors(string numbering, string opt, string value, string fragment)
    {
        var outDir = CliRunner.TempPath("badnum");
        var r = CliRunner.Run("sweep", "--model", Model("sd-tiny-12"), "--prompt", "p", opt, value, "--layer-numbering", numbering, "--out", outDir);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(fragment, r.Stderr);
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.False(Directory.Exists(outDir));
    }
}
