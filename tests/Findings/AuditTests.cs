using System.Text.Json;
using DiffusionLens.Cli.Commands;
using DiffusionLens.Findings;
using DiffusionLens.Judge;

namespace DiffusionLens.Tests.Findings;

public class AuditTests
{
    internal const string Evil = "people <script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned2'\"> & ocean";

    /// <summary>A claims file in a temp folder whose model_dir exists (the fake runner ignores it).</summary>
    internal static string WriteClaims(TempDir tmp, string prompt = "A few people are in the ocean splashing around", string extraClaims = "")
    {
        Directory.CreateDirectory(tmp.Sub("model"));
        var claims = $$"""
        {
          "format": "lens-claims/1",
          "description": "test <b>claims</b>",
          "defaults": { "analysis": { "metric": "prob", "threshold": 0.5, "rule": "stay", "min_fraction": 0.5 } },
          "sources": { "annotations": { "title": "annotations <i>source</i>" } },
          "claims": [
            {
              "id": "fake-first", "title": "fake SD <u>title</u>", "statement": "people first",
              "model": "sd", "model_dir": "model",
              "prompts": [{{JsonSerializer.Serialize(prompt)}}],
              "concepts": ["people", "ocean"], "seeds": [1, 2, 3, 4], "expected_order": "first",
              "layers": "all", "steps": 2, "guidance": 7.5,
              "published": [ { "kind": "order_counts", "source": "annotations", "model": "SD 2.1", "first_before_second": 68, "second_before_first": 39, "seeds_per_prompt": 4 } ]
            },
            {
              "id": "fake-if", "title": "fake IF", "statement": "ocean first",
              "model": "if", "model_dir": "model",
              "prompts": ["two prompts", "second prompt"],
              "concepts": ["people", "ocean"], "distractors": ["noise"], "seeds": [5], "expected_order": "second",
              "layers": { "from": 0, "to": 10, "step": 2 }
            },
            {
              "id": "fake-missing", "title": "no model", "statement": "skipped",
              "model": "if", "model_env": "LENS_TEST_SURELY_UNSET_DIR",
              "prompts": ["p"], "concepts": ["people", "ocean"], "seeds": [1], "expected_order": "second"
            }{{extraClaims}}
          ]
        }
        """;
        var path = tmp.Sub("claims.json");
        File.WriteAllText(path, claims);
        return path;
    }

    /// <summary>Seeds 1-3: people at layer 3, ocean at 6; seed 4 reversed. IF prompts: ocean from 2, people from 8.</summary>
    internal static FakeSweepRunner Runner() => new()
    {
        LayerCount = 12,
        Curves = (prompt, seed, l) => seed switch
        {
            5 => (l >= 8 ? 0.9 : 0.1, l >= 2 ? 0.8 : 0.2),
            4 => (l >= 6 ? 0.9 : 0.2, l >= 3 ? 0.7 : 0.1),
            _ => (l >= 3 ? 0.9 : 0.2, l >= 6 ? 0.7 : 0.1),
        },
    };

    internal static AuditReport RunFake(TempDir tmp, string prompt = "A few people are in the ocean splashing around", FakeSweepRunner? runner = null)
    {
        var claims = ClaimsFile.Load(WriteClaims(tmp, prompt));
        return new Auditor(runner ?? Runner(), new FakeJudge()).Run(claims, new AuditOptions { OutDir = tmp.Sub("out"), GetEnv = _ => null });
    }

