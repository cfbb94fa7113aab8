using System.Security.Cryptography;
using DiffusionLens.Loading;
using DiffusionLens.Pipelines;
using DiffusionLens.Sweep;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>--variant as diffusers' variant=: the variant's files when asked, plain files otherwise, never a silent fallback.</summary>
public class WeightVariantTests
{
    private static string Fixture(string model, string component) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", model, component);

    [Fact]
    public void VariantPicksTheVariantShardsAndPlainPicksThePlainFile()
    {
        var dir = CliRunner.TempPath("variant-pick");
        Directory.CreateDirectory(dir);
        try
        {
            var src = Fixture("if-tiny-a", "text_encoder");
            foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            File.Copy(Path.Combine(Fixture("if-tiny-b", "text_encoder"), "model.safetensors"), Path.Combine(dir, "model.safetensors"));
            var fp16 = WeightSet.FromFolder(dir, "fp16");
            Assert.Equal(new[] { "model.fp16-00001-of-00002.safetensors", "model.fp16-00002-of-00002.safetensors" }, fp16.FilePaths.Select(Path.GetFileName));
            Assert.Equal(new[] { "model.safetensors" }, WeightSet.FromFolder(dir).FilePaths.Select(Path.GetFileName));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void MissingVariantFailsNamingTheFolderAndItsFiles()
    {
        var unet = Fixture("if-tiny-a", "unet");
        var e = Assert.Throws<LensException>(() => WeightSet.FromFolder(unet, "fp16"));
        Assert.Contains(unet, e.Message);
        Assert.Contains("'fp16'", e.Message);
        Assert.Contains("diffusion_pytorch_model.safetensors", e.Message);
    }

    [Fact]
    public void WithoutVariantOnlyVariantFilesFailSuggestingTheVariant()
    {
        var te = Fixture("if-tiny-a", "text_encoder");
        var e = Assert.Throws<LensException>(() => WeightSet.FromFolder(te));
        Assert.Contains("model.safetensors.index.fp16.json", e.Message);
        Assert.Contains("--variant fp16", e.Message);
        var cli = CliRunner.Run("encode", "--model", Path.GetDirectoryName(te)!, "--prompt", "a cat", "--out", CliRunner.TempPath("nofallback") + ".safetensors");
        Assert.Equal(2, cli.ExitCode);
        Assert.Contains("--variant fp16", cli.Stderr);
    }

    [Fact]
    public void PipelineVariantAbsentFromEveryComponentIsRefused()
    {
        var model = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-12");
        var e = Assert.Throws<LensException>(() => LensPipeline.Load(model, variant: "fp16"));
        Assert.Contains("no component", e.Message);
        Assert.Contains("diffusion_pytorch_model.safetensors", e.Message);
    }

    [Fact]
    public void ManifestRecordsVariantAndEachWeightFilesSha256()
    {
        var model = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "if-tiny-a");
        var outDir = CliRunner.TempPath("variant-manifest");
        try
        {
            var result = LensSweep.Run(new SweepOptions { ModelDir = model, Variant = "fp16", Prompt = "a cat", Steps = 1, Layers = "0", OutDir = outDir });
            var m = SweepManifest.FromJson(File.ReadAllText(result.ManifestPath));
            Assert.Equal("fp16", m.Variant);
            var expected = new[] { "text_encoder/model.fp16-00001-of-00002.safetensors", "text_encoder/model.fp16-00002-of-00002.safetensors", "unet/diffusion_pytorch_model.safetensors" };
            Assert.Equal(expected, m.WeightsSha256!.Keys);
            foreach (var k in expected)
                Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(model, k)))), m.WeightsSha256[k]);
        }
        finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
    }
}
