using DiffusionLens.Judge;

namespace DiffusionLens.Findings;

/// <summary>Builds the audit (claim results, counts, verdicts, prompt-set analysis) from a plan and its run records.</summary>
internal static class AuditAssembler
{
    public static AuditReport Report(ClaimsFile file, IReadOnlyList<ClaimPlan> plans, IReadOnlyDictionary<string, RunRecord> records,
        JudgeInfo? judge, string device) => new()
    {
        ClaimsFile = Path.GetFullPath(file.Path.Length > 0 ? file.Path : "."),
        ClaimsDescription = file.Description,
        Sources = file.Sources,
        Created = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
        Judge = judge,
        Device = device,
        Claims = plans.Select(p => Claim(file, file.Claims.Single(c => c.Id == p.Id), p, records)).ToList(),
    };

    /// <summary>Per concept, the emergence layer on the scores under the claim's analysis.</summary>
    public static Dictionary<string, int?> EmergenceOf(JudgeScores scores, IReadOnlyList<string> concepts, AnalysisOptions analysis) =>
        concepts.ToDictionary(c => c, c => Emergence.Layer(scores.LayerNumbers, scores.Curve(c, analysis.Metric == PresenceMetric.Cosine), analysis));

    public static readonly IReadOnlyList<string> PromptSetConcepts = new[] { "noun_0", "noun_1" };

    public static ClaimResult Claim(ClaimsFile file, Claim claim, ClaimPlan plan, IReadOnlyDictionary<string, RunRecord> records)
    {
        var analysis = file.AnalysisFor(claim);
        var concepts = claim.PromptSet is null ? claim.Concepts : PromptSetConcepts;
        var baseResult = new ClaimResult
        {
            Id = claim.Id,
            Title = claim.Title,
            Statement = claim.Statement,
            Model = claim.Model,
            ModelName = claim.ModelName,
            Prompts = plan.PromptSet is { } set ? set.Prompts.Select(p => p.Prompt).ToList() : claim.Prompts,
            Concepts = concepts,
            Distractors = claim.Distractors,
            Template = file.TemplateFor(claim),
            Seeds = plan.Seeds,
            Layers = claim.Layers,
            Steps = claim.Steps,
            Guidance = claim.Guidance,
            ExpectedOrder = claim.ExpectedOrder,
            Analysis = analysis,
            Published = claim.Published,
            Note = claim.Note,
            ModelHash = plan.ModelHash,
        };
        if (plan.Skipped is { } why) return baseResult with { Verdict = Verdict.Skipped, VerdictReason = why };

        var runs = plan.Runs.Select(r => RunOf(r, records, analysis)).ToList();
        var ok = runs.Where(r => r.Error is null).ToList();
        var counts = OrderCounts.From(ok.Select(r => r.Order!.Value));
        var summary = concepts.Select((c, i) =>
        {
            var layers = ok.Select(r => (r.Concepts ?? concepts) is var names && r.Emergence.TryGetValue(names[i], out var l) ? l : null)
                .Where(l => l is not null).Select(l => l!.Value).ToList();
            return new EmergenceSummary
            {
                Concept = c,
                Runs = ok.Count,
                Emerged = layers.Count,
                MeanLayer = layers.Count > 0 ? layers.Average() : null,
                MinLayer = layers.Count > 0 ? layers.Min() : null,
                MaxLayer = layers.Count > 0 ? layers.Max() : null,
            };
        }).ToList();
        Verdict verdict;
        string reason;
        var failed = runs.Where(r => r.Error is not null).ToList();
        if (failed.Count > 0)
        {
            verdict = Verdict.Error;
            reason = $"{failed.Count}/{runs.Count} runs failed; first: {failed[0].Error}";
        }
        else (verdict, reason) = Emergence.Judge(counts, claim.ExpectedOrder, analysis.MinFraction);
        var result = baseResult with
        {
            ModelDir = plan.ModelDir,
            Runs = runs,
            Counts = counts,
            EmergenceSummary = summary,
            Verdict = verdict,
            VerdictReason = reason,
        };
        return claim.PromptSet is { } spec && plan.PromptSet is not null ? result with { PromptSet = PromptSetAnalysis.Analyse(result, plan, spec) } : result;
    }

    private static RunResult RunOf(PlannedRun r, IReadOnlyDictionary<string, RunRecord> records, AnalysisOptions analysis)
    {
        if (!records.TryGetValue(r.Key, out var rec))
            return new RunResult { Prompt = r.Prompt, PromptIndex = r.PromptIndex, Seed = r.Seed, OutDir = r.OutDir, Error = "the run has no result (it did not finish)" };
        var result = rec.Result;
        if (result.Error is not null || result.Scores is null) return result with { Error = result.Error ?? "the run has no scores" };
        var emergence = EmergenceOf(result.Scores, r.Concepts, analysis);
        return result with { Emergence = emergence, Order = Emergence.Order(emergence[r.Concepts[0]], emergence[r.Concepts[1]]) };
    }
}
