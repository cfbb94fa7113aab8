using System.Text.Json;
using DiffusionLens.Cli.Commands;
using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

/// <summary>Claims over a prompt set in the paper's CSV format, with synthetic annotation files in its format.</summary>
public class PromptSetAuditTests
{
    private static readonly (string Prompt, string Noun0, string Noun1)[] Prompts =
    {
        ("A few people are in the ocean, splashing around", "people", "ocean"),
        ("Many different colorful flowers are on a table.", "flowers", "table"),
        ("a white stove is next to a window", "stove", "window"),
        ("A rectangular shaped pizza is on a wooden board.", "pizza", "board"),
    };

    /// <summary>hidden-state indices of the synthetic annotations (index 0 has no lens layer; 13 is past a 12-layer encoder)</summary>
    private static readonly int[] Indices = { 0, 2, 4, 6, 8, 13 };

    /// <summary>The fake sweep: noun_0 present from layer 3, noun_1 from layer 6 (prompt 0's seed 2: the other way round).</summary>
    private static FakeSweepRunner Runner() => new()
    {
        LayerCount = 12,
        Curves = (prompt, seed, l) => prompt == Prompts[0].Prompt && seed == 2 ? (l >= 6 ? 0.9 : 0.1, l >= 3 ? 0.9 : 0.1) : (l >= 3 ? 0.9 : 0.1, l >= 6 ? 0.9 : 0.1),
    };

    private static string WriteClaims(TempDir tmp, string extra = "")
    {
        Directory.CreateDirectory(tmp.Sub("model"));
        Directory.CreateDirectory(tmp.Sub("paper", "prompts"));
        Directory.CreateDirectory(tmp.Sub("paper", "human_annotations"));
        PaperCsv.WritePrompts(tmp.Sub("paper", "prompts", "set - Sheet1.csv"), Prompts, "\r\n", bom: true);
        // annotators: noun_0 from index 4 (layer 3), noun_1 from index 8 (layer 7), for prompts 0-2 only; a blank cell at index 6
        var annotated = Prompts.Take(3).ToList();
        PaperCsv.WriteAnnotations(tmp.Sub("paper", "human_annotations", "set_IsFirstClass_sd_123.csv"), Indices,
            annotated.SelectMany(p => new long[] { 1, 2 }.Select(s => PaperCsv.Row(p.Prompt, s, Indices, 4, 6))));
        PaperCsv.WriteAnnotations(tmp.Sub("paper", "human_annotations", "set_IsSecondClass_sd_456.csv"), Indices,
            annotated.SelectMany(p => new long[] { 1, 2 }.Select(s => PaperCsv.Row(p.Prompt, s, Indices, 8))));
        var claims = $$"""
        {
          "format": "lens-claims/1",
          "defaults": { "analysis": { "metric": "prob", "threshold": 0.5, "rule": "stay", "min_fraction": 0.5 } },
          "claims": [
            {
              "id": "set-first", "title": "prompt set", "statement": "first noun first",
              "model": "sd", "model_dir": "model", "seeds": [1, 2], "expected_order": "first", "layers": "all",
              "prompt_set": {
                "file": "prompts/set - Sheet1.csv", "root_env": "LENS_TEST_PAPER",
                "annotations": { "first": "human_annotations/set_IsFirstClass_sd_*.csv", "second": "human_annotations/set_IsSecondClass_sd_*.csv" },
                "bootstrap": { "resamples": 300, "level": 0.9, "seed": 11 }{{extra}}
              }
            }
          ]
        }
        """;
        File.WriteAllText(tmp.Sub("claims.json"), claims);
        return tmp.Sub("claims.json");
    }

    private static AuditReport Run(TempDir tmp, FakeSweepRunner runner, string extra = "", string? paper = null) =>
        new Auditor(runner, new FakeJudge()).Run(ClaimsFile.Load(WriteClaims(tmp, extra)),
            new AuditOptions { OutDir = tmp.Sub("out"), GetEnv = n => n == "LENS_TEST_PAPER" ? paper ?? tmp.Sub("paper") : null });

