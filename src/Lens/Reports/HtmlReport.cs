using System.Globalization;
using System.Text;
using DiffusionLens.Findings;
using DiffusionLens.Judge;

namespace DiffusionLens.Reports;

/// <summary>
/// <c>report.html</c>: a single self-contained page (images inline as base64 PNG, charts as inline SVG, no script, no
/// external reference) with a Content-Security-Policy that forbids scripts and any load other than data: images.
/// Every text that comes from the claims file, prompts or paths is HTML-escaped.
/// </summary>
internal static class HtmlReport
{
    /// <summary>The page's CSP: nothing may load or run except inline styles and data: images.</summary>
    public const string ContentSecurityPolicy =
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    public const string PageTitle = "Diffusion Lens audit report";

    /// <summary>Longer side of the layer thumbnails, in pixels.</summary>
    public static int ThumbnailSize { get; set; } = 160;

    private static string E(string? s) => SvgCharts.Escape(s);
    private static string F(double v, string fmt = "0.00") => v.ToString(fmt, CultureInfo.InvariantCulture);
    private static string Lower(Enum e) => e.ToString().ToLowerInvariant();

    /// <param name="report">the audit result</param>
    /// <param name="baseDir">the audit folder (relative image paths in the report are resolved against it)</param>
    /// <param name="path">where to write the HTML</param>
    public static void Write(AuditReport report, string baseDir, string path)
    {
        var html = Render(report, baseDir);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllText(path, html, new UTF8Encoding(false));
    }

