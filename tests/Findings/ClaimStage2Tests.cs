using System.Text.Json.Nodes;
using DiffusionLens.Cli.Commands;
using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// A claim with a DeepFloyd IF stage II (the paper's IF-I-XL + IF-II-L setup): the stage2_* fields parse, are refused on
/// an SD claim or without a stage II folder, skip the claim naming the unset variable, key the runs by the stage II's
/// weights, and reach the sweep, whose stage II images the judge scores (end to end on if-tiny-b + if2-tiny with the
/// tiny CLIP judge; the verdicts of random models mean nothing).
/// </summary>
public class ClaimStage2Tests
{
    private const string UnsetEnv = "LENS_TEST_STAGE2_NEVER_SET";

    /// <summary>tiny-claims.json's IF claim on if-tiny-b (seed 1, layers 0 and 3) with the given stage II fields.</summary>
    private static JsonNode ClaimsJson(Action<JsonNode> edit, bool sdToo = false)
    {
        var claims = JsonNode.Parse(File.ReadAllText(Repo.PathOf("fixtures", "claims", "tiny-claims.json")))!;
        var list = claims["claims"]!.AsArray();
        if (!sdToo) list.RemoveAt(0); // the IF claim only
        var c = list[^1]!;
        c["model_dir"] = Repo.PathOf("fixtures", "models", "if-tiny-b");
        c.AsObject().Remove("variant");
        c["seeds"] = new JsonArray(1);
        c["layers"] = new JsonArray(0, 3);
        claims["defaults"]!["judge_dir"] = Repo.TinyClipDir;
        edit(c);
        return claims;
    }

    private static string Write(TempDir tmp, JsonNode claims)
    {
        var path = tmp.Sub("claims.json");
        File.WriteAllText(path, claims.ToJsonString());
        return path;
    }

    private static void WithStage2(JsonNode c)
    {
        c["stage2_model_name"] = "fixtures/models/if2-tiny";
        c["stage2_model_env"] = UnsetEnv;
        c["stage2_model_dir"] = Repo.PathOf("fixtures", "models", "if2-tiny");
        c["stage2_steps"] = 2;
        c["stage2_guidance"] = 5.0;
        c["stage2_noise_level"] = 300;
        c["seed_policy"] = "continue";
    }

    [Fact]
    public void Stage2_fields_parse_and_resolve_the_folder()
    {
        using var tmp = new TempDir();
        var file = ClaimsFile.Load(Write(tmp, ClaimsJson(WithStage2)));
        var c = Assert.Single(file.Claims);
        Assert.True(c.HasStage2);
        Assert.Equal(("fixtures/models/if2-tiny", UnsetEnv), (c.Stage2ModelName, c.Stage2ModelEnv));
        Assert.Equal((2, 5.0, 300), (c.Stage2Steps!.Value, c.Stage2Guidance!.Value, c.Stage2NoiseLevel!.Value));
        Assert.Equal((Repo.PathOf("fixtures", "models", "if2-tiny"), (string?)null), file.ResolveStage2Dir(c, _ => null));
        Assert.Null(c.Stage2Scheduler); // absent: the stage II folder's own, and no "stage2_scheduler" in the run key
        var key = JsonNode.Parse(RunKey.Inputs(c, "t", "h", null, "float32", "cpu", 1, "p", ["a", "b"], 1, "j", "h2"))!;
        Assert.Equal("h2", key["stage2_model_hash"]!.GetValue<string>());
        Assert.False(key.AsObject().ContainsKey("stage2_scheduler"));
        var elsewhere = tmp.Sub("other-stage2");
        Directory.CreateDirectory(elsewhere);
        Assert.Equal(elsewhere, file.ResolveStage2Dir(c, e => e == UnsetEnv ? elsewhere : null).Dir); // the variable first
        // a claim without the fields has no stage II
        var plain = ClaimsFile.Load(Write(tmp, ClaimsJson(_ => { })));
        Assert.False(plain.Claims[0].HasStage2);
        Assert.Equal(((string?)null, (string?)null), plain.ResolveStage2Dir(plain.Claims[0], _ => null));
    }

    public static TheoryData<string, string> BadStage2Claims() => new()
    {
        { "sd", "tiny-sd-first': stage2_model_env applies to a DeepFloyd IF stage II only (\"model\": \"if\"); this claim's model is 'sd'" },
        { "no-folder", "stage2_steps, stage2_noise_level need the stage II folder: stage2_model_env or stage2_model_dir" },
        { "steps", "stage2_steps must be positive" },
        { "noise", "stage2_noise_level must be at least 0" },
        { "scheduler", "stage2_scheduler: unknown scheduler 'dpm+'; accepted:" },
        { "scheduler-no-folder", "stage2_scheduler needs the stage II folder: stage2_model_env or stage2_model_dir" },
    };

    [Theory, MemberData(nameof(BadStage2Claims))]
    public void Bad_stage2_fields_are_errors_naming_the_claim(string what, string expected)
    {
        using var tmp = new TempDir();
        var json = ClaimsJson(c =>
        {
            switch (what)
            {
                case "no-folder": c["stage2_steps"] = 3; c["stage2_noise_level"] = 100; break;
                case "steps": WithStage2(c); c["stage2_steps"] = 0; break;
                case "noise": WithStage2(c); c["stage2_noise_level"] = -1; break;
                case "scheduler": WithStage2(c); c["stage2_scheduler"] = "dpm+"; break;
                case "scheduler-no-folder": c["stage2_scheduler"] = "dpm++"; break;
            }
        }, sdToo: what == "sd");
        if (what == "sd") json["claims"]![0]!["stage2_model_env"] = "LENS_IF_II_L_DIR";
        var e = Assert.Throws<LensException>(() => ClaimsFile.Load(Write(tmp, json)));
        Assert.Contains(expected, e.Message);
        Assert.Contains(what == "sd" ? "claim 'tiny-sd-first'" : "claim 'tiny-if-second'", e.Message);
    }

