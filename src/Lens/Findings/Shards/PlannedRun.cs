namespace DiffusionLens.Findings;

/// <summary>One (claim, prompt, seed) run of an audit, keyed by everything its result depends on.</summary>
internal sealed record PlannedRun
{
    /// <summary>SHA-256 (hex) of <see cref="RunKey.Inputs"/>: the name of the run's result file</summary>
    public string Key { get; init; } = "";
    public string Inputs { get; init; } = "";
    public string ClaimId { get; init; } = "";
    public int PromptIndex { get; init; }
    public string Prompt { get; init; } = "";
    public IReadOnlyList<string> Concepts { get; init; } = Array.Empty<string>();
    public long Seed { get; init; }
    /// <summary>the sweep folder, relative to the audit folder</summary>
    public string OutDir { get; init; } = "";
}
