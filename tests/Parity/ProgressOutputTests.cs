using DiffusionLens.Cli;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Progress output: one updating line on a terminal, plain lines when stderr is redirected, nothing with --quiet.
/// </summary>
public class ProgressOutputTests
{
    [Fact]
    public void RedirectedSweepPrintsPlainProgressLines()
    {
        var outDir = CliRunner.TempPath("progress");
        try
        {
            var r = CliRunner.Run("sweep", "--prompt", "x", "--layers", "0", "--steps", "2", "--out", outDir);
            Assert.True(r.ExitCode == ExitCodes.Ok, r.Stderr);
            Assert.DoesNotContain("\r", r.Stderr, StringComparison.Ordinal);
            Assert.DoesNotContain("\x1b", r.Stderr, StringComparison.Ordinal);
            var lines = r.Stderr.Split('\n');
            Assert.Contains("  layer 0 [1/1] step 1/3", lines);
            Assert.Contains("  layer 0 [1/1] step 3/3", lines);
            Assert.Contains(lines, l => l.StartsWith("encoded the prompt once", StringComparison.Ordinal));
            Assert.StartsWith("wrote 1 layer image(s)", r.Stdout);
        }
        finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
    }

    [Fact]
    public void QuietSweepPrintsNothingOnSuccess()
    {
        var outDir = CliRunner.TempPath("quiet");
        try
        {
            var r = CliRunner.Run("sweep", "--prompt", "x", "--layers", "0", "--steps", "2", "--out", outDir, "--quiet");
            Assert.Equal(ExitCodes.Ok, r.ExitCode);
            Assert.Equal("", r.Stdout);
            Assert.Equal("", r.Stderr);
            Assert.True(File.Exists(Path.Combine(outDir, "manifest.json")));
        }
        finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
    }

    [Fact]
    public void QuietSweepStillPrintsItsError()
    {
        var r = CliRunner.Run("sweep", "--prompt", "x", "--layers", "12", "--steps", "2", "--out", CliRunner.TempPath("quiet-err"), "--quiet");
        Assert.Equal(ExitCodes.Usage, r.ExitCode);
        Assert.Equal("", r.Stdout);
        Assert.StartsWith("lens sweep: error: bad layer selection '12'", r.Stderr);
    }

    [Fact]
    public void OnATerminalStepsUpdateOneLine()
    {
        var w = new StringWriter();
        using (var p = new ProgressLog(quiet: false, w, terminal: true))
        {
            p.Line("loading");
            p.Step("  layer 0 [1/1] step 1/3");
            p.Step("  layer 0 [1/1] step 2/3");
            p.Line("--batch auto: retrying");
            p.Step("  layer 0 [1/1] step 3/3");
        }
        var nl = Environment.NewLine;
        Assert.Equal($"loading{nl}\r\x1b[Klayer 0 [1/1] step 1/3\r\x1b[Klayer 0 [1/1] step 2/3\r\x1b[K--batch auto: retrying{nl}\r\x1b[Klayer 0 [1/1] step 3/3{nl}", w.ToString());
    }

    [Fact]
    public void RedirectedAndQuietProgressLog()
    {
        var plain = new StringWriter();
        using (var p = new ProgressLog(quiet: false, plain, terminal: false)) { p.Step("  layer 0 step 1/2"); p.Step("  layer 0 step 2/2"); }
        Assert.Equal($"  layer 0 step 1/2{Environment.NewLine}  layer 0 step 2/2{Environment.NewLine}", plain.ToString());
        var quiet = new StringWriter();
        using (var p = new ProgressLog(quiet: true, quiet, terminal: true)) { p.Line("x"); p.Step("y"); }
        Assert.Equal("", quiet.ToString());
    }
}