    [Fact]
    public void Audit_runs_every_claim_prompt_and_seed_and_writes_the_verdicts()
    {
        using var tmp = new TempDir();
        var runner = Runner();
        var report = RunFake(tmp, runner: runner);
        Assert.Equal(4 + 2, runner.Requests.Count);
        Assert.All(runner.Requests, r => Assert.Equal(Path.GetFullPath(tmp.Sub("model")), r.ModelDir));
        Assert.Equal(new[] { 0, 2, 4, 6, 8, 10 }, runner.Requests.Last().Layers);
        Assert.Null(runner.Requests[0].Layers);
        Assert.Equal(2, runner.Requests[0].Steps);

        var sd = report.Claims.Single(c => c.Id == "fake-first");
        Assert.Equal((3, 1, 0, 0), (sd.Counts.First, sd.Counts.Second, sd.Counts.Simultaneous, sd.Counts.Neither));
        Assert.Equal(Verdict.Supported, sd.Verdict);
        Assert.Equal(3, sd.Runs[0].Emergence["people"]);
        Assert.Equal(6, sd.Runs[0].Emergence["ocean"]);
        Assert.Equal(ConceptOrder.Second, sd.Runs[3].Order);
        var people = sd.EmergenceSummary.Single(e => e.Concept == "people");
        Assert.Equal((4, 4, 3, 6), (people.Runs, people.Emerged, people.MinLayer!.Value, people.MaxLayer!.Value));
        Assert.Equal(3.75, people.MeanLayer!.Value, 9);

        var fl = report.Claims.Single(c => c.Id == "fake-if");
        Assert.Equal(2, fl.Runs.Count);
        Assert.All(fl.Runs, r => Assert.Equal(ConceptOrder.Second, r.Order));
        Assert.All(fl.Runs, r => Assert.Equal((8, 2), (r.Emergence["people"]!.Value, r.Emergence["ocean"]!.Value)));
        Assert.Equal(Verdict.Supported, fl.Verdict);
        Assert.Equal(new[] { "people", "ocean", "noise" }, fl.Runs[0].Scores!.Labels);

        var skipped = report.Claims.Single(c => c.Id == "fake-missing");
        Assert.Equal(Verdict.Skipped, skipped.Verdict);
        Assert.Contains("LENS_TEST_SURELY_UNSET_DIR", skipped.VerdictReason);
        Assert.Empty(skipped.Runs);
    }

