using DiffusionLens.Cli;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The CLI's native-stderr filter (src/Lens.Cli/NativeStderrFilter.cs): libtorch's "Could not initialize NNPACK!"
/// warnings are dropped, everything else (the CLI's own messages and errors) still reaches stderr.
/// </summary>
public class NativeStderrTests
{
    [Fact]
    public void CpuSweepOfTheEmbeddedModelPrintsNoNnpackWarnings()
    {
        var outDir = CliRunner.TempPath("nnpack");
        try
        {
            var r = CliRunner.Run("sweep", "--prompt", "x", "--layers", "0", "--steps", "2", "--out", outDir);
            Assert.True(r.ExitCode == ExitCodes.Ok, r.Stderr);
            Assert.DoesNotContain("NNPACK", r.Stderr);
            Assert.DoesNotContain("NNPACK", r.Stdout);
            // the CLI's own progress lines still arrive, complete
            Assert.Contains("encoded the prompt once", r.Stderr);
            Assert.Contains("step 3/3", r.Stderr);
            Assert.True(File.Exists(Path.Combine(outDir, "layer-00.png")));
        }
        finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
    }

    [Fact]
    public void AnErrorStillReachesStderrWithItsExitCode()
    {
        var outDir = CliRunner.TempPath("nnpack-err");
        var r = CliRunner.Run("sweep", "--prompt", "x", "--layers", "99", "--steps", "2", "--out", outDir);
        Assert.Equal(ExitCodes.Usage, r.ExitCode);
        Assert.Contains("lens sweep: error: bad layer selection '99'", r.Stderr);
        Assert.DoesNotContain("NNPACK", r.Stderr);
        Assert.False(Directory.Exists(outDir));
    }

    [Theory]
    [InlineData("[W1130 20:29:39.944367282 NNPACK.cpp:56] Could not initialize NNPACK! Reason: Unsupported hardware.\n", true)]
    [InlineData("lens sweep: error: something NNPACK-related\n", false)]
    [InlineData("terminate called after throwing an instance of 'c10::Error'\n", false)]
    public void OnlyLibtorchsNnpackWarningIsNoise(string line, bool noise) => Assert.Equal(noise, NativeStderrFilter.IsNoise(line));
}
