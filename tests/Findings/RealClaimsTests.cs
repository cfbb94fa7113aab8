using DiffusionLens.Findings;
using DiffusionLens.Judge;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// The paper's claims on the real models (SD 1.5, IF-I-L) with a real CLIP judge. Runs only when LENS_SD15_DIR and/or
/// LENS_IFIL_DIR, and LENS_CLIP_DIR, name folders, a CUDA GPU is visible to TorchSharp, and the sweep adapter and CLIP
/// tokenizer are part of the build; otherwise skipped with the reason. It checks that every claim with a model ran
/// and reached a verdict (the verdict itself is the finding, written to audit.json and report.html).
/// </summary>
public class RealClaimsTests
{
    [Fact]
    public void Paper_claims_on_the_real_models()
    {
        var claims = ClaimsFile.Load(Repo.PathOf("fixtures", "claims", "paper-claims.json"));
        var envs = claims.Claims.Select(c => c.ModelEnv!).Distinct().ToList();
        var present = envs.Where(e => Directory.Exists(Environment.GetEnvironmentVariable(e) ?? "")).ToList();
        if (present.Count == 0) Assert.Skip($"none of {string.Join(", ", envs)} names a model folder");
        var clip = Environment.GetEnvironmentVariable(claims.Defaults.JudgeEnv);
        if (string.IsNullOrEmpty(clip) || !File.Exists(Path.Combine(clip, "judge.json")))
            Assert.Skip($"{claims.Defaults.JudgeEnv} does not name a CLIP judge folder (make one with fixtures/export_clip_onnx.py)");
        bool gpu;
        try { gpu = TorchSharp.torch.cuda.is_available(); } catch (Exception) { gpu = false; }
        if (!gpu) Assert.Skip("no CUDA GPU visible to TorchSharp");
        var runner = Discovery.SweepRunner();
        if (runner is null) Assert.Skip("no ISweepRunner implementation with a parameterless constructor in the build");
        var tokenizer = Discovery.ClipTokenizer();
        if (tokenizer is null) Assert.Skip("no ClipTokenizer in the build");

        var outDir = Path.Combine(Path.GetTempPath(), "lens-real-claims-" + DateTime.UtcNow.ToString("yyyyMMdd-HHmmss"));
        using var judge = ClipJudge.Load(clip, tokenizer(JudgeConfig.Load(clip).TokenizerFolder), ClipJudge.AvailableProviders().Contains("CUDAExecutionProvider") ? "cuda" : "cpu");
        var report = new Auditor(runner, judge).Run(claims, new AuditOptions
        {
            OutDir = outDir,
            Device = "cuda",
            Log = m => TestContext.Current.SendDiagnosticMessage(m),
        });
        foreach (var c in report.Claims)
        {
            TestContext.Current.SendDiagnosticMessage($"{c.Id}: {c.Verdict} ({c.Counts}) {c.VerdictReason}");
            if (c.Verdict == Verdict.Skipped) continue;
            Assert.True(c.Verdict != Verdict.Error, $"{c.Id}: {c.VerdictReason}");
            Assert.Equal(c.Seeds.Count * c.Prompts.Count, c.Runs.Count);
        }
        Assert.Contains(report.Claims, c => c.Verdict != Verdict.Skipped);
        Assert.True(File.Exists(Path.Combine(outDir, "report.html")));
    }
}
