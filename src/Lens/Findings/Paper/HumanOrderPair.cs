namespace DiffusionLens.Findings;

/// <summary>One (prompt, seed) of the human annotations: the first hidden-state index labelled present for each noun
/// (null: never) and the resulting order.</summary>
internal sealed record HumanOrderPair(string Prompt, long Seed, int? FirstNounIndex, int? SecondNounIndex, ConceptOrder Order);
