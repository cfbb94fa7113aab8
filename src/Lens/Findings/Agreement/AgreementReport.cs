namespace DiffusionLens.Findings;

/// <summary>
/// How well the judge's presence calls (value &gt;= threshold at a layer) match the annotators' labels at the same
/// hidden-state index: per noun position at the claim's threshold, and the threshold that matches the annotators best,
/// fitted on half the prompts and reported on the other half.
/// </summary>
internal sealed record AgreementReport
{
    public string Model { get; init; } = "";
    public string LayerMapping { get; init; } = HiddenStateMapping.Description;
    public string Pairing { get; init; } = AgreementAnalysis.PairingText;
    public string Metric { get; init; } = "prob";
    /// <summary>the claim's presence threshold</summary>
    public double Threshold { get; init; }
    /// <summary>annotated cells compared</summary>
    public int Cells { get; init; }
    /// <summary>annotated cells at a hidden-state index without a lens image in the run (index 0, or a layer not swept)</summary>
    public int CellsWithoutLayer { get; init; }
    /// <summary>runs with no annotation row for their (prompt, seed) in one of the files</summary>
    public int RunsWithoutAnnotations { get; init; }
    /// <summary>per noun position and all together, at the claim's threshold</summary>
    public IReadOnlyList<AgreementGroup> Groups { get; init; } = Array.Empty<AgreementGroup>();
    public string Split { get; init; } = AgreementAnalysis.SplitText;
    public IReadOnlyList<string> FitPrompts { get; init; } = Array.Empty<string>();
    public IReadOnlyList<string> HeldOutPrompts { get; init; } = Array.Empty<string>();
    public string Selection { get; init; } = AgreementAnalysis.SelectionText;
    /// <summary>the threshold with the highest kappa on the fitting prompts (null when kappa is undefined throughout)</summary>
    public double? BestThreshold { get; init; }
    /// <summary>at the best threshold, on the held-out prompts</summary>
    public AgreementGroup? HeldOut { get; init; }
    /// <summary>at the claim's threshold, on the held-out prompts (to compare with)</summary>
    public AgreementGroup? HeldOutAtClaimThreshold { get; init; }
    public IReadOnlyList<ThresholdPoint> Sweep { get; init; } = Array.Empty<ThresholdPoint>();
}
