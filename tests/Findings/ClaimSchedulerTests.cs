using System.Text.Json.Nodes;
using DiffusionLens.Cli.Commands;

namespace DiffusionLens.Tests.Findings;

/// <summary>A claim's <c>scheduler</c> and <c>seed_policy</c> (the paper's DPM-Solver++ and its original generator use)
/// reach every sweep of the audit, and an unknown scheduler in a claim is an input error before anything runs.</summary>
public class ClaimSchedulerTests
{
    private static string ClaimsWith(TempDir tmp, string scheduler, string seedPolicy)
    {
        var claims = JsonNode.Parse(File.ReadAllText(Repo.PathOf("fixtures", "claims", "tiny-claims.json")))!;
        var list = claims["claims"]!.AsArray();
        list.RemoveAt(1); // the SD claim only
        var c = list[0]!;
        c["scheduler"] = scheduler;
        c["seed_policy"] = seedPolicy;
        c["seeds"] = new JsonArray(3);
        c["layers"] = new JsonArray(0, 11);
        claims["defaults"]!["judge_dir"] = Repo.TinyClipDir;
        c["model_dir"] = Repo.PathOf("fixtures", "models", "sd-tiny-12");
        var path = tmp.Sub("claims.json");
        File.WriteAllText(path, claims.ToJsonString());
        return path;
    }

    [Fact]
    public void Claim_scheduler_and_seed_policy_reach_the_sweep()
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var outDir = tmp.Sub("audit");
        int rc = new AuditCommand().Run(new[] { "--claims", ClaimsWith(tmp, "dpm++", "continue"), "--out", outDir, "--fail-on", "none" });
        Assert.Equal(0, rc);
        var audit = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "audit.json")))!;
        var run = audit["claims"]![0]!["runs"]![0]!;
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, run["out_dir"]!.GetValue<string>(), "manifest.json")))!;
        Assert.Equal("DPMSolverMultistepScheduler", manifest["scheduler"]!.GetValue<string>());
        Assert.Equal("continue", manifest["seed_policy"]!.GetValue<string>());
    }

    [Fact]
    public void Unknown_scheduler_in_a_claim_is_an_input_error() // a LensException: the CLI's exit code 2
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var outDir = tmp.Sub("audit");
        var claims = ClaimsWith(tmp, "euler-ancestral-x", "reseed");
        var e = Assert.Throws<LensException>(() => new AuditCommand().Run(new[] { "--claims", claims, "--out", outDir }));
        Assert.Contains("scheduler", e.Message);
        Assert.Contains("euler-ancestral-x", e.Message);
        Assert.False(Directory.Exists(outDir));
    }
}
