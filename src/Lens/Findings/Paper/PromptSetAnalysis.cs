namespace DiffusionLens.Findings;

/// <summary>Builds a prompt-set claim's <see cref="PromptSetResult"/> from its runs.</summary>
internal static class PromptSetAnalysis
{
    public static PromptSetResult Analyse(ClaimResult claim, ClaimPlan plan, PromptSetSpec spec)
    {
        var data = plan.PromptSet!;
        var ok = claim.Runs.Where(r => r.Error is null && r.Order is not null).ToList();
        var b = spec.Bootstrap;
        var judgePairs = ok.Select(r => (r.Prompt, r.Order!.Value)).ToList();
        var result = new PromptSetResult
        {
            File = data.File,
            Prompts = data.Prompts.Count,
            Seeds = plan.Seeds,
            Judge = OrderTally.From(judgePairs.Select(p => p.Item2)),
            JudgeBootstrap = OrderBootstrap.Compute(judgePairs, b.Resamples, b.Level, b.Seed),
        };
        if (data.First is not { } first || data.Second is not { } second) return result;

        var humanPairs = new List<(string, ConceptOrder)>();
        var obs = new List<AgreementObservation>();
        int withoutLayer = 0, withoutRows = 0;
        bool cosine = claim.Analysis.Metric == PresenceMetric.Cosine;
        foreach (var r in claim.Runs.Where(r => r.Error is null))
        {
            var rows = new[] { first.Find(r.Prompt, r.Seed), second.Find(r.Prompt, r.Seed) };
            if (rows[0] is null || rows[1] is null) { withoutRows++; continue; }
            humanPairs.Add((r.Prompt, Emergence.Order(first.FirstPresent(rows[0]!), second.FirstPresent(rows[1]!))));
            if (r.Scores is not { } scores) continue;
            var layers = scores.LayerNumbers;
            var concepts = r.Concepts ?? claim.Concepts;
            for (int pos = 0; pos < 2; pos++)
            {
                var file = pos == 0 ? first : second;
                var curve = scores.Curve(concepts[pos], cosine);
                for (int i = 0; i < file.Indices.Count; i++)
                {
                    if (rows[pos]!.Labels[i] is not { } label) continue;
                    int idx = file.Indices[i];
                    int at = HiddenStateMapping.LensLayer(idx) is { } layer ? Array.IndexOf(layers, layer) : -1;
                    if (at < 0) { withoutLayer++; continue; }
                    obs.Add(new AgreementObservation(pos, r.Prompt, r.Seed, idx, layers[at], curve[at], label));
                }
            }
        }
        return result with
        {
            Human = OrderTally.From(humanPairs.Select(p => p.Item2)),
            HumanBootstrap = OrderBootstrap.Compute(humanPairs, b.Resamples, b.Level, b.Seed),
            HumanRule = HumanOrder.RuleText,
            FirstAnnotations = first.Path,
            SecondAnnotations = second.Path,
            Agreement = AgreementAnalysis.Analyse(claim.ModelName ?? claim.Model, claim.Analysis.Metric, claim.Analysis.Threshold, obs, withoutLayer, withoutRows),
        };
    }
}
