using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using DiffusionLens.Reports;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>The `lens` commands end to end, as other tools and CI drive them.</summary>
public class CliTests
{
    [Fact]
    public void SweepOnTheEmbeddedModelWritesLayersGridAndManifest()
    {
        var outDir = CliRunner.TempPath("sweep");
        var r = CliRunner.Run("sweep", "--prompt", "A few people are in the ocean splashing around", "--steps", "3",
            "--layers", "0:12:5", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("step 3/4", r.Stderr); // progress: 3 PNDM steps are 4 UNet calls
        var files = Directory.GetFiles(outDir).Select(Path.GetFileName).OrderBy(f => f).ToArray();
        Assert.Equal(new[] { "grid.png", "layer-00.png", "layer-05.png", "layer-10.png", "manifest.json" }, files);
        var m = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
        Assert.Equal("A few people are in the ocean splashing around", m["prompt"]!.GetValue<string>());
        Assert.Equal(17, m["seed"]!.GetValue<long>());
        Assert.Equal(3, m["steps"]!.GetValue<int>());
        Assert.Equal(7.5, m["guidance"]!.GetValue<double>());
        Assert.Equal("PNDMScheduler", m["scheduler"]!.GetValue<string>());
        Assert.Equal(64, m["height"]!.GetValue<int>());
        Assert.Equal("float32", m["dtype"]!.GetValue<string>());
        Assert.Equal("cpu", m["device"]!.GetValue<string>());
        Assert.Equal(new[] { 0, 5, 10 }, m["layers"]!.AsArray().Select(x => x!.GetValue<int>()));
        Assert.Equal("layer-05.png", m["files"]!["5"]!.GetValue<string>());
        Assert.True(m["timings_s"]!["total"]!.GetValue<double>() > 0);
        var layer = RgbImage.Load(Path.Combine(outDir, "layer-05.png"));
        Assert.Equal((64, 64), (layer.Width, layer.Height));
        var grid = RgbImage.Load(Path.Combine(outDir, "grid.png"));
        Assert.True(grid.Width > 3 * 64 && grid.Height > 64);
        Directory.Delete(outDir, true);
    }

    [Fact]
    public void EncodeWritesEveryLayerAsDiffusersComputesIt()
    {
        var file = CliRunner.TempPath("enc") + ".safetensors";
        var model = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-b");
        var r = CliRunner.Run("encode", "--model", model, "--prompt", "A few people are in the ocean splashing around", "--out", file);
        Assert.True(r.ExitCode == 0, r.Stderr);
        var sf = new SafetensorsFile(file);
        using var reference = ReferenceData.Open("sd-tiny-b");
        Assert.Equal(new long[] { 1, 77 }, sf.Entries["input_ids"].Shape);
        Assert.Equal("I64", sf.Entries["input_ids"].DType);
        Assert.Equal(reference.ReadLongs("input_ids"), sf.Read("input_ids").data<long>().ToArray());
        for (int l = 0; l < 5; l++)
        foreach (var key in new[] { $"hidden.{l}", $"lens.{l}" })
        {
            Assert.Equal("F32", sf.Entries[key].DType);
            var (_, _, rel) = ReferenceData.Compare(sf.Read(key), reference.Read(key));
            Assert.True(rel <= 1e-5, $"{key}: rel L2 {rel:E2}");
        }
        Assert.False(sf.Entries.ContainsKey("hidden.5"));
        File.Delete(file);
    }

    [Fact]
    public void EncodeReadsOnlyTheTokenizerAndTextEncoder()
    {
        // the UNet's and VAE's weights are garbage: a load of either would fail, so encode must never read them
        var model = CliRunner.CopyModel("sd-tiny-b");
        var file = CliRunner.TempPath("enc-te-only") + ".safetensors";
        try
        {
            foreach (var c in new[] { "unet", "vae" })
                File.WriteAllBytes(Path.Combine(model, c, "diffusion_pytorch_model.safetensors"), Enumerable.Range(0, 4096).Select(i => (byte)(i * 37 + 11)).ToArray());
            var broken = CliRunner.Run("sweep", "--model", model, "--prompt", "a cat", "--steps", "1", "--layers", "0", "--out", CliRunner.TempPath("sweep-garbage"));
            Assert.NotEqual(0, broken.ExitCode); // the garbage does break a full pipeline load
            var r = CliRunner.Run("encode", "--model", model, "--prompt", "A few people are in the ocean splashing around", "--out", file);
            Assert.True(r.ExitCode == 0, r.Stderr);
            var sf = new SafetensorsFile(file);
            using var reference = ReferenceData.Open("sd-tiny-b");
            Assert.Equal(reference.ReadLongs("input_ids"), sf.Read("input_ids").data<long>().ToArray());
            for (int l = 0; l < 5; l++)
            foreach (var key in new[] { $"hidden.{l}", $"lens.{l}" })
            {
                var (_, _, rel) = ReferenceData.Compare(sf.Read(key), reference.Read(key));
                Assert.True(rel <= 1e-5, $"{key}: rel L2 {rel:E2}");
            }
            Assert.False(sf.Entries.ContainsKey("attention_mask"));
        }
        finally
        {
            Directory.Delete(model, true);
            if (File.Exists(file)) File.Delete(file);
        }
    }

    [Fact]
    public void TokenizePrintsThePipelinesIds()
    {
        using var reference = ReferenceData.Open("if-tiny-a");
        var model = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "if-tiny-a");
        var r = CliRunner.Run("tokenize", "--model", model, "--prompt", "A few people are in the ocean splashing around");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = JsonNode.Parse(r.Stdout)!;
        Assert.Equal(reference.ReadLongs("input_ids"), json["input_ids"]!.AsArray().Select(x => x!.GetValue<long>()));
        Assert.Equal(reference.ReadLongs("attention_mask"), json["attention_mask"]!.AsArray().Select(x => x!.GetValue<long>()));

        var sd = CliRunner.Run("tokenize", "--prompt", "a photo of a cat");
        var ids = JsonNode.Parse(sd.Stdout)!["input_ids"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();
        Assert.Equal(new long[] { 49406, 320, 1125, 539, 320, 2368, 49407, 49407 }, ids[..8]);
        Assert.Equal(77, ids.Length);
        Assert.Null(JsonNode.Parse(sd.Stdout)!["attention_mask"]);
    }
}
