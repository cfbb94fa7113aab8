using DiffusionLens.Loading;
using TorchSharp;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Bad input gets one clear message naming the problem, a non-zero exit, and no output folder: checked on the real
/// CLI binary with broken copies of the fixture models.
/// </summary>
public class ErrorHandlingTests
{
    private static void AssertFails(CliRunner.Result r, string outDir, params string[] fragments)
    {
        Assert.NotEqual(0, r.ExitCode);
        foreach (var f in fragments) Assert.Contains(f, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr); // a message, not a stack trace
        Assert.False(Directory.Exists(outDir), $"a failed run left an output folder behind: {outDir}");
        var parent = Path.GetDirectoryName(outDir)!;
        Assert.Empty(Directory.GetDirectories(parent, $".{Path.GetFileName(outDir)}.partial-*"));
    }

    private static CliRunner.Result Sweep(string model, string outDir, params string[] extra) =>
        CliRunner.Run(new[] { "sweep", "--model", model, "--prompt", "a cat", "--steps", "2", "--out", outDir, "--quiet" }.Concat(extra).ToArray());

    [Fact]
    public void MissingModelFolder()
    {
        var outDir = CliRunner.TempPath("out");
        AssertFails(Sweep("/nonexistent/model", outDir), outDir, "model folder not found", "/nonexistent/model");
    }

    [Fact]
    public void FolderWithoutModelIndex()
    {
        var dir = Directory.CreateTempSubdirectory("lens-test-empty").FullName;
        var outDir = CliRunner.TempPath("out");
        AssertFails(Sweep(dir, outDir), outDir, "model_index.json");
    }

    [Fact]
    public void TruncatedSafetensorsFile()
    {
        var model = CliRunner.CopyModel("sd-tiny-b");
        var file = Path.Combine(model, "unet", "diffusion_pytorch_model.safetensors");
        var bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes[..(bytes.Length / 2)]);
        var outDir = CliRunner.TempPath("out");
        AssertFails(Sweep(model, outDir), outDir, "corrupt safetensors file", "diffusion_pytorch_model.safetensors");
    }

    [Fact]
    public void GarbageSafetensorsHeader()
    {
        var model = CliRunner.CopyModel("sd-tiny-b");
        var file = Path.Combine(model, "vae", "diffusion_pytorch_model.safetensors");
        File.WriteAllBytes(file, new byte[] { 8, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'x', 1, 2, 3, 4, 5, 6 });
        var outDir = CliRunner.TempPath("out");
        AssertFails(Sweep(model, outDir), outDir, "corrupt safetensors file");
    }

    [Fact]
    public void WrongShapeAndMissingKeyAreNamed()
    {
        var model = CliRunner.CopyModel("sd-tiny-b");
        var file = Path.Combine(model, "unet", "diffusion_pytorch_model.safetensors");
        var sf = new SafetensorsFile(file);
        var tensors = sf.Entries.Keys.OrderBy(k => k).Select(k => KeyValuePair.Create(k, sf.Read(k))).ToList();
        int i = tensors.FindIndex(kv => kv.Key == "conv_in.weight");
        tensors[i] = KeyValuePair.Create("conv_in.weight", torch.zeros(3, 3, 3, 3));
        tensors.RemoveAll(kv => kv.Key == "conv_out.bias");
        SafetensorsFile.Write(file, tensors);
        var outDir = CliRunner.TempPath("out");
        AssertFails(Sweep(model, outDir), outDir, "conv_in.weight", "conv_out.bias", "missing", "shape");
    }

    [Fact]
    public void LayerOutOfRange()
    {
        var outDir = CliRunner.TempPath("out");
        var model = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-b");
        AssertFails(Sweep(model, outDir, "--layers", "0,7"), outDir, "layer 7 is out of range", "5 layers");
    }

    [Fact]
    public void UnknownScheduler()
    {
        var model = CliRunner.CopyModel("sd-tiny-b");
        var cfg = Path.Combine(model, "scheduler", "scheduler_config.json");
        File.WriteAllText(cfg, File.ReadAllText(cfg).Replace("PNDMScheduler", "FancyScheduler"));
        var outDir = CliRunner.TempPath("out");
        AssertFails(Sweep(model, outDir), outDir, "FancyScheduler");
    }

    [Fact]
    public void UnknownOptionAndMissingValue()
    {
        var outDir = CliRunner.TempPath("out");
        AssertFails(CliRunner.Run("sweep", "--prompt", "x", "--out", outDir, "--colour", "red"), outDir, "unknown option '--colour'");
        AssertFails(CliRunner.Run("sweep", "--prompt", "x", "--out", outDir, "--seed"), outDir, "'--seed' needs a value");
        AssertFails(CliRunner.Run("sweep", "--prompt", "x", "--out", outDir, "--steps", "many"), outDir, "'--steps' must be an integer");
        AssertFails(CliRunner.Run("sweep", "--out", outDir), outDir, "'--prompt' is required");
        var r = CliRunner.Run("paint");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("unknown command 'paint'", r.Stderr);
    }

    [Fact]
    public void ExistingNonEmptyOutputFolderIsKept()
    {
        var outDir = Directory.CreateTempSubdirectory("lens-test-keep").FullName;
        File.WriteAllText(Path.Combine(outDir, "mine.txt"), "do not delete");
        var r = Sweep(Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-b"), outDir);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("not empty", r.Stderr);
        Assert.True(File.Exists(Path.Combine(outDir, "mine.txt")));
    }

    [Fact]
    public void EncodeToAMissingFolderFails()
    {
        var r = CliRunner.Run("encode", "--prompt", "x", "--out", "/nonexistent/dir/x.safetensors");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("output folder does not exist", r.Stderr);
    }
}
