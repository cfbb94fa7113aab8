namespace DiffusionLens.Sweep;

/// <summary>
/// Writes a result folder atomically: everything goes into a hidden sibling folder that is renamed into place
/// only when complete, so a failed or interrupted run never leaves a half-written output folder.
/// </summary>
public sealed class OutputFolder : IDisposable
{
    public string FinalPath { get; }
    public string WorkPath { get; }
    private bool _committed;

    public OutputFolder(string path, bool overwrite)
    {
        FinalPath = Path.GetFullPath(path);
        if (File.Exists(FinalPath)) throw new LensException($"output path is a file, not a folder: {FinalPath}");
        if (Directory.Exists(FinalPath) && Directory.EnumerateFileSystemEntries(FinalPath).Any() && !overwrite)
            throw new LensException($"output folder exists and is not empty: {FinalPath} (pass --overwrite to replace it)");
        var parent = Path.GetDirectoryName(FinalPath) ?? throw new LensException($"bad output folder {FinalPath}");
        try { Directory.CreateDirectory(parent); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LensException($"cannot create the output folder's parent {parent}: {e.Message}");
        }
        WorkPath = Path.Combine(parent, $".{Path.GetFileName(FinalPath)}.partial-{Environment.ProcessId}");
        if (Directory.Exists(WorkPath)) Directory.Delete(WorkPath, true);
        Directory.CreateDirectory(WorkPath);
    }

    public string PathOf(string name) => Path.Combine(WorkPath, name);

    public void Commit()
    {
        if (Directory.Exists(FinalPath)) Directory.Delete(FinalPath, true);
        Directory.Move(WorkPath, FinalPath);
        _committed = true;
    }

    public void Dispose()
    {
        if (!_committed && Directory.Exists(WorkPath))
        {
            try { Directory.Delete(WorkPath, true); } catch (IOException) { }
        }
    }
}
