using System.Diagnostics;
using System.Text.RegularExpressions;
using DiffusionLens.Cli;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Ctrl-C on a real <c>lens sweep</c> child process: SIGINT once it is demonstrably mid-run (a progress line on stderr
/// and its hidden partial folder on disk) ends it with exit code 130, one error line, no stack trace, no partial or
/// temporary folder left, and the target folder absent, or, with --overwrite over an earlier run, that run intact.
/// Waits on what the process prints, never on fixed sleeps (a loaded 2-core machine may be many times slower).
/// </summary>
public class InterruptTests
{
    // far more steps than the wait for the first one: the run cannot finish before it is interrupted (0.3 s a step on
    // an idle 2-core CPU, so about 4 minutes; it stops within a step of the signal)
    private const string ManySteps = "800";
    private static readonly TimeSpan StartTimeout = TimeSpan.FromMinutes(5);
    private static readonly TimeSpan StopTimeout = TimeSpan.FromMinutes(3);

    [Fact]
    public void SigintMidRunExits130AndLeavesNothing()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) Assert.Skip("SIGINT is a POSIX signal");
        var parent = CliRunner.TempPath("interrupt");
        Directory.CreateDirectory(parent);
        try
        {
            var r = RunAndInterrupt(parent, "--out", Path.Combine(parent, "sweep"));
            AssertInterrupted(r);
            Assert.Empty(Directory.EnumerateFileSystemEntries(parent)); // no target, no .sweep.partial-*, no .sweep.old-*
        }
        finally { Directory.Delete(parent, true); }
    }

    [Fact]
    public void SigintWithOverwriteKeepsTheEarlierRun()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) Assert.Skip("SIGINT is a POSIX signal");
        var parent = CliRunner.TempPath("interrupt-overwrite");
        var outDir = Path.Combine(parent, "sweep");
        try
        {
            var first = CliRunner.Run("sweep", "--prompt", "a red ball", "--layers", "0", "--steps", "2", "--quiet", "--out", outDir);
            Assert.True(first.ExitCode == ExitCodes.Ok, first.Stderr);
            var before = Snapshot(outDir);
            Assert.Contains("manifest.json", before.Keys);

            var r = RunAndInterrupt(parent, "--overwrite", "--out", outDir);
            AssertInterrupted(r);
            Assert.Equal(new[] { "sweep" }, Directory.EnumerateFileSystemEntries(parent).Select(Path.GetFileName).ToArray());
            var after = Snapshot(outDir);
            Assert.Equal(before.Keys.Order(), after.Keys.Order());
            foreach (var (name, bytes) in before) Assert.True(bytes.SequenceEqual(after[name]), $"{name} changed");
        }
        finally { if (Directory.Exists(parent)) Directory.Delete(parent, true); }
    }

    private sealed record Interrupted(int ExitCode, List<string> Stderr, string Stdout);

    /// <summary>Starts lens sweep, waits for its first step line and its partial folder, sends SIGINT, waits for the end.</summary>
    private static Interrupted RunAndInterrupt(string parent, params string[] outArgs)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "lens.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { dll, "sweep", "--prompt", "a few people in the ocean", "--layers", "0", "--steps", ManySteps }.Concat(outArgs))
            psi.ArgumentList.Add(a);
        var lines = new List<string>();
        var stepped = new ManualResetEventSlim();
        using var p = new Process { StartInfo = psi };
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (lines) lines.Add(e.Data);
            if (Regex.IsMatch(e.Data, @"step \d+/\d+")) stepped.Set();
        };
        var stdout = new System.Text.StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        p.Start();
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        try
        {
            // mid-run: a step was printed, and the hidden partial output folder exists
            var deadline = DateTime.UtcNow + StartTimeout;
            while (!stepped.Wait(TimeSpan.FromMilliseconds(200)))
            {
                Assert.False(p.HasExited, $"lens sweep ended before its first step:\n{string.Join("\n", Snapshot(lines))}");
                Assert.True(DateTime.UtcNow < deadline, $"no step line within {StartTimeout}:\n{string.Join("\n", Snapshot(lines))}");
            }
            Assert.False(p.HasExited, "lens sweep ended before it could be interrupted");
            Assert.NotEmpty(Directory.GetDirectories(parent, ".sweep.partial-*", new EnumerationOptions { AttributesToSkip = 0 }));
            SendSigint(p.Id);
            Assert.True(p.WaitForExit(StopTimeout), $"lens sweep did not stop within {StopTimeout} of SIGINT");
            p.WaitForExit(); // drains the redirected streams
            return new Interrupted(p.ExitCode, Snapshot(lines), stdout.ToString());
        }
        finally
        {
            if (!p.HasExited) p.Kill(true);
        }
    }

    private static void AssertInterrupted(Interrupted r)
    {
        var all = string.Join("\n", r.Stderr);
        Assert.True(r.ExitCode == ExitCodes.Interrupted, $"exit code {r.ExitCode}, expected {ExitCodes.Interrupted}:\n{all}");
        var errors = r.Stderr.Where(l => l.Contains("error", StringComparison.OrdinalIgnoreCase)).ToList();
        var error = Assert.Single(errors);
        Assert.StartsWith("lens sweep: error: interrupted", error);
        Assert.DoesNotContain(r.Stderr, l => Regex.IsMatch(l, @"^\s+at \S") || l.Contains("Exception") || l.Contains("Unhandled"));
        Assert.DoesNotContain("wrote", r.Stdout);
    }

    private static void SendSigint(int pid)
    {
        // the shell's own kill builtin: present wherever sh is, unlike a kill binary
        using var k = Process.Start(new ProcessStartInfo("sh") { ArgumentList = { "-c", $"kill -INT {pid}" }, UseShellExecute = false })!;
        Assert.True(k.WaitForExit(TimeSpan.FromMinutes(1)) && k.ExitCode == 0, $"kill -INT {pid} failed");
    }

    private static List<string> Snapshot(List<string> lines)
    {
        lock (lines) return lines.ToList();
    }

    private static Dictionary<string, byte[]> Snapshot(string folder) =>
        Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f), File.ReadAllBytes);
}
