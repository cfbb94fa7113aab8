namespace DiffusionLens.Findings;

/// <summary>
/// Over (prompt, seed) pairs: in how many the first noun appeared at an earlier layer than the second, the second
/// earlier, both at the same layer (ties), or neither ever. A pair where only one noun ever appears counts for that
/// noun (it appeared first), as <see cref="Emergence.Order"/> rules.
/// </summary>
internal sealed record OrderTally
{
    public int FirstBeforeSecond { get; init; }
    public int SecondBeforeFirst { get; init; }
    public int Ties { get; init; }
    public int Neither { get; init; }
    public int Pairs { get; init; }

    public static OrderTally From(IEnumerable<ConceptOrder> orders)
    {
        var list = orders.ToList();
        return new OrderTally
        {
            FirstBeforeSecond = list.Count(o => o == ConceptOrder.First),
            SecondBeforeFirst = list.Count(o => o == ConceptOrder.Second),
            Ties = list.Count(o => o == ConceptOrder.Simultaneous),
            Neither = list.Count(o => o == ConceptOrder.Neither),
            Pairs = list.Count,
        };
    }

    public int Of(ConceptOrder o) => o switch
    {
        ConceptOrder.First => FirstBeforeSecond,
        ConceptOrder.Second => SecondBeforeFirst,
        ConceptOrder.Simultaneous => Ties,
        _ => Neither,
    };

    public override string ToString() => $"first before second {FirstBeforeSecond}, second before first {SecondBeforeFirst}, ties {Ties}, neither {Neither} ({Pairs} pairs)";
}