    public static string Render(AuditReport report, string baseDir)
    {
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        sb.Append($"<meta http-equiv=\"Content-Security-Policy\" content=\"{ContentSecurityPolicy}\">\n");
        sb.Append("<meta name=\"referrer\" content=\"no-referrer\">\n");
        sb.Append($"<title>{E(PageTitle)}</title>\n");
        sb.Append("<style>\n").Append(Css).Append("</style>\n</head>\n<body>\n");
        sb.Append($"<h1>{E(PageTitle)}</h1>\n");
        sb.Append("<p class=\"meta\">");
        sb.Append($"claims file <code>{E(report.ClaimsFile)}</code> &middot; created {E(report.Created)} &middot; sweep device {E(report.Device)}");
        if (report.Judge is { } j)
            sb.Append($"<br>judge: {E(j.Source)} (<code>{E(j.Folder)}</code>, image size {j.ImageSize}, logit scale {F(j.LogitScale, "0.###")}, {E(j.Device)})");
        sb.Append("</p>\n");
        if (report.ClaimsDescription.Length > 0) sb.Append($"<p class=\"description\">{E(report.ClaimsDescription)}</p>\n");

        // verdict table
        sb.Append("<h2>Verdicts</h2>\n<table class=\"verdicts\">\n<thead><tr><th>claim</th><th>model</th><th>expected order</th><th>runs</th><th>first / second / simultaneous / neither</th><th>verdict</th></tr></thead>\n<tbody>\n");
        foreach (var c in report.Claims)
        {
            sb.Append($"<tr><td><a href=\"#{AnchorId(c.Id)}\">{E(c.Id)}</a><br><span class=\"small\">{E(c.Title)}</span></td>");
            sb.Append($"<td>{E(c.ModelName ?? c.Model)}</td><td>{E(Lower(c.ExpectedOrder))}</td><td>{c.Runs.Count}</td>");
            sb.Append($"<td>{c.Counts.First} / {c.Counts.Second} / {c.Counts.Simultaneous} / {c.Counts.Neither}</td>");
            sb.Append($"<td><span class=\"verdict v-{Lower(c.Verdict)}\">{E(Lower(c.Verdict))}</span></td></tr>\n");
        }
        sb.Append("</tbody>\n</table>\n");

        foreach (var c in report.Claims) RenderClaim(sb, report, c, baseDir);

        if (report.Sources.Count > 0)
        {
            sb.Append("<h2>Sources</h2>\n<ul class=\"sources\">\n");
            foreach (var (key, s) in report.Sources)
            {
                sb.Append($"<li><b>{E(key)}</b>: {E(s.Title)}");
                if (s.Url is not null) sb.Append($" &mdash; <span class=\"url\">{E(s.Url)}</span>");
                if (s.Note is not null) sb.Append($"<br><span class=\"small\">{E(s.Note)}</span>");
                sb.Append("</li>\n");
            }
            sb.Append("</ul>\n");
        }
        sb.Append("</body>\n</html>\n");
        return sb.ToString();
    }

    /// <summary>An id attribute value made only of [a-z0-9-].</summary>
    public static string AnchorId(string id)
    {
        var sb = new StringBuilder("claim-");
        foreach (var ch in id.ToLowerInvariant()) sb.Append(ch is >= 'a' and <= 'z' or >= '0' and <= '9' ? ch : '-');
        return sb.ToString();
    }

    private static void RenderClaim(StringBuilder sb, AuditReport report, ClaimResult c, string baseDir)
    {
        sb.Append($"<section class=\"claim\" id=\"{AnchorId(c.Id)}\">\n");
        sb.Append($"<h2>{E(c.Title.Length > 0 ? c.Title : c.Id)} <span class=\"verdict v-{Lower(c.Verdict)}\">{E(Lower(c.Verdict))}</span></h2>\n");
        if (c.Statement.Length > 0) sb.Append($"<p class=\"statement\">{E(c.Statement)}</p>\n");
        sb.Append("<dl class=\"facts\">\n");
        void Fact(string k, string v) => sb.Append($"<dt>{E(k)}</dt><dd>{v}</dd>\n");
        Fact("claim id", $"<code>{E(c.Id)}</code>");
        Fact("model", E(c.ModelName ?? c.Model) + (c.ModelDir is null ? "" : $" <code>{E(c.ModelDir)}</code>"));
        Fact("prompts", string.Join("<br>", c.Prompts.Select(p => $"&ldquo;{E(p)}&rdquo;")));
        Fact("concepts (in prompt order)", E(string.Join(", ", c.Concepts)) + (c.Distractors.Count > 0 ? $" &middot; distractors: {E(string.Join(", ", c.Distractors))}" : ""));
        Fact("judge template", $"<code>{E(c.Template)}</code>");
        Fact("seeds", E(string.Join(", ", c.Seeds)));
        Fact("layers", E(c.Layers.ToString()));
        Fact("sampler", $"steps {E(c.Steps?.ToString(CultureInfo.InvariantCulture) ?? "default")}, guidance {E(c.Guidance?.ToString(CultureInfo.InvariantCulture) ?? "default")}");
        Fact("emergence rule", E(c.Analysis.Describe()));
        Fact("expected order", E(Lower(c.ExpectedOrder)) + $" ({E(OrderMeaning(c, c.ExpectedOrder))})");
        Fact("verdict", $"<span class=\"verdict v-{Lower(c.Verdict)}\">{E(Lower(c.Verdict))}</span> &mdash; {E(c.VerdictReason)}");
        sb.Append("</dl>\n");
        if (c.Note is not null) sb.Append($"<p class=\"small\">{E(c.Note)}</p>\n");

        if (c.Published.Count > 0)
        {
            sb.Append("<h3>Published figures</h3>\n<ul class=\"published\">\n");
            foreach (var p in c.Published)
            {
                var src = report.Sources.TryGetValue(p.Source, out var s) ? s.Title : p.Source;
                sb.Append($"<li>{E(p.Describe())} <span class=\"small\">[{E(src)}]</span></li>\n");
            }
            sb.Append("</ul>\n");
        }

        if (c.EmergenceSummary.Count > 0 && c.Runs.Count > 0)
        {
            sb.Append("<table class=\"summary\"><thead><tr><th>concept</th><th>emerged in</th><th>mean layer</th><th>min</th><th>max</th></tr></thead><tbody>\n");
            foreach (var e in c.EmergenceSummary)
                sb.Append($"<tr><td>{E(e.Concept)}</td><td>{e.Emerged}/{e.Runs} runs</td><td>{(e.MeanLayer is { } m ? F(m, "0.0") : "&ndash;")}</td><td>{e.MinLayer?.ToString(CultureInfo.InvariantCulture) ?? "&ndash;"}</td><td>{e.MaxLayer?.ToString(CultureInfo.InvariantCulture) ?? "&ndash;"}</td></tr>\n");
            sb.Append("</tbody></table>\n");
        }

        if (c.PromptSet is { } ps) PromptSetSection.Render(sb, ps);
        foreach (var r in c.Runs) RenderRun(sb, c, r, baseDir);
        sb.Append("</section>\n");
    }

    private static string OrderMeaning(ClaimResult c, ConceptOrder o) => OrderMeaning(c.Concepts, o);

    private static string OrderMeaning(IReadOnlyList<string> concepts, ConceptOrder o)
    {
        string a = concepts.Count > 0 ? concepts[0] : "first", b = concepts.Count > 1 ? concepts[1] : "second";
        return o switch
        {
            ConceptOrder.First => $"'{a}' emerges before '{b}'",
            ConceptOrder.Second => $"'{b}' emerges before '{a}'",
            ConceptOrder.Simultaneous => $"'{a}' and '{b}' emerge at the same layer",
            _ => "neither emerges",
        };
    }

    private static void RenderRun(StringBuilder sb, ClaimResult c, RunResult r, string baseDir)
    {
        sb.Append("<div class=\"run\">\n");
        sb.Append($"<h3>&ldquo;{E(r.Prompt)}&rdquo; &middot; seed {r.Seed}</h3>\n");
        if (r.Error is not null)
        {
            sb.Append($"<p class=\"error\">run failed: {E(r.Error)}</p>\n</div>\n");
            return;
        }
        var concepts = r.Concepts ?? c.Concepts;
        var parts = concepts.Select(k => $"{E(k)}: {(r.Emergence.TryGetValue(k, out var l) && l is { } v ? $"layer {v}" : "never")}");
        sb.Append($"<p>emergence &mdash; {string.Join(" &middot; ", parts)}; order: <b>{E(r.Order is { } o ? Lower(o) : "?")}</b>");
        if (r.Order is { } ord) sb.Append($" ({E(OrderMeaning(concepts, ord))})");
        sb.Append("</p>\n");

        // layer grid: thumbnail + per-concept probability
        sb.Append("<div class=\"grid\">\n");
        foreach (var (layer, rel) in r.LayerImages.OrderBy(kv => kv.Key))
        {
            var score = r.Scores?.Layers.FirstOrDefault(l => l.Layer == layer);
            sb.Append("<figure class=\"layer\">");
            var file = Path.IsPathRooted(rel) ? rel : Path.Combine(baseDir, rel);
            string? data = null;
            try { data = Convert.ToBase64String(RgbImage.Load(file).Thumbnail(ThumbnailSize).EncodePng()); }
            catch (LensException) { }
            if (data is not null) sb.Append($"<img src=\"data:image/png;base64,{data}\" alt=\"layer {layer}\">");
            else sb.Append($"<div class=\"missing\">image missing: {E(rel)}</div>");
            sb.Append($"<figcaption>layer {layer}");
            if (score is not null && r.Scores is not null)
                for (int i = 0; i < r.Scores.Concepts.Length && i < score.Prob.Length; i++)
                {
                    bool emerged = r.Emergence.TryGetValue(r.Scores.Concepts[i], out var el) && el is { } ev && layer >= ev;
                    sb.Append($"<br><span class=\"{(emerged ? "present" : "absent")}\">{E(r.Scores.Concepts[i])} {F(score.Prob[i])}</span>");
                }
            sb.Append("</figcaption></figure>\n");
        }
        sb.Append("</div>\n");
        if (r.Scores is not null)
        {
            sb.Append("<div class=\"charts\">");
            sb.Append(SvgCharts.ProbChart(r.Scores, c.Analysis, r.Emergence, $"{(c.Analysis.Metric == PresenceMetric.Cosine ? "cosine" : "probability")} per layer, seed {r.Seed}"));
            if (c.Analysis.Metric != PresenceMetric.Cosine) sb.Append(SvgCharts.CosineChart(r.Scores));
            sb.Append("</div>\n");
        }
        sb.Append("</div>\n");
    }

    private const string Css = @"
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; } h3 { font-size: 1.05em; margin-bottom: 0.3em; }
code { background: #f3f3f3; padding: 0 3px; word-break: break-all; }
.meta, .small { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.verdict { padding: 1px 6px; border-radius: 4px; font-weight: 600; font-size: 0.9em; }
.v-supported { background: #d7f2d7; color: #135f13; }
.v-contradicted { background: #f8d4d4; color: #8b1414; }
.v-inconclusive { background: #f6ecc8; color: #6b5600; }
.v-skipped { background: #e6e6e6; color: #444; }
.v-error { background: #f3c2f0; color: #6d0f68; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; }
figure.layer { margin: 0; width: 168px; font-size: 0.8em; }
figure.layer img { width: 160px; height: auto; image-rendering: pixelated; display: block; border: 1px solid #ccc; }
.present { color: #135f13; font-weight: 600; } .absent { color: #777; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 8px; }
.error { color: #8b1414; font-weight: 600; }
.run { border-top: 1px dashed #ddd; margin-top: 12px; padding-top: 4px; }
.missing { width: 160px; height: 60px; background: #eee; color: #888; }
";
}
