using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>A step count whose schedule leaves the training timesteps is a usage error before loading, not a crash.</summary>
public class StepCountValidationTests
{
    [Fact]
    public void TooManyStepsForThePndmScheduleIsAUsageError()
    {
        var outDir = CliRunner.TempPath("steps1000");
        var r = CliRunner.Run("sweep", "--prompt", "a cat", "--steps", "1000", "--out", outDir);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--steps 1000", r.Stderr);
        Assert.Contains("training timesteps", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.DoesNotContain("internal error", r.Stderr);
        Assert.False(Directory.Exists(outDir));
    }
}
