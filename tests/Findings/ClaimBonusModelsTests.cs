using System.Text.Json.Nodes;
using DiffusionLens.Cli.Commands;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// Claims on the tutorial's bonus models (issue #10): an "sdxl" and a "flux" claim run the whole audit end to end on the
/// tiny random-weight SDXL and FLUX pipelines with the tiny CLIP judge (the verdicts of random models mean nothing): the
/// sweep is the model's own pipeline with the tutorial's lens, and the judge scores every layer image.
/// </summary>
public class ClaimBonusModelsTests
{
    private static JsonNode ClaimsJson(string model, string folder, Action<JsonNode> edit)
    {
        var claims = JsonNode.Parse(File.ReadAllText(Repo.PathOf("fixtures", "claims", "tiny-claims.json")))!;
        var list = claims["claims"]!.AsArray();
        while (list.Count > 1) list.RemoveAt(1); // the SD claim, turned into this model's
        var c = list[0]!;
        c["id"] = $"tiny-{model}";
        c["model"] = model;
        c["model_name"] = $"fixtures/models/{folder}";
        c["model_dir"] = Repo.PathOf("fixtures", "models", folder);
        c["seeds"] = new JsonArray(1);
        c["layers"] = new JsonArray(0, 2);
        claims["defaults"]!["judge_dir"] = Repo.TinyClipDir;
        edit(c);
        return claims;
    }

    [Theory]
    [InlineData("sdxl", "sdxl-tiny", "StableDiffusionXLPipeline")]
    [InlineData("flux", "flux-tiny", "FluxPipeline")]
    public void Tiny_audit_runs_the_models_own_pipeline_and_judges_every_layer(string model, string folder, string pipeline)
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var path = tmp.Sub("claims.json");
        File.WriteAllText(path, ClaimsJson(model, folder, c =>
        {
            if (model == "flux") { c["steps"] = 1; c["guidance"] = 0.0; } // the tutorial's FLUX setting
            else c["guidance"] = 5.0;
        }).ToJsonString());
        var outDir = tmp.Sub("audit");
        int rc = new AuditCommand().Run(new[] { "--claims", path, "--out", outDir, "--fail-on", "none" });
        Assert.Equal(0, rc);
        var claim = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "audit.json")))!["claims"]![0]!;
        Assert.Contains(claim["verdict"]!.GetValue<string>(), new[] { "supported", "contradicted", "inconclusive" });
        var run = Assert.Single(claim["runs"]!.AsArray())!;
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, run["out_dir"]!.GetValue<string>(), "manifest.json")))!;
        Assert.Equal(pipeline, manifest["pipeline"]!.GetValue<string>());
        Assert.Equal(new[] { 0, 2 }, manifest["layers"]!.AsArray().Select(x => x!.GetValue<int>()));
        foreach (var l in new[] { "0", "2" })
            Assert.True(File.Exists(Path.Combine(outDir, run["layer_images"]![l]!.GetValue<string>())), $"layer {l} image");
    }
}
