namespace DiffusionLens.Findings;

/// <summary>A fraction of the (prompt, seed) pairs and its bootstrap interval.</summary>
internal sealed record ConfidenceInterval(double Estimate, double Low, double High);
