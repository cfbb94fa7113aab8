using System.Security.Cryptography;
using System.Text;

namespace DiffusionLens.Findings;

/// <summary>Agreement of the judge with the annotators: confusion tables, accuracy, Cohen's kappa and a fitted threshold.</summary>
internal static class AgreementAnalysis
{
    public const string PairingText =
        "by (prompt, seed, hidden-state index): the judge scores this audit's image, the label is the annotators' image of the paper's model; " +
        "they are the same picture only where model, sampler and seed policy match the paper's";

    public const string SplitText =
        "prompts ordered by the SHA-256 of their UTF-8 text; the first ceil(n/2) fit the threshold, the rest are held out";

    public const string SelectionText =
        "thresholds on a 0.01 grid over the metric's range; the highest kappa on the fitting prompts wins, ties going to the threshold nearest the claim's, then the lower";

    /// <summary>The deterministic half split of prompts (see <see cref="SplitText"/>).</summary>
    public static (IReadOnlyList<string> Fit, IReadOnlyList<string> HeldOut) SplitPrompts(IEnumerable<string> prompts)
    {
        var ordered = prompts.Distinct(StringComparer.Ordinal)
            .Select(p => (Prompt: p, Hash: Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(p)))))
            .OrderBy(x => x.Hash, StringComparer.Ordinal).Select(x => x.Prompt).ToList();
        int fit = (ordered.Count + 1) / 2;
        return (ordered.Take(fit).ToList(), ordered.Skip(fit).ToList());
    }

    /// <summary>The candidate thresholds: a 0.01 grid over (0, 1] for probabilities, [-1, 1] for cosines.</summary>
    public static IReadOnlyList<double> Grid(PresenceMetric metric)
    {
        int from = metric == PresenceMetric.Prob ? 1 : -100;
        return Enumerable.Range(from, 100 - from + 1).Select(i => i / 100.0).ToList();
    }

    public static readonly string[] PositionNames = { "noun_0", "noun_1" };

    public static AgreementReport Analyse(string model, PresenceMetric metric, double threshold, IReadOnlyList<AgreementObservation> obs,
        int cellsWithoutLayer, int runsWithoutAnnotations)
    {
        var groups = new List<AgreementGroup>();
        for (int p = 0; p < PositionNames.Length; p++)
            groups.Add(AgreementGroup.Of(model, PositionNames[p], threshold, obs.Where(o => o.Position == p)));
        groups.Add(AgreementGroup.Of(model, "all", threshold, obs));

        var (fitPrompts, heldPrompts) = SplitPrompts(obs.Select(o => o.Prompt));
        var fitSet = fitPrompts.ToHashSet(StringComparer.Ordinal);
        var fit = obs.Where(o => fitSet.Contains(o.Prompt)).ToList();
        var held = obs.Where(o => !fitSet.Contains(o.Prompt)).ToList();
        var sweep = Grid(metric).Select(t =>
        {
            var f = ConfusionTable.From(fit.Select(o => (o.Value >= t, o.Human)));
            var h = ConfusionTable.From(held.Select(o => (o.Value >= t, o.Human)));
            return new ThresholdPoint(t, f.Kappa, f.Accuracy, h.Kappa, h.Accuracy);
        }).ToList();
        var best = sweep.Where(s => s.FitKappa is not null)
            .OrderByDescending(s => s.FitKappa!.Value)
            .ThenBy(s => Math.Abs(s.Threshold - threshold))
            .ThenBy(s => s.Threshold)
            .Select(s => (double?)s.Threshold).FirstOrDefault();
        return new AgreementReport
        {
            Model = model,
            Metric = metric.ToString().ToLowerInvariant(),
            Threshold = threshold,
            Cells = obs.Count,
            CellsWithoutLayer = cellsWithoutLayer,
            RunsWithoutAnnotations = runsWithoutAnnotations,
            Groups = groups,
            FitPrompts = fitPrompts,
            HeldOutPrompts = heldPrompts,
            BestThreshold = best,
            HeldOut = best is { } b && held.Count > 0 ? AgreementGroup.Of(model, "all", b, held) : null,
            HeldOutAtClaimThreshold = held.Count > 0 ? AgreementGroup.Of(model, "all", threshold, held) : null,
            Sweep = sweep,
        };
    }
}
