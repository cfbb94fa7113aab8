using DiffusionLens.Cli;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Failures that are not <see cref="LensException"/> (libtorch errors, out of memory, I/O, anything) still end as one
/// message line and an exit code, never a stack trace; IF sizes the UNet cannot take are refused up front.
/// </summary>
public class FailureTests
{
    private sealed class Throwing(Exception e) : ICommand
    {
        public string Name => "boom";
        public string Summary => "";
        public string Usage => "";
        public int Run(IReadOnlyList<string> args) => throw e;
    }

    private static (int Code, string Err) RunThrowing(Exception e, params string[] args)
    {
        var err = new StringWriter();
        int code = Program.Run(new Throwing(e), args, err);
        return (code, err.ToString());
    }

    private const string LibTorchStyle = "The size of tensor a (7) must match the size of tensor b (6) at non-singleton dimension 3\nException raised from infer_size_impl at /pytorch/aten/src/ATen/ExpandUtils.cpp:31 (most recent call first):\nframe #0: c10::Error::Error(...) + 0x52";

    [Fact]
    public void LibTorchErrorIsOneLine()
    {
        var (code, err) = RunThrowing(new System.Runtime.InteropServices.ExternalException(LibTorchStyle));
        Assert.Equal(ExitCodes.RunFailed, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.StartsWith("lens boom: error: internal error (ExternalException): The size of tensor a (7)", err);
        Assert.DoesNotContain("frame #0", err);
    }

    [Fact]
    public void OutOfMemoryNamesTheBatchToTry()
    {
        var cuda = new System.Runtime.InteropServices.ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)\nException raised from malloc");
        var (code, err) = RunThrowing(cuda, "--batch", "8", "--device", "cuda");
        Assert.Equal(ExitCodes.RunFailed, code);
        Assert.Contains("out of memory on cuda", err);
        Assert.Contains("try --batch 4 (it was 8)", err);
        Assert.Contains("or --batch-invariant off", err); // auto is on for CUDA: its padded calls take memory
        (_, err) = RunThrowing(cuda, "--batch", "8", "--device", "cuda", "--batch-invariant", "off");
        Assert.DoesNotContain("--batch-invariant", err);
        (_, err) = RunThrowing(new OutOfMemoryException());
        Assert.Contains("--batch is already 1", err);
        Assert.DoesNotContain("--batch-invariant", err); // the CPU: auto is off
        Assert.Single(err.Trim().Split('\n'));
    }

    [Fact]
    public void IoErrorsAndDiskFull()
    {
        var (code, err) = RunThrowing(new IOException("No space left on device : '/out/.x.partial-1/layer-03.png'", 28));
        Assert.Equal(ExitCodes.RunFailed, code);
        Assert.Contains("the disk is full", err);
        (code, err) = RunThrowing(new UnauthorizedAccessException("Access to the path '/ro/x' is denied."));
        Assert.Equal(ExitCodes.RunFailed, code);
        Assert.Contains("permission denied", err);
        (code, err) = RunThrowing(new LensException("bad layer selection"));
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Equal("lens boom: error: bad layer selection", err.Trim());
        (code, _) = RunThrowing(new OperationCanceledException());
        Assert.Equal(ExitCodes.Interrupted, code);
    }

    [Fact]
    public void OneErrorPrefix()
    {
        var r = CliRunner.Run("sweep", "--prompt", "x", "--out", CliRunner.TempPath("o"), "--colour", "red");
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("lens sweep: error: unknown option '--colour'", r.Stderr.Trim());
        Assert.DoesNotContain("sweep: error: sweep:", r.Stderr);
    }

    [Fact]
    public void IfSizeNotDivisibleByTheUNetDownsamplingIsRefusedUpFront()
    {
        var outDir = CliRunner.TempPath("if26");
        var model = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "if-tiny-b");
        var r = CliRunner.Run("sweep", "--model", model, "--prompt", "a cat", "--steps", "1", "--height", "26", "--width", "24", "--out", outDir, "--quiet");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("multiples of 4", r.Stderr);
        Assert.Contains("26x24", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.False(Directory.Exists(outDir));
    }
}
