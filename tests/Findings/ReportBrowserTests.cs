using System.Diagnostics;
using System.Text.RegularExpressions;
using DiffusionLens.Reports;

namespace DiffusionLens.Tests.Findings;

/// <summary>The audit report rendered by headless Chromium (skipped when /usr/bin/chromium is absent).</summary>
public class ReportBrowserTests
{
    private const string Chromium = "/usr/bin/chromium";

    private static string DumpDom(TempDir tmp, string htmlPath)
    {
        if (!File.Exists(Chromium)) Assert.Skip($"{Chromium} is absent (apt-get install -y chromium)");
        var psi = new ProcessStartInfo(Chromium)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--user-data-dir=" + tmp.Sub("chromium-profile-" + Guid.NewGuid().ToString("N")[..6]),
                     "--dump-dom", new Uri(Path.GetFullPath(htmlPath)).AbsoluteUri })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(90_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail("chromium did not finish within 90 s");
        }
        Assert.True(p.ExitCode == 0, $"chromium exited {p.ExitCode}: {stderr.Result}");
        return stdout.Result;
    }

    private static string Title(string dom) => Regex.Match(dom, "<title>(.*?)</title>", RegexOptions.Singleline).Groups[1].Value;

    [Fact]
    public void Control_page_shows_that_scripts_would_be_detected()
    {
        using var tmp = new TempDir();
        var path = tmp.Sub("control.html");
        File.WriteAllText(path, "<!DOCTYPE html><html><head><title>orig</title></head><body><script>document.title='pwned'</script></body></html>");
        Assert.Equal("pwned", Title(DumpDom(tmp, path)));
    }

    [Fact]
    public void Report_renders_with_images_and_charts_and_runs_no_injected_script()
    {
        using var tmp = new TempDir();
        AuditTests.RunFake(tmp, AuditTests.Evil);
        var dom = DumpDom(tmp, tmp.Sub("out", "report.html"));

        // nothing ran: the title is the report's own, no element was injected
        Assert.Equal(HtmlReport.PageTitle, Title(dom));
        Assert.DoesNotContain("<script", dom, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotMatch(new Regex("<[a-zA-Z][^<>]*\\son[a-z]+=", RegexOptions.IgnoreCase), dom); // no event-handler attribute on any element
        // the prompt shows as text
        Assert.Contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;", dom);
        Assert.Contains("&lt;img src=x onerror=\"document.title='pwned2'\"&gt;", dom);

        // images: every layer thumbnail is an inline PNG that decodes
        var srcs = Regex.Matches(dom, "<img src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\" alt=\"layer (\\d+)\"").ToList();
        Assert.Equal(4 * 12 + 2 * 6, srcs.Count);
        foreach (var m in srcs.Take(3))
        {
            using var bmp = SkiaSharp.SKBitmap.Decode(Convert.FromBase64String(m.Groups[1].Value));
            Assert.NotNull(bmp);
            Assert.Equal(24, bmp.Width);
        }
        // charts: one probability and one cosine chart per run, each with a line per label
        Assert.Equal(2 * 6, Regex.Matches(dom, "<svg[^>]*class=\"chart\"").Count);
        Assert.True(Regex.Matches(dom, "<polyline").Count >= 2 * 2 * 6);
        // the verdict table and the CSP survived parsing
        Assert.Contains("class=\"verdicts\"", dom);
        Assert.Contains(">supported<", dom);
        Assert.Contains(">skipped<", dom);
        Assert.Contains("Content-Security-Policy", dom);
        Assert.Contains("script-src 'none'", dom);
    }
}