    [Fact]
    public void Audit_files_are_written_and_audit_json_round_trips()
    {
        using var tmp = new TempDir();
        RunFake(tmp);
        var outDir = tmp.Sub("out");
        Assert.True(File.Exists(Path.Combine(outDir, "report.html")));
        var report = AuditReport.Load(Path.Combine(outDir, "audit.json"));
        Assert.Equal("lens-audit/1", report.Format);
        var sd = report.Claims.Single(c => c.Id == "fake-first");
        Assert.Equal(Verdict.Supported, sd.Verdict);
        Assert.Equal(ConceptOrder.First, sd.ExpectedOrder);
        Assert.Equal(0.5, sd.Analysis.Threshold);
        Assert.Contains(sd.Published, p => p.FirstBeforeSecond == 68);
        foreach (var run in sd.Runs)
        {
            Assert.Equal(12, run.LayerImages.Count);
            Assert.All(run.LayerImages.Values, rel => Assert.True(File.Exists(Path.Combine(outDir, rel)), rel));
            Assert.True(File.Exists(Path.Combine(outDir, run.ScoresFile!)));
            Assert.True(File.Exists(Path.Combine(outDir, run.OutDir, "scores.svg")));
            Assert.StartsWith("fake-first", run.OutDir);
        }
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "audit.json")));
        var c0 = doc.RootElement.GetProperty("claims")[0];
        Assert.Equal("supported", c0.GetProperty("verdict").GetString());
        Assert.Equal("first", c0.GetProperty("expected_order").GetString());
        Assert.Equal(3, c0.GetProperty("counts").GetProperty("first").GetInt32());
        Assert.Equal("stay", c0.GetProperty("analysis").GetProperty("rule").GetString());
    }

    [Fact]
    public void Seeds_and_only_options_override_the_claims()
    {
        using var tmp = new TempDir();
        var runner = Runner();
        var claims = ClaimsFile.Load(WriteClaims(tmp));
        var report = new Auditor(runner, new FakeJudge()).Run(claims, new AuditOptions { OutDir = tmp.Sub("out"), Seeds = new long[] { 4, 9 }, Only = new[] { "fake-first" }, GetEnv = _ => null });
        Assert.Single(report.Claims);
        Assert.Equal(new long[] { 4, 9 }, runner.Requests.Select(r => r.Seed));
        Assert.Equal(Verdict.Inconclusive, report.Claims[0].Verdict); // 1 first, 1 second
        Assert.Throws<LensException>(() => new Auditor(runner, new FakeJudge()).Run(claims, new AuditOptions { OutDir = tmp.Sub("o2"), Only = new[] { "nope" } }));
    }

    [Fact]
    public void A_failing_sweep_is_recorded_and_the_claim_is_an_error()
    {
        using var tmp = new TempDir();
        var runner = new FakeSweepRunner { FailWhen = r => r.Seed == 2, Curves = Runner().Curves };
        var report = RunFake(tmp, runner: runner);
        var sd = report.Claims.Single(c => c.Id == "fake-first");
        Assert.Equal(Verdict.Error, sd.Verdict);
        Assert.Contains("fake sweep failure", sd.VerdictReason);
        Assert.Equal(3, sd.Counts.Total);
        Assert.Contains("run failed", File.ReadAllText(tmp.Sub("out", "report.html")));
    }

    [Fact]
    public void Report_escapes_user_text_and_is_self_contained()
    {
        using var tmp = new TempDir();
        RunFake(tmp, Evil);
        var html = File.ReadAllText(tmp.Sub("out", "report.html"));
        Assert.DoesNotContain("<script", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<img src=x", html);
        Assert.Contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;", html);
        Assert.Contains("fake SD &lt;u&gt;title&lt;/u&gt;", html);
        Assert.Contains("Content-Security-Policy", html);
        Assert.DoesNotContain("src=\"http", html);
        Assert.DoesNotContain("href=\"http", html);
        Assert.Equal(4 * 12 + 2 * 6, System.Text.RegularExpressions.Regex.Matches(html, "<img src=\"data:image/png;base64,").Count);
    }

    [Fact]
    public void Audit_command_with_the_tiny_clip_judge()
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var claims = WriteClaims(tmp);
        var cmd = new AuditCommand(_ => Runner(), _ => JudgeCommandTests.HashTokenizer());
        int rc = cmd.Run(new[] { "--claims", claims, "--out", tmp.Sub("out"), "--clip", Repo.TinyClipDir, "--seeds", "1,4", "--only", "fake-first,fake-if", "--fail-on", "none" });
        Assert.Equal(0, rc);
        var report = AuditReport.Load(tmp.Sub("out", "audit.json"));
        Assert.Equal(2, report.Claims.Count);
        Assert.All(report.Claims, c => Assert.Contains(c.Verdict, new[] { Verdict.Supported, Verdict.Contradicted, Verdict.Inconclusive }));
        Assert.All(report.Claims.SelectMany(c => c.Runs), r => Assert.All(r.Scores!.Layers, l => Assert.Equal(1.0, l.Prob.Sum(), 9)));
        Assert.Equal(Path.GetFullPath(Repo.TinyClipDir), report.Judge!.Folder);
        Assert.Contains("tiny random", report.Judge.Source);
    }

    [Fact]
    public void Audit_command_rejects_bad_options()
    {
        using var tmp = new TempDir();
        var claims = WriteClaims(tmp);
        var cmd = new AuditCommand(_ => Runner(), _ => JudgeCommandTests.HashTokenizer());
        Assert.Contains("--seeds", Assert.Throws<LensException>(() => cmd.Run(new[] { "--claims", claims, "--out", tmp.Sub("o"), "--seeds", "1,x", "--clip", tmp.Path })).Message);
        Assert.Contains("--out", Assert.Throws<LensException>(() => cmd.Run(new[] { "--claims", claims })).Message);
        Assert.Contains("not found", Assert.Throws<LensException>(() => cmd.Run(new[] { "--claims", tmp.Sub("none.json"), "--out", tmp.Sub("o") })).Message);
    }
}
