using System.Text.Json;
using DiffusionLens.Judge;

namespace DiffusionLens.Findings;

/// <summary>
/// The finished runs of an audit folder: <c>runs/CLAIM/KEY.json</c>, each written atomically (a temporary file in the
/// same folder renamed over the name), so a run interrupted at any point leaves either its complete record or none.
/// </summary>
internal sealed class RunStore
{
    public const string FolderName = "runs";
    public string Folder { get; }

    public RunStore(string auditDir) => Folder = Path.Combine(Path.GetFullPath(auditDir), FolderName);

    public string PathOf(PlannedRun run) => Path.Combine(Folder, run.ClaimId, run.Key + ".json");

    /// <summary>The run's record, or null when it has none (or a damaged one, which is then redone).</summary>
    public RunRecord? TryLoad(PlannedRun run)
    {
        var path = PathOf(run);
        if (!File.Exists(path)) return null;
        try
        {
            var r = JsonSerializer.Deserialize<RunRecord>(File.ReadAllText(path), FindingsJson.Options);
            return r is { Format: RunRecord.FormatName } && r.Key == run.Key ? r : null;
        }
        catch (JsonException) { return null; }
    }

    public void Save(RunRecord record, PlannedRun run)
    {
        var path = PathOf(run);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var tmp = $"{path}.tmp-{Environment.ProcessId}-{Environment.CurrentManagedThreadId}";
        File.WriteAllText(tmp, JsonSerializer.Serialize(record, FindingsJson.Options) + "\n");
        File.Move(tmp, path, overwrite: true);
    }
}
