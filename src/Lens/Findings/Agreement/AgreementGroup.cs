namespace DiffusionLens.Findings;

/// <summary>Agreement of the judge with the annotators on one group of cells (a noun position, or all).</summary>
internal sealed record AgreementGroup
{
    public string Model { get; init; } = "";
    /// <summary>"noun_0", "noun_1" or "all"</summary>
    public string Position { get; init; } = "";
    public double Threshold { get; init; }
    public ConfusionTable Confusion { get; init; } = new();
    public double? Accuracy { get; init; }
    public double? Kappa { get; init; }

    public static AgreementGroup Of(string model, string position, double threshold, IEnumerable<AgreementObservation> obs)
    {
        var t = ConfusionTable.From(obs.Select(o => (o.Value >= threshold, o.Human)));
        return new AgreementGroup { Model = model, Position = position, Threshold = threshold, Confusion = t, Accuracy = t.Accuracy, Kappa = t.Kappa };
    }
}
