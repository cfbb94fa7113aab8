namespace DiffusionLens.Findings;

/// <summary>One prompt of a prompt set with its two nouns in prompt order (the two concepts whose order is measured).</summary>
internal sealed record PromptPair(string Prompt, string Noun0, string Noun1, string? Head = null, string? Dependent = null)
{
    [System.Text.Json.Serialization.JsonIgnore] public IReadOnlyList<string> Concepts => new[] { Noun0, Noun1 };
}
