using System.Globalization;
using System.Text;
using DiffusionLens.Findings;

namespace DiffusionLens.Reports;

/// <summary>The report's section of a prompt-set claim: order counts of the judge and the annotators with bootstrap
/// intervals, and the judge's agreement with the annotators (tables and a chart of kappa over the threshold).</summary>
internal static class PromptSetSection
{
    private static string E(string? s) => SvgCharts.Escape(s);
    private static string F(double? v, string fmt = "0.000") => v is { } x ? x.ToString(fmt, CultureInfo.InvariantCulture) : "&ndash;";
    private static string Ci(ConfidenceInterval c) => $"{F(c.Estimate)} [{F(c.Low)}, {F(c.High)}]";

    public static void Render(StringBuilder sb, PromptSetResult ps)
    {
        sb.Append("<h3>Prompt set</h3>\n");
        sb.Append($"<p class=\"small\">prompts from <code>{E(ps.File)}</code>: {ps.Prompts} prompts &times; seeds {E(string.Join(", ", ps.Seeds))}</p>\n");
        var b = ps.JudgeBootstrap;
        sb.Append($"<p class=\"small\">intervals: {F(b.Level * 100, "0.#")}% {E(b.Method)}; {b.Resamples} resamples, seed {b.Seed}</p>\n");
        sb.Append("<table class=\"prompt-set\"><thead><tr><th></th><th>pairs</th><th>first before second</th><th>second before first</th><th>ties</th><th>neither</th><th>fraction first &minus; second</th></tr></thead><tbody>\n");
        void Row(string who, OrderTally t, OrderBootstrap bs) =>
            sb.Append($"<tr><td>{E(who)}</td><td>{t.Pairs}</td><td>{t.FirstBeforeSecond}<br><span class=\"small\">{Ci(bs.FirstBeforeSecond)}</span></td>" +
                      $"<td>{t.SecondBeforeFirst}<br><span class=\"small\">{Ci(bs.SecondBeforeFirst)}</span></td><td>{t.Ties}<br><span class=\"small\">{Ci(bs.Ties)}</span></td>" +
                      $"<td>{t.Neither}<br><span class=\"small\">{Ci(bs.Neither)}</span></td><td>{Ci(bs.FirstMinusSecond)}</td></tr>\n");
        Row("judge", ps.Judge, ps.JudgeBootstrap);
        if (ps.Human is { } h && ps.HumanBootstrap is { } hb) Row("annotators (same prompts and seeds)", h, hb);
        sb.Append("</tbody></table>\n");
        if (ps.HumanRule is not null)
            sb.Append($"<p class=\"small\">annotators' order: {E(ps.HumanRule)}; files <code>{E(ps.FirstAnnotations)}</code>, <code>{E(ps.SecondAnnotations)}</code></p>\n");
        if (ps.Agreement is { } a) RenderAgreement(sb, a);
    }

    private static void RenderAgreement(StringBuilder sb, AgreementReport a)
    {
        sb.Append("<h3>Agreement with the annotators</h3>\n");
        sb.Append($"<p class=\"small\">layer mapping: {E(a.LayerMapping)}<br>pairing: {E(a.Pairing)}<br>" +
                  $"{a.Cells} annotated cells compared; {a.CellsWithoutLayer} at an index without a lens image in the run; {a.RunsWithoutAnnotations} runs without annotation rows</p>\n");
        sb.Append($"<table class=\"agreement\"><thead><tr><th>model</th><th>noun</th><th>threshold ({E(a.Metric)})</th><th>cells</th><th>both present</th><th>judge only</th><th>annotators only</th><th>both absent</th><th>accuracy</th><th>Cohen's kappa</th></tr></thead><tbody>\n");
        var rows = a.Groups.Select(g => (g, "all prompts")).ToList();
        if (a.HeldOutAtClaimThreshold is { } hc) rows.Add((hc, "held-out prompts, claim's threshold"));
        if (a.HeldOut is { } ho) rows.Add((ho, "held-out prompts, fitted threshold"));
        foreach (var (g, what) in rows)
        {
            var t = g.Confusion;
            sb.Append($"<tr><td>{E(g.Model)}</td><td>{E(g.Position)} <span class=\"small\">({E(what)})</span></td><td>{F(g.Threshold, "0.00")}</td><td>{t.N}</td><td>{t.BothPresent}</td><td>{t.JudgeOnly}</td><td>{t.HumanOnly}</td><td>{t.BothAbsent}</td><td>{F(g.Accuracy)}</td><td>{F(g.Kappa)}</td></tr>\n");
        }
        sb.Append("</tbody></table>\n");
        sb.Append($"<p class=\"small\">threshold fit: {E(a.Split)} ({a.FitPrompts.Count} fit, {a.HeldOutPrompts.Count} held out); {E(a.Selection)}. " +
                  $"Best threshold on the fitting prompts: <b>{F(a.BestThreshold, "0.00")}</b> (the claim's: {F(a.Threshold, "0.00")}).</p>\n");
        if (a.Sweep.Count > 0)
        {
            var xs = a.Sweep.Select(p => p.Threshold).ToList();
            var series = new List<SvgSeries>
            {
                new("kappa, fitting prompts", a.Sweep.Select(p => p.FitKappa ?? 0).ToList(), SvgCharts.Palette[0]),
                new("kappa, held-out prompts", a.Sweep.Select(p => p.HeldOutKappa ?? 0).ToList(), SvgCharts.Palette[1]),
                new("accuracy, held-out", a.Sweep.Select(p => p.HeldOutAccuracy ?? 0).ToList(), SvgCharts.Palette[2], Dashed: true),
            };
            var markers = new List<SvgMarker> { new(a.Threshold, "#444444", $"claim's threshold {F(a.Threshold, "0.00")}") };
            if (a.BestThreshold is { } best) markers.Add(new SvgMarker(best, SvgCharts.Palette[0], $"fitted threshold {F(best, "0.00")}"));
            double yMin = Math.Min(0, Math.Floor(series.SelectMany(s => s.Values).Min() * 10) / 10);
            sb.Append("<div class=\"charts\">");
            sb.Append(SvgCharts.LineChart($"agreement with the annotators over the threshold ({a.Model})", xs, series, yMin, 1,
                $"presence threshold ({a.Metric}); undefined kappa drawn at 0", "kappa / accuracy", null, markers, 620, 300));
            sb.Append("</div>\n");
        }
    }
}
