namespace DiffusionLens.Findings;

/// <summary>What an audit runs for one claim: its model (or why it is skipped), prompt set and runs.</summary>
internal sealed record ClaimPlan
{
    public string Id { get; init; } = "";
    /// <summary>why the claim does not run (no model folder, no prompt set folder); null when it runs</summary>
    public string? Skipped { get; init; }
    public string? ModelDir { get; init; }
    /// <summary>SHA-256 over the weights files' sha256 (as manifest.json's weights_sha256), see <see cref="ModelHash"/></summary>
    public string? ModelHash { get; init; }
    /// <summary>the claim's DeepFloyd IF stage II folder, or null when it has none</summary>
    public string? Stage2Dir { get; init; }
    /// <summary>the stage II's weights hash (as <see cref="ModelHash"/>; part of every run's key), or null</summary>
    public string? Stage2ModelHash { get; init; }
    /// <summary>the prompt set, for claims that have one</summary>
    public PromptSetData? PromptSet { get; init; }
    public IReadOnlyList<long> Seeds { get; init; } = Array.Empty<long>();
    public IReadOnlyList<PlannedRun> Runs { get; init; } = Array.Empty<PlannedRun>();
}
