namespace DiffusionLens.Findings;

/// <summary>One annotated cell matched to the judge: the judge's presence value of a noun at the lens layer of the
/// cell's hidden-state index, and the annotators' label there.</summary>
internal sealed record AgreementObservation(int Position, string Prompt, long Seed, int HiddenStateIndex, int Layer, double Value, bool Human);
