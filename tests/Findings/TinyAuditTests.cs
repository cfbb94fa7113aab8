using System.Text.Json.Nodes;
using DiffusionLens.Cli.Commands;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// `lens audit` end to end on the embedded tiny models with the real sweep and the tiny ONNX CLIP judge
/// (fixtures/claims/tiny-claims.json): files, report and verdict fields. The verdicts of random models mean nothing.
/// </summary>
public class TinyAuditTests
{
    [Fact]
    public void Tiny_claims_audit_writes_verdicts_scores_and_report()
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var outDir = tmp.Sub("audit");
        int rc = new AuditCommand().Run(new[] { "--claims", Repo.PathOf("fixtures", "claims", "tiny-claims.json"), "--out", outDir, "--fail-on", "none" }); // random models: any verdict
        Assert.Equal(0, rc);
        Assert.Empty(Directory.GetDirectories(tmp.Path, ".audit.partial-*"));

        var audit = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "audit.json")))!;
        var claims = audit["claims"]!.AsArray();
        Assert.Equal(new[] { "tiny-sd-first", "tiny-if-second" }, claims.Select(c => c!["id"]!.GetValue<string>()));
        foreach (var claim in claims)
        {
            Assert.Contains(claim!["verdict"]!.GetValue<string>(), new[] { "supported", "contradicted", "inconclusive" });
            var runs = claim["runs"]!.AsArray();
            Assert.Equal(2, runs.Count); // seeds 1 and 2
            int layers = claim["id"]!.GetValue<string>() == "tiny-sd-first" ? 12 : 24;
            foreach (var run in runs)
            {
                var dir = Path.Combine(outDir, run!["out_dir"]!.GetValue<string>());
                Assert.Equal(layers, Directory.GetFiles(dir, "layer-*.png").Length);
                Assert.True(File.Exists(Path.Combine(dir, "grid.png")));
                Assert.True(File.Exists(Path.Combine(dir, "scores.json")));
                Assert.True(File.Exists(Path.Combine(dir, "scores.svg")));
                var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!;
                Assert.Equal(run["seed"]!.GetValue<long>(), manifest["seed"]!.GetValue<long>());
            }
        }
        var html = File.ReadAllText(Path.Combine(outDir, "report.html"));
        Assert.Contains("tiny-sd-first", html);
        Assert.Contains("<svg", html);
        Assert.Contains("data:image/png;base64,", html);
    }
}

/// <summary>Issue #9 on the tiny models themselves (real sweeps and the tiny ONNX CLIP judge, through the command):
/// two shards merged give the unsharded audit.</summary>
public class TinyShardMergeTests
{
    [Fact]
    public void Two_tiny_model_shards_merged_equal_the_unsharded_audit()
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var claims = Repo.PathOf("fixtures", "claims", "tiny-claims.json");
        Assert.Equal(0, new AuditCommand().Run(new[] { "--claims", claims, "--out", tmp.Sub("whole"), "--fail-on", "none" }));
        Assert.Equal(0, new AuditCommand().Run(new[] { "--claims", claims, "--out", tmp.Sub("s0"), "--shard", "0/2", "--fail-on", "none" }));
        Assert.Equal(0, new AuditCommand().Run(new[] { "--claims", claims, "--out", tmp.Sub("s1"), "--shard", "1/2", "--fail-on", "none" }));
        Assert.Equal(0, new AuditCommand().Run(new[] { "merge", tmp.Sub("s1"), tmp.Sub("s0"), "--out", tmp.Sub("merged"), "--fail-on", "none" }));
        Assert.Equal(ShardTests.Comparable(tmp.Sub("whole", "audit.json")), ShardTests.Comparable(tmp.Sub("merged", "audit.json")));
    }
}
