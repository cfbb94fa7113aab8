namespace DiffusionLens.Findings;

/// <summary><c>runs/CLAIM/KEY.json</c>: one finished run (its sweep's images, the judge's scores, or its error).</summary>
internal sealed record RunRecord
{
    public string Format { get; init; } = FormatName;
    public string Key { get; init; } = "";
    /// <summary>the canonical inputs the key hashes</summary>
    public string Inputs { get; init; } = "";
    public string ModelHash { get; init; } = "";
    /// <summary>the device the run used</summary>
    public string Device { get; init; } = "";
    public RunResult Result { get; init; } = new();

    public const string FormatName = "lens-audit-run/1";
}
