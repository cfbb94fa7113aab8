using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>lens encode never replaces an existing file unless told to, and then only a .safetensors file.</summary>
public class EncodeOutputTests
{
    [Fact]
    public void ExistingOutIsKeptWithoutOverwriteAndReplacedWithIt()
    {
        var file = CliRunner.TempPath("encode-out") + ".safetensors";
        File.WriteAllText(file, "keep me");
        try
        {
            var r = CliRunner.Run("encode", "--prompt", "a cat", "--out", file, "--model", Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-b"));
            Assert.Equal(2, r.ExitCode);
            Assert.Contains("--overwrite", r.Stderr);
            Assert.Equal("keep me", File.ReadAllText(file));
            r = CliRunner.Run("encode", "--prompt", "a cat", "--out", file, "--overwrite", "--model", Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-b"));
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.NotEqual("keep me", File.ReadAllText(file));
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public void OverwriteRefusesAFileThatIsNotSafetensors()
    {
        var file = CliRunner.TempPath("encode-out") + ".txt";
        File.WriteAllText(file, "keep me");
        try
        {
            var r = CliRunner.Run("encode", "--prompt", "a cat", "--out", file, "--overwrite", "--model", Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-b"));
            Assert.Equal(2, r.ExitCode);
            Assert.Contains(".safetensors", r.Stderr);
            Assert.Equal("keep me", File.ReadAllText(file));
        }
        finally { File.Delete(file); }
    }
}
