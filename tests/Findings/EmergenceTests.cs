using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

public class EmergenceTests
{
    private static readonly int[] Layers12 = Enumerable.Range(0, 12).ToArray();

    [Fact]
    public void Clear_curve_emerges_where_it_crosses_and_stays()
    {
        var people = new[] { 0.1, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.9, 0.95, 0.9, 0.92 };
        Assert.Equal(4, Emergence.Layer(Layers12, people, 0.5, EmergenceRule.Stay));
        Assert.Equal(4, Emergence.Layer(Layers12, people, 0.5, EmergenceRule.First));
        Assert.Equal(3, Emergence.Layer(Layers12, people, 0.3, EmergenceRule.Stay)); // >= threshold counts as present
    }

    [Fact]
    public void Noisy_curve_stay_rule_ignores_early_blips_first_rule_does_not()
    {
        var ocean = new[] { 0.2, 0.7, 0.1, 0.6, 0.2, 0.4, 0.55, 0.45, 0.6, 0.7, 0.8, 0.75 };
        Assert.Equal(8, Emergence.Layer(Layers12, ocean, 0.5, EmergenceRule.Stay));
        Assert.Equal(1, Emergence.Layer(Layers12, ocean, 0.5, EmergenceRule.First));
    }

    [Fact]
    public void Never_emerging_curve_gives_null_also_when_it_drops_at_the_end()
    {
        var flat = Enumerable.Repeat(0.2, 12).ToArray();
        Assert.Null(Emergence.Layer(Layers12, flat, 0.5, EmergenceRule.Stay));
        Assert.Null(Emergence.Layer(Layers12, flat, 0.5, EmergenceRule.First));
        var drops = new[] { 0.1, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.4 };
        Assert.Null(Emergence.Layer(Layers12, drops, 0.5, EmergenceRule.Stay));
        Assert.Equal(1, Emergence.Layer(Layers12, drops, 0.5, EmergenceRule.First));
    }

    [Fact]
    public void Sparse_layers_report_layer_numbers_not_indices()
    {
        var layers = new[] { 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22 };
        var v = new[] { 0.0, 0.0, 0.0, 0.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9 };
        Assert.Equal(8, Emergence.Layer(layers, v, 0.5, EmergenceRule.Stay));
    }

    [Fact]
    public void Order_of_two_emergence_layers()
    {
        Assert.Equal(ConceptOrder.First, Emergence.Order(3, 7));
        Assert.Equal(ConceptOrder.Second, Emergence.Order(7, 3));
        Assert.Equal(ConceptOrder.Simultaneous, Emergence.Order(5, 5));
        Assert.Equal(ConceptOrder.Neither, Emergence.Order(null, null));
        Assert.Equal(ConceptOrder.First, Emergence.Order(9, null));
        Assert.Equal(ConceptOrder.Second, Emergence.Order(null, 0));
    }

    [Fact]
    public void Simultaneous_curves_give_simultaneous_order()
    {
        var a = new[] { 0.1, 0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5 };
        var b = new[] { 0.2, 0.3, 0.2, 0.1, 0.3, 0.5, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5 };
        var ea = Emergence.Layer(Layers12, a, 0.5, EmergenceRule.Stay);
        var eb = Emergence.Layer(Layers12, b, 0.5, EmergenceRule.Stay);
        Assert.Equal(5, ea);
        Assert.Equal(5, eb);
        Assert.Equal(ConceptOrder.Simultaneous, Emergence.Order(ea, eb));
    }

    [Fact]
    public void Verdict_needs_the_fraction_and_a_majority_over_the_opposite()
    {
        OrderCounts C(int f, int s, int sim = 0, int n = 0) => new() { First = f, Second = s, Simultaneous = sim, Neither = n };
        Assert.Equal(Verdict.Supported, Emergence.Judge(C(3, 1), ConceptOrder.First, 0.5).Verdict);
        Assert.Equal(Verdict.Contradicted, Emergence.Judge(C(1, 3), ConceptOrder.First, 0.5).Verdict);
        Assert.Equal(Verdict.Inconclusive, Emergence.Judge(C(2, 2), ConceptOrder.First, 0.5).Verdict);
        Assert.Equal(Verdict.Inconclusive, Emergence.Judge(C(1, 0, 2, 1), ConceptOrder.First, 0.5).Verdict); // 1/4 < 0.5
        Assert.Equal(Verdict.Supported, Emergence.Judge(C(0, 4), ConceptOrder.Second, 0.5).Verdict);
        Assert.Equal(Verdict.Supported, Emergence.Judge(C(1, 0), ConceptOrder.First, 1.0).Verdict);
        Assert.Equal(Verdict.Inconclusive, Emergence.Judge(C(3, 1), ConceptOrder.First, 1.0).Verdict);
        Assert.Equal(Verdict.Supported, Emergence.Judge(C(1, 0, 3), ConceptOrder.Simultaneous, 0.5).Verdict);
        Assert.Equal(Verdict.Inconclusive, Emergence.Judge(new OrderCounts(), ConceptOrder.First, 0.5).Verdict);
        Assert.Contains("3/4", Emergence.Judge(C(3, 1), ConceptOrder.First, 0.5).Reason);
    }

    [Fact]
    public void Summary_counts_orders_over_seeds()
    {
        var c = OrderCounts.From(new[] { ConceptOrder.First, ConceptOrder.First, ConceptOrder.Second, ConceptOrder.Neither, ConceptOrder.Simultaneous });
        Assert.Equal((2, 1, 1, 1, 5), (c.First, c.Second, c.Simultaneous, c.Neither, c.Total));
    }

    [Fact]
    public void Bad_inputs_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => Emergence.Layer(new[] { 0, 1 }, new[] { 0.1 }, 0.5, EmergenceRule.Stay));
        Assert.Throws<ArgumentException>(() => Emergence.Layer(new[] { 1, 0 }, new[] { 0.1, 0.2 }, 0.5, EmergenceRule.Stay));
        Assert.Throws<LensException>(() => new AnalysisOptions { Threshold = 1.5 }.Validate("x"));
        Assert.Throws<LensException>(() => new AnalysisOptions { MinFraction = 0 }.Validate("x"));
    }
}