    [Fact]
    public void Prompt_set_runs_every_prompt_with_its_nouns_and_counts_like_the_annotators()
    {
        using var tmp = new TempDir();
        var runner = Runner();
        var c = Run(tmp, runner).Claims.Single();
        Assert.Equal(Prompts.Length * 2, runner.Requests.Count);
        Assert.Equal(new[] { "noun_0", "noun_1" }, c.Concepts);
        Assert.Equal(Prompts.Select(p => p.Prompt), c.Prompts);
        Assert.All(c.Runs, r => Assert.Equal(Prompts.Single(p => p.Prompt == r.Prompt) is var p ? new[] { p.Noun0, p.Noun1 } : null, r.Concepts));
        var ps = c.PromptSet!;
        Assert.Equal((7, 1, 0, 0, 8), (ps.Judge.FirstBeforeSecond, ps.Judge.SecondBeforeFirst, ps.Judge.Ties, ps.Judge.Neither, ps.Judge.Pairs));
        Assert.Equal(Verdict.Supported, c.Verdict);
        Assert.Equal((300, 0.9, 11UL, 4), (ps.JudgeBootstrap.Resamples, ps.JudgeBootstrap.Level, ps.JudgeBootstrap.Seed, ps.JudgeBootstrap.Prompts));
        Assert.InRange(7 / 8.0, ps.JudgeBootstrap.FirstBeforeSecond.Low, ps.JudgeBootstrap.FirstBeforeSecond.High);
        Assert.True(ps.JudgeBootstrap.FirstBeforeSecond.Low < 7 / 8.0); // one prompt has a reversed seed: resampling moves it
        // the annotators: prompts 0-2 with seeds 1 and 2, first noun from index 4, second from 8
        Assert.Equal((6, 0, 0, 0, 6), (ps.Human!.FirstBeforeSecond, ps.Human.SecondBeforeFirst, ps.Human.Ties, ps.Human.Neither, ps.Human.Pairs));

        var a = ps.Agreement!;
        Assert.Equal(2, a.RunsWithoutAnnotations); // prompt 3's two seeds
        // per row: index 0 (no lens layer) and 13 (past layer 11) have no image: 2 per row and noun, 6 rows, 2 nouns
        Assert.Equal(2 * 6 * 2, a.CellsWithoutLayer);
        // cells at indices 2,4,6,8 (layers 1,3,5,7); the first file leaves index 6 blank
        Assert.Equal(6 * 3 + 6 * 4, a.Cells);
        // noun_0: judge present from layer 3 = index 4 = annotators' start, except prompt 0 seed 2 (from layer 6): index 4 disagrees there
        var n0 = a.Groups.Single(g => g.Position == "noun_0").Confusion;
        Assert.Equal((5 * 2 + 1, 0, 1, 6), (n0.BothPresent, n0.JudgeOnly, n0.HumanOnly, n0.BothAbsent));
        // noun_1: judge from layer 6 (index 7), annotators from index 8: layer 7 (index 8) agrees, so all agree but prompt 0 seed 2 (judge from layer 3)
        var n1 = a.Groups.Single(g => g.Position == "noun_1").Confusion;
        Assert.Equal((6, 2, 0, 16), (n1.BothPresent, n1.JudgeOnly, n1.HumanOnly, n1.BothAbsent));
        Assert.Equal(a.Groups.Single(g => g.Position == "all").Confusion, n0 + n1);
        Assert.Contains("i - 1", a.LayerMapping);
        Assert.NotNull(a.BestThreshold);
        Assert.Equal(3, a.FitPrompts.Count + a.HeldOutPrompts.Count);

        var html = File.ReadAllText(tmp.Sub("out", "report.html"));
        Assert.Contains("Agreement with the annotators", html);
        Assert.Contains("agreement with the annotators over the threshold", html); // the chart (an inline SVG)
        Assert.Contains("300 resamples", html);
        using var doc = JsonDocument.Parse(File.ReadAllText(tmp.Sub("out", "audit.json")));
        var jps = doc.RootElement.GetProperty("claims")[0].GetProperty("prompt_set");
        Assert.Equal(7, jps.GetProperty("judge").GetProperty("first_before_second").GetInt32());
        Assert.Equal(300, jps.GetProperty("judge_bootstrap").GetProperty("resamples").GetInt32());
    }

