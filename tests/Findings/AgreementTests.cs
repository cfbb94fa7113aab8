using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

/// <summary>Accuracy, Cohen's kappa and the confusion table on inputs checked by hand, and the fitted threshold.</summary>
public class AgreementTests
{
    private static IEnumerable<(bool, bool)> Calls(int both, int judgeOnly, int humanOnly, int neither) =>
        Enumerable.Repeat((true, true), both).Concat(Enumerable.Repeat((true, false), judgeOnly))
            .Concat(Enumerable.Repeat((false, true), humanOnly)).Concat(Enumerable.Repeat((false, false), neither));

    /// <summary>Cohen's kappa written out from its definition, apart from the implementation.</summary>
    private static double KappaByFormula(int a, int b, int c, int d)
    {
        double n = a + b + c + d;
        double po = (a + d) / n;
        double pYesJudge = (a + b) / n, pYesHuman = (a + c) / n;
        double pe = pYesJudge * pYesHuman + (1 - pYesJudge) * (1 - pYesHuman);
        return (po - pe) / (1 - pe);
    }

    [Theory]
    // the textbook 2x2 example (50 items: 20 both yes, 5 and 10 disagreements, 15 both no): p_o = 35/50, p_e = 25/50
    [InlineData(20, 5, 10, 15)]
    [InlineData(45, 15, 25, 15)]
    [InlineData(25, 35, 5, 35)]
    [InlineData(7, 0, 0, 3)]
    [InlineData(0, 4, 6, 0)]
    public void Kappa_accuracy_and_confusion(int both, int judgeOnly, int humanOnly, int neither)
    {
        var t = ConfusionTable.From(Calls(both, judgeOnly, humanOnly, neither).OrderBy(x => x.GetHashCode()));
        Assert.Equal((both, judgeOnly, humanOnly, neither), (t.BothPresent, t.JudgeOnly, t.HumanOnly, t.BothAbsent));
        Assert.Equal(both + judgeOnly + humanOnly + neither, t.N);
        Assert.Equal((double)(both + neither) / t.N, t.Accuracy!.Value, 12);
        Assert.Equal(KappaByFormula(both, judgeOnly, humanOnly, neither), t.Kappa!.Value, 12);
    }

    [Fact]
    public void Textbook_example_by_hand()
    {
        // p_o = (20 + 15) / 50 = 0.7; judge says yes 25/50, annotators 30/50: p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5;
        // kappa = (0.7 - 0.5) / (1 - 0.5)
        var t = ConfusionTable.From(Calls(20, 5, 10, 15));
        Assert.Equal((0.7 - 0.5) / (1 - 0.5), t.Kappa!.Value, 12);
        Assert.Equal(0.7, t.Accuracy!.Value, 12);
        Assert.Equal(1.0, ConfusionTable.From(Calls(3, 0, 0, 4)).Kappa!.Value, 12);
        Assert.True(ConfusionTable.From(Calls(0, 3, 4, 0)).Kappa < 0); // never agreeing is worse than chance
    }

    [Fact]
    public void Kappa_is_undefined_when_both_raters_never_vary_and_absent_without_calls()
    {
        Assert.Null(ConfusionTable.From(Calls(5, 0, 0, 0)).Kappa);
        Assert.Equal(1.0, ConfusionTable.From(Calls(5, 0, 0, 0)).Accuracy);
        Assert.Null(ConfusionTable.From(Array.Empty<(bool, bool)>()).Kappa);
        Assert.Null(ConfusionTable.From(Array.Empty<(bool, bool)>()).Accuracy);
        Assert.Equal(0.0, ConfusionTable.From(Calls(5, 3, 0, 0)).Kappa!.Value, 12); // the judge always says yes: chance level
    }

    [Fact]
    public void Hidden_state_index_i_is_lens_layer_i_minus_1()
    {
        Assert.Null(HiddenStateMapping.LensLayer(0));
        Assert.Equal(new int?[] { 2, 6, 10, 14, 18, 22 }, PaperCsv.SdIndices.Select(HiddenStateMapping.LensLayer));
        Assert.Equal(new int?[] { null, 3, 7, 11, 15, 19, 23 }, PaperCsv.IfIndices.Select(HiddenStateMapping.LensLayer));
        Assert.All(Enumerable.Range(0, 30), l => Assert.Equal(l, HiddenStateMapping.LensLayer(HiddenStateMapping.HiddenStateIndex(l))));
    }

    [Fact]
    public void Split_is_deterministic_half_and_half_and_independent_of_order()
    {
        var prompts = Enumerable.Range(0, 9).Select(i => $"prompt {i}").ToList();
        var (fit, held) = AgreementAnalysis.SplitPrompts(prompts);
        Assert.Equal(5, fit.Count);
        Assert.Equal(4, held.Count);
        Assert.Empty(fit.Intersect(held));
        Assert.Equal(prompts.OrderBy(p => p), fit.Concat(held).OrderBy(p => p));
        var (fit2, held2) = AgreementAnalysis.SplitPrompts(prompts.AsEnumerable().Reverse().Concat(prompts));
        Assert.Equal(fit, fit2);
        Assert.Equal(held, held2);
    }

    /// <summary>
    /// Annotators call a noun present where the judge's value is at least 0.6 (on every prompt), so the best threshold
    /// fitted on either half is the one that reproduces that cut, and it agrees perfectly on the held-out half.
    /// </summary>
    [Fact]
    public void The_fitted_threshold_recovers_the_annotators_cut()
    {
        var obs = new List<AgreementObservation>();
        for (int p = 0; p < 10; p++)
            for (int layer = 0; layer < 12; layer++)
            {
                double v = ((p * 7 + layer * 5) % 23) / 23.0;
                obs.Add(new AgreementObservation(layer % 2, $"prompt {p}", 0, layer + 1, layer, v, v >= 0.6));
            }
        var r = AgreementAnalysis.Analyse("sd", PresenceMetric.Prob, 0.3, obs, 0, 0);
        var values = obs.Select(o => o.Value).ToList();
        double lowestPresent = values.Where(v => v >= 0.6).Min(), highestAbsent = values.Where(v => v < 0.6).Max();
        Assert.InRange(r.BestThreshold!.Value, highestAbsent + 1e-9, lowestPresent);
        Assert.Equal(1.0, r.HeldOut!.Kappa!.Value, 12);
        Assert.Equal(1.0, r.HeldOut.Accuracy!.Value, 12);
        Assert.True(r.HeldOutAtClaimThreshold!.Kappa < 1);
        Assert.Equal(obs.Count, r.Cells);
        Assert.Equal(new[] { "noun_0", "noun_1", "all" }, r.Groups.Select(g => g.Position));
        Assert.Equal(r.Groups[2].Confusion, r.Groups[0].Confusion + r.Groups[1].Confusion);
        Assert.Equal(100, r.Sweep.Count);
        Assert.Equal(10, r.FitPrompts.Count + r.HeldOutPrompts.Count);
    }
}
