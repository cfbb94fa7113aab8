namespace DiffusionLens.Findings;

/// <summary>A prompt-set claim's order counts by the judge and by the annotators, with bootstrap intervals, and the
/// judge's agreement with the annotators.</summary>
internal sealed record PromptSetResult
{
    public string File { get; init; } = "";
    public int Prompts { get; init; }
    public IReadOnlyList<long> Seeds { get; init; } = Array.Empty<long>();
    /// <summary>per (prompt, seed), the judge's emergence order under the claim's rule</summary>
    public OrderTally Judge { get; init; } = new();
    public OrderBootstrap JudgeBootstrap { get; init; } = new();
    /// <summary>the annotators' order over the same (prompt, seed) pairs (those the files hold), if annotations are given</summary>
    public OrderTally? Human { get; init; }
    public OrderBootstrap? HumanBootstrap { get; init; }
    public string? HumanRule { get; init; }
    public string? FirstAnnotations { get; init; }
    public string? SecondAnnotations { get; init; }
    public AgreementReport? Agreement { get; init; }
}
