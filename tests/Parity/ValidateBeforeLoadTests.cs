using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>lens sweep checks its options against the config files before any weights are read.</summary>
public class ValidateBeforeLoadTests
{
    /// <summary>A copy of a model whose weights files are all garbage: any error that is not about them came first.</summary>
    private static string ModelWithCorruptWeights(string name)
    {
        var dir = CliRunner.CopyModel(name);
        foreach (var f in Directory.GetFiles(dir, "*.safetensors", SearchOption.AllDirectories))
            File.WriteAllBytes(f, new byte[] { 0xde, 0xad, 0xbe, 0xef, 1, 2, 3 });
        return dir;
    }

    [Theory]
    [InlineData("if-tiny-a", "24", "0..23")]
    [InlineData("if-tiny-a", "0:30", "1..24")]
    [InlineData("sd-tiny-b", "7", "0..4")]
    public void LayersTypoFailsNamingTheValidRangeBeforeWeightsAreRead(string model, string layers, string range)
    {
        var dir = ModelWithCorruptWeights(model);
        try
        {
            var args = new List<string> { "sweep", "--model", dir, "--prompt", "a cat", "--layers", layers, "--out", CliRunner.TempPath("validate") };
            if (model == "if-tiny-a") args.AddRange(new[] { "--variant", "fp16" });
            var r = CliRunner.Run(args.ToArray());
            Assert.Equal(2, r.ExitCode);
            Assert.Contains(range, r.Stderr);
            Assert.DoesNotContain("safetensors", r.Stderr);
            Assert.DoesNotContain("loading", r.Stderr);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("if-tiny-a", new[] { "--steps", "0" }, "--steps must be at least 1")]
    [InlineData("if-tiny-a", new[] { "--height", "35", "--width", "32" }, "multiples of 2")]
    [InlineData("sd-tiny-b", new[] { "--height", "44", "--width", "32" }, "divisible by 8")]
    public void BadStepsOrSizeFailBeforeWeightsAreRead(string model, string[] extra, string expected)
    {
        var dir = ModelWithCorruptWeights(model);
        try
        {
            var args = new List<string> { "sweep", "--model", dir, "--prompt", "a cat", "--out", CliRunner.TempPath("validate") };
            if (model == "if-tiny-a") args.AddRange(new[] { "--variant", "fp16" });
            args.AddRange(extra);
            var r = CliRunner.Run(args.ToArray());
            Assert.Equal(2, r.ExitCode);
            Assert.Contains(expected, r.Stderr);
            Assert.DoesNotContain("safetensors", r.Stderr);
        }
        finally { Directory.Delete(dir, true); }
    }
}
