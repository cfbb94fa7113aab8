namespace DiffusionLens.Findings;

/// <summary>The order the annotators saw the two nouns appear in: per (prompt, seed), and the tally.</summary>
internal sealed record HumanOrder
{
    public string FirstFile { get; init; } = "";
    public string SecondFile { get; init; } = "";
    public string Rule { get; init; } = RuleText;
    public OrderTally Counts { get; init; } = new();
    public IReadOnlyList<HumanOrderPair> PairList { get; init; } = Array.Empty<HumanOrderPair>();

    public const string RuleText =
        "per (prompt, seed): the first annotated hidden-state index labelled 1 for each noun; the earlier one appeared first, " +
        "equal indices are a tie, a noun never labelled 1 loses to one that is (it counts as the other appearing first), neither = neither noun ever labelled 1";

    /// <summary>
    /// Pairs the rows of the first-noun and second-noun files by (prompt, seed) and orders each pair. A row without a
    /// partner in the other file is an error naming it.
    /// </summary>
    public static HumanOrder Compare(AnnotationFile first, AnnotationFile second)
    {
        var secondRows = second.Rows.ToDictionary(r => (r.Prompt, r.Seed));
        var firstKeys = first.Rows.Select(r => (r.Prompt, r.Seed)).ToHashSet();
        var orphan = second.Rows.FirstOrDefault(r => !firstKeys.Contains((r.Prompt, r.Seed)));
        var pairs = new List<HumanOrderPair>();
        foreach (var r in first.Rows)
        {
            if (!secondRows.TryGetValue((r.Prompt, r.Seed), out var s))
                throw new LensException($"{first.Path}:{r.Line}: prompt \"{r.Prompt}\" with seed {r.Seed} has no row in {second.Path}");
            var a = first.FirstPresent(r);
            var b = second.FirstPresent(s);
            pairs.Add(new HumanOrderPair(r.Prompt, r.Seed, a, b, Emergence.Order(a, b)));
        }
        if (orphan is not null)
            throw new LensException($"{second.Path}:{orphan.Line}: prompt \"{orphan.Prompt}\" with seed {orphan.Seed} has no row in {first.Path}");
        return new HumanOrder
        {
            FirstFile = first.Path,
            SecondFile = second.Path,
            Counts = OrderTally.From(pairs.Select(p => p.Order)),
            PairList = pairs,
        };
    }
}