    [Fact]
    public void Unset_stage2_variable_skips_the_claim_with_the_reason()
    {
        using var tmp = new TempDir();
        var file = ClaimsFile.Load(Write(tmp, ClaimsJson(c => { WithStage2(c); c.AsObject().Remove("stage2_model_dir"); })));
        var plan = new AuditPlanner(file, new AuditOptions { OutDir = tmp.Sub("unused"), GetEnv = _ => null }, "cpu", null).Plan(file.Claims[0]);
        Assert.Equal($"{UnsetEnv} is not set (a diffusers folder of the stage II fixtures/models/if2-tiny)", plan.Skipped);
        Assert.Empty(plan.Runs);
    }

    [Fact]
    public void Paper_claims_have_the_if_xl_ii_l_setup()
    {
        var file = ClaimsFile.Load(Repo.PathOf("fixtures", "claims", "paper-claims.json"));
        var c = Assert.Single(file.Claims, c => c.HasStage2);
        Assert.Equal(("if", "LENS_IF_XL_DIR", "LENS_IF_II_L_DIR"), (c.Model, c.ModelEnv, c.Stage2ModelEnv));
        Assert.Equal(("DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0"), (c.ModelName, c.Stage2ModelName));
        Assert.Equal("DPMSolverMultistepScheduler", c.Scheduler);
        // the paper's code switched stage I's scheduler only: IF-II-L ran the DDPMScheduler it loads with
        Assert.Equal("DDPMScheduler", c.Stage2Scheduler);
        Assert.Equal(new long[] { 0, 1, 2, 3 }, c.Seeds);
        var plan = new AuditPlanner(file, new AuditOptions { OutDir = "unused", GetEnv = _ => null }, "cpu", null).Plan(c);
        Assert.Equal("LENS_IF_XL_DIR is not set (a diffusers folder of DeepFloyd/IF-I-XL-v1.0)", plan.Skipped);
    }

    /// <summary>
    /// lens audit runs the claim's sweeps with the stage II (continue policy, stage2_scheduler dpm++): every layer image
    /// the judge scored is the 48x48 stage II image beside its stage I image, the manifest records the stage II settings
    /// and scheduler, and the run key holds the stage II's weights hash and scheduler class.
    /// </summary>
    [Fact]
    public void Tiny_audit_with_a_stage2_judges_the_stage2_images()
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var outDir = tmp.Sub("audit");
        var claims = ClaimsJson(c => { WithStage2(c); c["stage2_scheduler"] = "dpm++"; });
        int rc = new AuditCommand().Run(new[] { "--claims", Write(tmp, claims), "--out", outDir, "--fail-on", "none" });
        Assert.Equal(0, rc);
        var audit = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "audit.json")))!;
        var claim = audit["claims"]![0]!;
        Assert.Contains(claim["verdict"]!.GetValue<string>(), new[] { "supported", "contradicted", "inconclusive" });
        var run = Assert.Single(claim["runs"]!.AsArray())!;
        var dir = Path.Combine(outDir, run["out_dir"]!.GetValue<string>());
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!;
        Assert.Equal("continue", manifest["seed_policy"]!.GetValue<string>());
        var s2 = manifest["stage2"]!;
        Assert.Equal(Repo.PathOf("fixtures", "models", "if2-tiny"), s2["model"]!.GetValue<string>());
        Assert.Equal((2, 5.0, 300), (s2["steps"]!.GetValue<int>(), s2["guidance"]!.GetValue<double>(), s2["noise_level"]!.GetValue<int>()));
        Assert.Equal("DPMSolverMultistepScheduler", s2["scheduler"]!.GetValue<string>());
        Assert.Equal("DDPMScheduler", manifest["scheduler"]!.GetValue<string>()); // the claim names no stage I scheduler
        foreach (var l in new[] { 0, 3 })
        {
            var judged = run["layer_images"]![l.ToString()]!.GetValue<string>();
            Assert.EndsWith($"layer-{l:D2}.png", judged);
            var image = DiffusionLens.Reports.RgbImage.Load(Path.Combine(outDir, judged));
            Assert.Equal((48, 48), (image.Width, image.Height)); // stage II's size (stage I: 24)
            Assert.True(File.Exists(Path.Combine(dir, $"layer-{l:D2}-stage1.png")));
        }
        var scores = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "scores.json")))!;
        Assert.NotNull(scores);
        var record = Directory.GetFiles(Path.Combine(outDir, "runs"), "*.json", SearchOption.AllDirectories).Single();
        var inputs = JsonNode.Parse(JsonNode.Parse(File.ReadAllText(record))!["inputs"]!.GetValue<string>())!;
        Assert.Equal(ModelHash.Of(Repo.PathOf("fixtures", "models", "if2-tiny"), null), inputs["stage2_model_hash"]!.GetValue<string>());
        Assert.Equal(300, inputs["stage2_noise_level"]!.GetValue<int>());
        Assert.Equal("DPMSolverMultistepScheduler", inputs["stage2_scheduler"]!.GetValue<string>());
    }
}
