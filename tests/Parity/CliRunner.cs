using System.Diagnostics;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>Runs the real `lens` CLI (lens.dll beside the tests) in a child process.</summary>
public static class CliRunner
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static Result Run(params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "lens.dll");
        if (!File.Exists(dll)) throw new FileNotFoundException("lens.dll is not beside the test binaries", dll);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5))) { p.Kill(true); throw new TimeoutException("lens did not finish in 5 minutes"); }
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>A copy of a fixture model in a fresh temp folder, to break on purpose.</summary>
    public static string CopyModel(string name)
    {
        var src = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);
        var dst = Path.Combine(Path.GetTempPath(), $"lens-test-{name}-{Guid.NewGuid():N}");
        foreach (var f in Directory.GetFiles(src, "*", SearchOption.AllDirectories))
        {
            var to = Path.Combine(dst, Path.GetRelativePath(src, f));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(f, to);
        }
        return dst;
    }

    public static string TempPath(string stem) => Path.Combine(Path.GetTempPath(), $"lens-test-{stem}-{Guid.NewGuid():N}");
}
