namespace DiffusionLens.Findings;

/// <summary>What a concept's presence is read from.</summary>
internal enum PresenceMetric
{
    /// <summary>the softmax probability over the scored labels (logit_scale * cosine)</summary>
    Prob,
    /// <summary>the raw cosine similarity of image and concept text</summary>
    Cosine,
}

/// <summary>How the emergence layer is picked from a presence curve.</summary>
internal enum EmergenceRule
{
    /// <summary>the first layer from which the concept stays present through the last layer</summary>
    Stay,
    /// <summary>the first layer where the concept is present at all</summary>
    First,
}

/// <summary>Which concept of a pair emerged first in one sweep.</summary>
internal enum ConceptOrder
{
    /// <summary>the first concept emerged at an earlier layer than the second, or only the first emerged</summary>
    First,
    /// <summary>the second concept emerged earlier, or only the second emerged</summary>
    Second,
    /// <summary>both emerged at the same layer</summary>
    Simultaneous,
    /// <summary>neither emerged</summary>
    Neither,
}

internal enum Verdict
{
    Supported,
    Contradicted,
    Inconclusive,
    Skipped,
    Error,
}

/// <summary>Parameters of the analysis; the claims file states them (its defaults and per-claim overrides).</summary>
internal sealed record AnalysisOptions
{
    public PresenceMetric Metric { get; init; } = PresenceMetric.Prob;
    /// <summary>present means value &gt;= threshold</summary>
    public double Threshold { get; init; } = 0.35;
    public EmergenceRule Rule { get; init; } = EmergenceRule.Stay;
    /// <summary>fraction of the runs that must show the expected order (and more runs than show the opposite)</summary>
    public double MinFraction { get; init; } = 0.5;

    public void Validate(string where)
    {
        if (!double.IsFinite(Threshold)) throw new LensException($"{where}: threshold must be a number");
        if (Metric == PresenceMetric.Prob && (Threshold <= 0 || Threshold > 1))
            throw new LensException($"{where}: threshold {Threshold} for metric prob must be in (0, 1]");
        if (Metric == PresenceMetric.Cosine && (Threshold < -1 || Threshold > 1))
            throw new LensException($"{where}: threshold {Threshold} for metric cosine must be in [-1, 1]");
        if (!(MinFraction > 0 && MinFraction <= 1)) throw new LensException($"{where}: min_fraction {MinFraction} must be in (0, 1]");
    }

    public string Describe() =>
        $"{Metric.ToString().ToLowerInvariant()} >= {Threshold:0.###}, rule '{Rule.ToString().ToLowerInvariant()}', min fraction {MinFraction:0.##}";
}

/// <summary>Order counts over the runs of a claim.</summary>
internal sealed record OrderCounts
{
    public int First { get; init; }
    public int Second { get; init; }
    public int Simultaneous { get; init; }
    public int Neither { get; init; }
    public int Total => First + Second + Simultaneous + Neither;

    public int Of(ConceptOrder o) => o switch
    {
        ConceptOrder.First => First,
        ConceptOrder.Second => Second,
        ConceptOrder.Simultaneous => Simultaneous,
        _ => Neither,
    };

    public static OrderCounts From(IEnumerable<ConceptOrder> orders)
    {
        var list = orders.ToList();
        return new OrderCounts
        {
            First = list.Count(o => o == ConceptOrder.First),
            Second = list.Count(o => o == ConceptOrder.Second),
            Simultaneous = list.Count(o => o == ConceptOrder.Simultaneous),
            Neither = list.Count(o => o == ConceptOrder.Neither),
        };
    }

    public override string ToString() => $"first {First}, second {Second}, simultaneous {Simultaneous}, neither {Neither}";
}

/// <summary>Concept emergence on score curves, and the ordering and verdict rules.</summary>
internal static class Emergence
{
    /// <summary>
    /// The emergence layer of one concept: with <see cref="EmergenceRule.Stay"/>, the first layer from which the value
    /// is &gt;= threshold at every later layer (so the last layer must be present); with <see cref="EmergenceRule.First"/>,
    /// the first layer where it is &gt;= threshold. Null when the concept never emerges.
    /// </summary>
    /// <param name="layers">layer numbers, increasing</param>
    /// <param name="values">the concept's value at each layer</param>
    public static int? Layer(IReadOnlyList<int> layers, IReadOnlyList<double> values, double threshold, EmergenceRule rule)
    {
        if (layers.Count != values.Count) throw new ArgumentException($"{layers.Count} layers but {values.Count} values");
        for (int i = 1; i < layers.Count; i++)
            if (layers[i] <= layers[i - 1]) throw new ArgumentException("layers must be strictly increasing");
        if (rule == EmergenceRule.First)
        {
            for (int i = 0; i < values.Count; i++)
                if (values[i] >= threshold) return layers[i];
            return null;
        }
        int? from = null;
        for (int i = values.Count - 1; i >= 0; i--)
        {
            if (values[i] >= threshold) from = layers[i];
            else break;
        }
        return from;
    }

    public static int? Layer(IReadOnlyList<int> layers, IReadOnlyList<double> values, AnalysisOptions options) =>
        Layer(layers, values, options.Threshold, options.Rule);

    /// <summary>Ordering of two emergence layers: the earlier wins; one that never emerges loses to one that does.</summary>
    public static ConceptOrder Order(int? first, int? second) => (first, second) switch
    {
        (null, null) => ConceptOrder.Neither,
        (not null, null) => ConceptOrder.First,
        (null, not null) => ConceptOrder.Second,
        var (a, b) when a < b => ConceptOrder.First,
        var (a, b) when a > b => ConceptOrder.Second,
        _ => ConceptOrder.Simultaneous,
    };

    /// <summary>
    /// The verdict on an expected order given the counts over runs: supported when at least min_fraction of the runs
    /// show the expected order and more runs show it than its opposite; contradicted when the same holds for the
    /// opposite; inconclusive otherwise. The opposite of first is second and vice versa; of simultaneous, first and
    /// second together.
    /// </summary>
    public static (Verdict Verdict, string Reason) Judge(OrderCounts counts, ConceptOrder expected, double minFraction)
    {
        int n = counts.Total;
        if (n == 0) return (Verdict.Inconclusive, "no runs");
        if (expected == ConceptOrder.Neither) throw new LensException("expected order 'neither' is not a claim that can be tested");
        int exp = counts.Of(expected);
        int opp = expected switch
        {
            ConceptOrder.First => counts.Second,
            ConceptOrder.Second => counts.First,
            _ => counts.First + counts.Second,
        };
        string name = expected.ToString().ToLowerInvariant();
        string detail = $"{exp}/{n} runs show the expected order ({name}), {opp}/{n} the opposite; needed a fraction of at least {minFraction:0.##} and a majority over the opposite";
        if (exp >= minFraction * n && exp > opp) return (Verdict.Supported, detail);
        if (opp >= minFraction * n && opp > exp) return (Verdict.Contradicted, detail);
        return (Verdict.Inconclusive, detail);
    }
}
