using System.Globalization;
using System.Text;
using DiffusionLens.Findings;
using DiffusionLens.Judge;

namespace DiffusionLens.Reports;

/// <summary>One line of a chart.</summary>
internal sealed record SvgSeries(string Label, IReadOnlyList<double> Values, string Color, bool Dashed = false);

/// <summary>A vertical marker at an x value (e.g. an emergence layer).</summary>
internal sealed record SvgMarker(double X, string Color, string Label);

/// <summary>
/// Small self-contained SVG line charts (no script, no external references). Every text is XML-escaped, so the
/// markup is safe to inline in HTML.
/// </summary>
internal static class SvgCharts
{
    public static readonly string[] Palette = { "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f" };

    private static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

    /// <summary>Escapes text for XML and HTML (&amp; &lt; &gt; " ').</summary>
    public static string Escape(string? s)
    {
        if (string.IsNullOrEmpty(s)) return "";
        var sb = new StringBuilder(s.Length + 16);
        foreach (var ch in s)
        {
            switch (ch)
            {
                case '&': sb.Append("&amp;"); break;
                case '<': sb.Append("&lt;"); break;
                case '>': sb.Append("&gt;"); break;
                case '"': sb.Append("&quot;"); break;
                case '\'': sb.Append("&#39;"); break;
                default:
                    // control characters other than tab/newline are not allowed in XML 1.0
                    if (ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') sb.Append('\uFFFD');
                    else sb.Append(ch);
                    break;
            }
        }
        return sb.ToString();
    }

    /// <summary>
    /// An <c>&lt;svg&gt;</c> line chart of <paramref name="series"/> over <paramref name="xs"/>, with an optional
    /// horizontal threshold line and vertical markers.
    /// </summary>
    public static string LineChart(string title, IReadOnlyList<int> xs, IReadOnlyList<SvgSeries> series, double yMin, double yMax,
        string xLabel, string yLabel, double? threshold = null, IReadOnlyList<SvgMarker>? markers = null, int width = 520, int height = 280) =>
        LineChart(title, xs.Select(x => (double)x).ToList(), series, yMin, yMax, xLabel, yLabel, threshold, markers, width, height);

    /// <summary>The line chart over real x values (e.g. thresholds).</summary>
    public static string LineChart(string title, IReadOnlyList<double> xs, IReadOnlyList<SvgSeries> series, double yMin, double yMax,
        string xLabel, string yLabel, double? threshold = null, IReadOnlyList<SvgMarker>? markers = null, int width = 520, int height = 280)
    {
        if (xs.Count == 0) throw new ArgumentException("no x values");
        foreach (var s in series)
            if (s.Values.Count != xs.Count) throw new ArgumentException($"series '{s.Label}' has {s.Values.Count} values for {xs.Count} x values");
        if (!(yMax > yMin)) { yMax = yMin + 1; }
        const int left = 52, right = 16, top = 30, bottom = 58;
        int pw = width - left - right, ph = height - top - bottom;
        double xMin = xs.Min(), xMax = xs.Max();
        if (xMax == xMin) { xMin -= 0.5; xMax += 0.5; }
        double X(double x) => left + (x - xMin) / (xMax - xMin) * pw;
        double Y(double y) => top + (1 - (Math.Clamp(y, yMin, yMax) - yMin) / (yMax - yMin)) * ph;

        var sb = new StringBuilder();
        sb.Append($"<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{Escape(title)}\">");
        sb.Append($"<title>{Escape(title)}</title>");
        sb.Append($"<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>");
        sb.Append($"<text x=\"{left}\" y=\"18\" font-family=\"sans-serif\" font-size=\"13\" fill=\"#222\">{Escape(title)}</text>");
        // y grid and ticks
        for (int i = 0; i <= 4; i++)
        {
            double v = yMin + (yMax - yMin) * i / 4;
            double y = Y(v);
            sb.Append($"<line x1=\"{left}\" y1=\"{F(y)}\" x2=\"{left + pw}\" y2=\"{F(y)}\" stroke=\"#e3e3e3\" stroke-width=\"1\"/>");
            sb.Append($"<text x=\"{left - 6}\" y=\"{F(y + 4)}\" text-anchor=\"end\" font-family=\"sans-serif\" font-size=\"10\" fill=\"#555\">{F(v)}</text>");
        }
        // x ticks (at most ~16 labels)
        int every = Math.Max(1, (int)Math.Ceiling(xs.Count / 16.0));
        for (int i = 0; i < xs.Count; i++)
        {
            double x = X(xs[i]);
            sb.Append($"<line x1=\"{F(x)}\" y1=\"{top + ph}\" x2=\"{F(x)}\" y2=\"{top + ph + 4}\" stroke=\"#888\"/>");
            if (i % every == 0 || i == xs.Count - 1)
                sb.Append($"<text x=\"{F(x)}\" y=\"{top + ph + 16}\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"10\" fill=\"#555\">{F(xs[i])}</text>");
        }
        sb.Append($"<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>");
        sb.Append($"<text x=\"{left + pw / 2}\" y=\"{top + ph + 32}\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"11\" fill=\"#333\">{Escape(xLabel)}</text>");
        sb.Append($"<text x=\"14\" y=\"{top + ph / 2}\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"11\" fill=\"#333\" transform=\"rotate(-90 14 {top + ph / 2})\">{Escape(yLabel)}</text>");
        if (threshold is { } t && t >= yMin && t <= yMax)
        {
            sb.Append($"<line class=\"threshold\" x1=\"{left}\" y1=\"{F(Y(t))}\" x2=\"{left + pw}\" y2=\"{F(Y(t))}\" stroke=\"#444\" stroke-dasharray=\"5 4\" stroke-width=\"1\"/>");
            sb.Append($"<text x=\"{left + pw - 2}\" y=\"{F(Y(t) - 3)}\" text-anchor=\"end\" font-family=\"sans-serif\" font-size=\"9\" fill=\"#444\">threshold {F(t)}</text>");
        }
        foreach (var m in markers ?? Array.Empty<SvgMarker>())
        {
            double x = X(m.X);
            sb.Append($"<line class=\"marker\" x1=\"{F(x)}\" y1=\"{top}\" x2=\"{F(x)}\" y2=\"{top + ph}\" stroke=\"{Escape(m.Color)}\" stroke-width=\"2\" stroke-opacity=\"0.45\"><title>{Escape(m.Label)}</title></line>");
        }
        foreach (var s in series)
        {
            var pts = string.Join(" ", xs.Select((x, i) => $"{F(X(x))},{F(Y(s.Values[i]))}"));
            var dash = s.Dashed ? " stroke-dasharray=\"3 3\"" : "";
            sb.Append($"<polyline class=\"series\" fill=\"none\" stroke=\"{Escape(s.Color)}\" stroke-width=\"2\"{dash} points=\"{pts}\"><title>{Escape(s.Label)}</title></polyline>");
            for (int i = 0; i < xs.Count; i++)
                sb.Append($"<circle cx=\"{F(X(xs[i]))}\" cy=\"{F(Y(s.Values[i]))}\" r=\"2.5\" fill=\"{Escape(s.Color)}\"/>");
        }
        // legend
        double lx = left;
        double ly = height - 10;
        foreach (var s in series)
        {
            sb.Append($"<rect x=\"{F(lx)}\" y=\"{F(ly - 8)}\" width=\"12\" height=\"4\" fill=\"{Escape(s.Color)}\"/>");
            sb.Append($"<text x=\"{F(lx + 16)}\" y=\"{F(ly - 3)}\" font-family=\"sans-serif\" font-size=\"10\" fill=\"#333\">{Escape(s.Label)}</text>");
            lx += 26 + 6.2 * Math.Min(s.Label.Length, 40);
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>The probability chart of a scores file (threshold and emergence markers when given).</summary>
    public static string ProbChart(JudgeScores scores, AnalysisOptions? analysis = null, IReadOnlyDictionary<string, int?>? emergence = null, string? title = null)
    {
        bool cosine = analysis?.Metric == PresenceMetric.Cosine;
        var labels = scores.Labels;
        var series = labels.Select((l, i) => new SvgSeries(l, scores.Curve(l, cosine), Palette[i % Palette.Length], Dashed: i >= scores.Concepts.Length)).ToList();
        var markers = new List<SvgMarker>();
        if (emergence is not null)
            for (int i = 0; i < labels.Count; i++)
                if (emergence.TryGetValue(labels[i], out var e) && e is { } layer)
                    markers.Add(new SvgMarker(layer, Palette[i % Palette.Length], $"{labels[i]} emerges at layer {layer}"));
        double yMin = 0, yMax = 1;
        if (cosine)
        {
            var all = series.SelectMany(s => s.Values).ToList();
            yMin = Math.Floor(Math.Min(all.Min(), analysis!.Threshold) * 10 - 0.5) / 10;
            yMax = Math.Ceiling(Math.Max(all.Max(), analysis.Threshold) * 10 + 0.5) / 10;
        }
        return LineChart(title ?? (cosine ? "cosine similarity per layer" : "probability per layer"), scores.LayerNumbers, series, yMin, yMax,
            "encoder layer", cosine ? "cosine" : "softmax probability", analysis?.Threshold, markers);
    }

    /// <summary>The cosine chart of a scores file.</summary>
    public static string CosineChart(JudgeScores scores)
    {
        var labels = scores.Labels;
        var series = labels.Select((l, i) => new SvgSeries(l, scores.Curve(l, true), Palette[i % Palette.Length], Dashed: i >= scores.Concepts.Length)).ToList();
        var all = series.SelectMany(s => s.Values).ToList();
        double yMin = Math.Floor(all.Min() * 20) / 20, yMax = Math.Ceiling(all.Max() * 20) / 20;
        if (yMax - yMin < 0.05) { yMin -= 0.05; yMax += 0.05; }
        return LineChart("cosine similarity per layer", scores.LayerNumbers, series, yMin, yMax, "encoder layer", "cosine");
    }

    /// <summary><c>scores.svg</c>: probability chart above the cosine chart, one standalone SVG document.</summary>
    public static string ScoresDocument(JudgeScores scores, AnalysisOptions? analysis = null, IReadOnlyDictionary<string, int?>? emergence = null)
    {
        var probAnalysis = analysis is { Metric: PresenceMetric.Cosine } ? null : analysis;
        var prob = ProbChart(scores, probAnalysis, emergence);
        var cos = analysis is { Metric: PresenceMetric.Cosine } ? ProbChart(scores, analysis, emergence) : CosineChart(scores);
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" +
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"560\" viewBox=\"0 0 520 560\">" +
               $"<title>{Escape($"judge scores: {string.Join(", ", scores.Labels)} ({scores.Template})")}</title>" +
               "<g>" + prob + "</g><g transform=\"translate(0,280)\">" + cos + "</g></svg>\n";
    }
}
