namespace DiffusionLens.Findings;

/// <summary>Agreement at one presence threshold, on the fitting half of the prompts and on the held-out half.</summary>
internal sealed record ThresholdPoint(double Threshold, double? FitKappa, double? FitAccuracy, double? HeldOutKappa, double? HeldOutAccuracy);
