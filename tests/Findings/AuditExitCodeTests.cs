using DiffusionLens.Cli;
using DiffusionLens.Cli.Commands;
using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// `lens audit` exit codes a CI job can read: 0 every claim that ran is supported, 1 a verdict listed in --fail-on
/// (default contradicted, inconclusive) or failed runs, 2 usage/input errors, 3 nothing ran (all skipped).
/// </summary>
public class AuditExitCodeTests
{
    private static AuditReport Report(params Verdict[] verdicts) =>
        new() { Claims = verdicts.Select((v, i) => new ClaimResult { Id = $"c{i}", Verdict = v }).ToList() };

    [Theory]
    [InlineData(0, null, "Supported", "Supported")]
    [InlineData(1, null, "Supported", "Contradicted")]
    [InlineData(1, null, "Inconclusive")]
    [InlineData(1, null, "Supported", "Error")]
    [InlineData(3, null, "Skipped", "Skipped")]
    [InlineData(0, null, "Supported", "Skipped")]
    [InlineData(1, "skipped", "Supported", "Skipped")]
    [InlineData(0, "contradicted", "Supported", "Inconclusive")]
    [InlineData(1, "contradicted", "Contradicted")]
    [InlineData(0, "none", "Contradicted", "Inconclusive")]
    [InlineData(1, "none", "Error")]
    [InlineData(3, "none", "Skipped")]
    public void Exit_code_by_verdicts(int expected, string? failOn, params string[] verdicts) =>  // Verdict names: the enum is internal
        Assert.Equal(expected, AuditCommand.ExitCode(Report(verdicts.Select(Enum.Parse<Verdict>).ToArray()), AuditCommand.ParseFailOn(failOn)));

    [Fact]
    public void An_audit_without_claims_ran_nothing() =>
        Assert.Equal(ExitCodes.NothingRan, AuditCommand.ExitCode(Report(), AuditCommand.DefaultFailOn));

    [Fact]
    public void Bad_fail_on_is_a_usage_error()
    {
        Assert.Contains("unknown verdict 'supported'", Assert.Throws<LensException>(() => AuditCommand.ParseFailOn("supported")).Message);
        Assert.Throws<LensException>(() => AuditCommand.ParseFailOn(","));
        Assert.Equal(new[] { Verdict.Contradicted, Verdict.Skipped }.ToHashSet(), AuditCommand.ParseFailOn("Contradicted, skipped").ToHashSet());
    }

    [Fact]
    public void Command_exit_codes_and_batch_pass_through()
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var claims = AuditTests.WriteClaims(tmp);
        var runner = AuditTests.Runner();
        int Run(string outName, params string[] extra)
        {
            var cmd = new AuditCommand(_ => runner, _ => JudgeCommandTests.HashTokenizer());
            return cmd.Run(new[] { "--claims", claims, "--out", tmp.Sub(outName), "--clip", Repo.TinyClipDir }.Concat(extra).ToArray());
        }
        Assert.Equal(ExitCodes.NothingRan, Run("skipped", "--only", "fake-missing"));
        Assert.Equal(ExitCodes.Ok, Run("ok", "--only", "fake-first,fake-missing", "--seeds", "1,2,3", "--batch", "3"));
        Assert.All(runner.Requests, r => Assert.Equal(3, r.Batch));
        Assert.Equal(ExitCodes.AuditFailed, Run("skip-fails", "--only", "fake-first,fake-missing", "--seeds", "1,2,3", "--fail-on", "skipped"));
        Assert.Equal(ExitCodes.AuditFailed, Run("not-supported", "--only", "fake-if", "--seeds", "1,2,3"));
        Assert.Equal(ExitCodes.Ok, Run("not-supported-allowed", "--only", "fake-if", "--seeds", "1,2,3", "--fail-on", "none"));
    }

    [Fact]
    public void Usage_errors_exit_2_through_the_cli()
    {
        var err = new StringWriter();
        int code = Program.Run(new AuditCommand(), new[] { "--claims", "/nonexistent/claims.json", "--out", "/tmp/x", "--fail-on", "sometimes" }, err);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("lens audit: error: option '--fail-on'", err.ToString());
        Assert.DoesNotContain("   at ", err.ToString());
    }
}