    [Fact]
    public void Annotated_only_and_max_prompts_limit_the_set_and_an_unset_root_skips_the_claim()
    {
        using var tmp = new TempDir();
        var runner = Runner();
        var c = Run(tmp, runner, ", \"annotated_only\": true, \"max_prompts\": 2").Claims.Single();
        Assert.Equal(Prompts.Take(2).Select(p => p.Prompt), c.Prompts);
        Assert.Equal(4, runner.Requests.Count);

        using var tmp2 = new TempDir();
        var skipped = new Auditor(Runner(), new FakeJudge()).Run(ClaimsFile.Load(WriteClaims(tmp2)), new AuditOptions { OutDir = tmp2.Sub("out"), GetEnv = _ => null });
        Assert.Equal(Verdict.Skipped, skipped.Claims[0].Verdict);
        Assert.Contains("LENS_TEST_PAPER is not set", skipped.Claims[0].VerdictReason);
    }

    [Fact]
    public void Claims_with_a_prompt_set_are_validated()
    {
        using var tmp = new TempDir();
        var path = WriteClaims(tmp);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"seeds\": [1, 2],", "\"seeds\": [1, 2], \"prompts\": [\"p\"],"));
        Assert.Contains("drop prompts and concepts", Assert.Throws<LensException>(() => ClaimsFile.Load(path)).Message);
        File.WriteAllText(path, File.ReadAllText(WriteClaims(tmp)).Replace("\"resamples\": 300", "\"resamples\": 0"));
        Assert.Contains("resamples", Assert.Throws<LensException>(() => ClaimsFile.Load(path)).Message);
        File.Delete(tmp.Sub("paper", "human_annotations", "set_IsSecondClass_sd_456.csv"));
        WriteClaims(tmp);
        File.Copy(tmp.Sub("paper", "human_annotations", "set_IsSecondClass_sd_456.csv"), tmp.Sub("paper", "human_annotations", "set_IsSecondClass_sd_789.csv"));
        Assert.Contains("matches 2 files", Assert.Throws<LensException>(() => Run(tmp, Runner())).Message);
    }

    [Fact]
    public void Tiny_models_run_a_prompt_set_with_the_tiny_clip_judge()
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var claims = WriteClaims(tmp);
        var text = File.ReadAllText(claims).Replace("\"model_dir\": \"model\"", $"\"model_dir\": {JsonSerializer.Serialize(Repo.PathOf("fixtures", "models", "sd-tiny-12"))}, \"steps\": 2")
            .Replace("\"seeds\": [1, 2]", "\"seeds\": [1]");
        File.WriteAllText(claims, text);
        Environment.SetEnvironmentVariable("LENS_TEST_PAPER", tmp.Sub("paper"));
        try
        {
            Assert.Equal(0, new AuditCommand().Run(new[] { "--claims", claims, "--out", tmp.Sub("out"), "--clip", Repo.TinyClipDir, "--fail-on", "none" }));
        }
        finally { Environment.SetEnvironmentVariable("LENS_TEST_PAPER", null); }
        var c = AuditReport.Load(tmp.Sub("out", "audit.json")).Claims.Single();
        Assert.Equal(Prompts.Length, c.Runs.Count);
        Assert.All(c.Runs, r => Assert.Null(r.Error));
        Assert.Equal(Prompts.Length, c.PromptSet!.Judge.Pairs);
        Assert.Equal(3, c.PromptSet.Human!.Pairs);
        Assert.Equal(3 * 3 + 3 * 4, c.PromptSet.Agreement!.Cells);
        Assert.Equal(64, c.ModelHash!.Length); // the real runner hashes the weights
    }
}
