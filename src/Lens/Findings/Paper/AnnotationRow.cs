namespace DiffusionLens.Findings;

/// <summary>
/// One row of a human annotation file: a prompt and seed, and per annotated hidden-state index the label
/// (true present, false absent, null unannotated).
/// </summary>
internal sealed record AnnotationRow(string Prompt, long Seed, IReadOnlyList<bool?> Labels, int Line);
