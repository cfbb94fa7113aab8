using DiffusionLens.Sweep;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// --overwrite replaces only folders this tool wrote (its manifest.json / audit.json) or empty ones, never the current
/// directory, a home folder or /, and keeps the old folder until the new one is complete.
/// </summary>
[Collection("pipelines")]
public class OutputSafetyTests
{
    private static string Tiny => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-b");

    private static CliRunner.Result Sweep(string outDir, params string[] extra) =>
        CliRunner.Run(new[] { "sweep", "--model", Tiny, "--prompt", "a cat", "--steps", "1", "--layers", "0", "--out", outDir, "--quiet" }.Concat(extra).ToArray());

    [Fact]
    public void OverwriteRefusesAFolderThisToolDidNotWrite()
    {
        var outDir = Directory.CreateTempSubdirectory("lens-test-foreign").FullName;
        File.WriteAllText(Path.Combine(outDir, "thesis.tex"), "mine");
        File.WriteAllText(Path.Combine(outDir, "manifest.json"), "{\"tool\": \"something-else\"}");
        var r = Sweep(outDir, "--overwrite");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("only empty folders and folders this tool wrote", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.True(File.Exists(Path.Combine(outDir, "thesis.tex")));
    }

    [Fact]
    public void OverwriteReplacesAPreviousSweepAndAnEmptyFolder()
    {
        var outDir = CliRunner.TempPath("out");
        var first = Sweep(outDir);
        Assert.True(first.ExitCode == 0, first.Stderr);
        File.WriteAllText(Path.Combine(outDir, "stale.txt"), "from the first run");
        var again = Sweep(outDir);
        Assert.NotEqual(0, again.ExitCode); // without --overwrite it is kept
        Assert.True(File.Exists(Path.Combine(outDir, "stale.txt")));
        var second = Sweep(outDir, "--overwrite");
        Assert.True(second.ExitCode == 0, second.Stderr);
        Assert.False(File.Exists(Path.Combine(outDir, "stale.txt")));
        Assert.True(File.Exists(Path.Combine(outDir, "manifest.json")));
        var parent = Path.GetDirectoryName(outDir)!;
        Assert.Empty(Directory.GetDirectories(parent, $".{Path.GetFileName(outDir)}.*"));

        var empty = Directory.CreateTempSubdirectory("lens-test-empty-out").FullName;
        var third = Sweep(empty, "--overwrite");
        Assert.True(third.ExitCode == 0, third.Stderr);
        Assert.True(File.Exists(Path.Combine(empty, "layer-00.png")));
    }

    [Fact]
    public void CurrentDirectoryHomeAndRootAreRefused()
    {
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        foreach (var (path, why) in new[] { ("/", "filesystem root"), (home, "home folder"), (Path.GetDirectoryName(home)!, "refusing to use"), (".", "current directory") })
        {
            if (string.IsNullOrEmpty(path)) continue;
            var r = Sweep(path, "--overwrite");
            Assert.Equal(2, r.ExitCode);
            Assert.Contains(why, r.Stderr);
            Assert.DoesNotContain("   at ", r.Stderr);
        }
        Assert.True(Directory.Exists(home));
    }

    [Fact]
    public void ProtectedPathsAreRefusedInProcess()
    {
        var cwd = Directory.GetCurrentDirectory();
        Assert.Throws<LensException>(() => OutputFolder.CheckNotProtected(cwd));
        Assert.Throws<LensException>(() => OutputFolder.CheckNotProtected(Path.GetDirectoryName(cwd)!));
        Assert.Throws<LensException>(() => OutputFolder.CheckNotProtected("/"));
        OutputFolder.CheckNotProtected(Path.Combine(cwd, "out", "sweep")); // below them is fine
    }

    [Fact]
    public void FailedCommitKeepsTheOldFolder()
    {
        var outDir = CliRunner.TempPath("commit");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "audit.json"), "{\"format\": \"lens-audit/1\"}");
        using (var folder = new OutputFolder(outDir, overwrite: true))
        {
            File.WriteAllText(folder.PathOf("audit.json"), "{\"format\": \"lens-audit/1\", \"new\": true}");
            // dispose without commit: the old folder stays, the partial one goes
        }
        Assert.Contains("lens-audit/1", File.ReadAllText(Path.Combine(outDir, "audit.json")));
        Assert.DoesNotContain("new", File.ReadAllText(Path.Combine(outDir, "audit.json")));
        Assert.Empty(Directory.GetDirectories(Path.GetDirectoryName(outDir)!, $".{Path.GetFileName(outDir)}.*"));
        using (var folder = new OutputFolder(outDir, overwrite: true))
        {
            File.WriteAllText(folder.PathOf("audit.json"), "{\"format\": \"lens-audit/1\", \"new\": true}");
            folder.Commit();
        }
        Assert.Contains("new", File.ReadAllText(Path.Combine(outDir, "audit.json")));
        Assert.Empty(Directory.GetDirectories(Path.GetDirectoryName(outDir)!, $".{Path.GetFileName(outDir)}.*"));
    }
}
