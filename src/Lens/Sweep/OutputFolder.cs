using System.Text.Json.Nodes;

namespace DiffusionLens.Sweep;

/// <summary>
/// Writes a result folder atomically: everything goes into a hidden sibling folder that is renamed into place
/// only when complete, so a failed or interrupted run never leaves a half-written output folder.
/// An existing folder is replaced only with <c>overwrite</c>, and only when it is empty or this tool wrote it (it
/// holds the tool's <c>manifest.json</c> or <c>audit.json</c>); the old folder is moved aside and deleted only after
/// the new one is in place. The current directory, a home folder, a filesystem root and any folder above those are
/// never used as an output folder.
/// </summary>
internal sealed class OutputFolder : IDisposable
{
    public string FinalPath { get; }
    public string WorkPath { get; }
    private bool _committed;

    /// <summary>The files whose presence (with this tool's content) marks a folder as written by this tool.</summary>
    public static readonly string[] MarkerFiles = { "manifest.json", "audit.json" };

    public OutputFolder(string path, bool overwrite)
    {
        FinalPath = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        CheckNotProtected(FinalPath);
        if (File.Exists(FinalPath)) throw new LensException($"output path is a file, not a folder: {FinalPath}");
        if (Directory.Exists(FinalPath) && Directory.EnumerateFileSystemEntries(FinalPath).Any())
        {
            if (!overwrite)
                throw new LensException($"output folder exists and is not empty: {FinalPath} (pass --overwrite to replace it)");
            if (!WrittenByThisTool(FinalPath))
                throw new LensException($"--overwrite replaces only empty folders and folders this tool wrote (holding its {string.Join(" or ", MarkerFiles)}); {FinalPath} holds other files, so it is kept: choose another --out");
        }
        var parent = Path.GetDirectoryName(FinalPath) ?? throw new LensException($"bad output folder {FinalPath}");
        try { Directory.CreateDirectory(parent); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LensException($"cannot create the output folder's parent {parent}: {e.Message}");
        }
        WorkPath = Path.Combine(parent, $".{Path.GetFileName(FinalPath)}.partial-{Environment.ProcessId}");
        try
        {
            if (Directory.Exists(WorkPath)) Directory.Delete(WorkPath, true);
            Directory.CreateDirectory(WorkPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LensException($"cannot write in the output folder's parent {parent}: {e.Message}");
        }
        Interrupt.RegisterPartial(WorkPath);
    }

    /// <summary>Refuses a filesystem root, the current directory, a home folder, or a folder above one of them.</summary>
    public static void CheckNotProtected(string fullPath)
    {
        var p = Path.TrimEndingDirectorySeparator(fullPath);
        if (Path.GetPathRoot(p) is { } root && string.Equals(Path.TrimEndingDirectorySeparator(root), p, StringComparison.Ordinal) || p.Length == 0 || p == "/")
            throw new LensException($"refusing to use the filesystem root {fullPath} as an output folder");
        var cwd = Path.TrimEndingDirectorySeparator(Directory.GetCurrentDirectory());
        if (IsSameOrAbove(p, cwd))
            throw new LensException($"refusing to use {fullPath} as an output folder: it is {(p == cwd ? "the current directory" : "above the current directory")}; pass a new folder, e.g. --out out/sweep");
        foreach (var home in new[] { Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), Environment.GetEnvironmentVariable("HOME") })
        {
            if (string.IsNullOrEmpty(home)) continue;
            var h = Path.TrimEndingDirectorySeparator(Path.GetFullPath(home));
            if (IsSameOrAbove(p, h))
                throw new LensException($"refusing to use {fullPath} as an output folder: it is {(p == h ? "the home folder" : "above the home folder")}; pass a new folder inside it");
        }
    }

    private static bool IsSameOrAbove(string candidate, string of) =>
        of == candidate || of.StartsWith(candidate + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>Whether a folder holds this tool's manifest.json (a sweep) or audit.json (an audit).</summary>
    public static bool WrittenByThisTool(string folder)
    {
        foreach (var name in MarkerFiles)
        {
            var f = Path.Combine(folder, name);
            if (!File.Exists(f)) continue;
            try
            {
                var json = JsonNode.Parse(File.ReadAllText(f)) as JsonObject;
                if (json?["tool"]?.GetValueKind() == System.Text.Json.JsonValueKind.String && (string?)json["tool"] == SweepManifest.ToolName) return true;
                if (json?["format"]?.GetValueKind() == System.Text.Json.JsonValueKind.String && ((string?)json["format"])!.StartsWith("lens-audit/", StringComparison.Ordinal)) return true;
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or IOException or InvalidOperationException) { }
        }
        return false;
    }

    public string PathOf(string name) => Path.Combine(WorkPath, name);

    /// <summary>Moves the finished folder into place; an old folder is moved aside first and deleted only afterwards.</summary>
    public void Commit()
    {
        string? aside = null;
        if (Directory.Exists(FinalPath))
        {
            aside = Path.Combine(Path.GetDirectoryName(FinalPath)!, $".{Path.GetFileName(FinalPath)}.old-{Environment.ProcessId}");
            Directory.Move(FinalPath, aside);
        }
        try
        {
            Directory.Move(WorkPath, FinalPath);
        }
        catch
        {
            if (aside is not null && !Directory.Exists(FinalPath)) Directory.Move(aside, FinalPath);
            throw;
        }
        _committed = true;
        Interrupt.Unregister(WorkPath);
        if (aside is not null)
        {
            try { Directory.Delete(aside, true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
    }

    public void Dispose()
    {
        if (!_committed && Directory.Exists(WorkPath))
        {
            try { Directory.Delete(WorkPath, true); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        Interrupt.Unregister(WorkPath);
    }
}
