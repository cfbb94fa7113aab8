using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

public class OrderBootstrapTests
{
    [Fact]
    public void SplitMix64_matches_the_reference_sequence()
    {
        // the first outputs of Vigna's splitmix64.c seeded with 0 (x = 0; next() three times)
        var r = new SplitMix64(0);
        Assert.Equal(new[] { 0xe220a8397b1dcdafUL, 0x6e789e6aa1b965f4UL, 0x06c45d188009454fUL }, new[] { r.Next(), r.Next(), r.Next() });
        var g = new SplitMix64(5);
        Assert.All(Enumerable.Range(0, 1000), _ => Assert.InRange(g.NextInt(7), 0, 6));
    }

    private static List<(string, ConceptOrder)> Pairs()
    {
        var list = new List<(string, ConceptOrder)>();
        for (int p = 0; p < 12; p++)
            for (int s = 0; s < 4; s++)
                list.Add(($"prompt {p}", (p + s) % 3 == 0 ? ConceptOrder.Second : p % 4 == 0 ? ConceptOrder.Simultaneous : ConceptOrder.First));
        return list;
    }

    [Fact]
    public void Intervals_are_deterministic_contain_the_estimate_and_widen_with_the_level()
    {
        var pairs = Pairs();
        var a = OrderBootstrap.Compute(pairs, 500, 0.95, 7);
        var b = OrderBootstrap.Compute(pairs, 500, 0.95, 7);
        Assert.Equal(a, b);
        Assert.NotEqual(a.FirstBeforeSecond, OrderBootstrap.Compute(pairs, 500, 0.95, 8).FirstBeforeSecond);
        Assert.Equal(pairs.Count(p => p.Item2 == ConceptOrder.First) / (double)pairs.Count, a.FirstBeforeSecond.Estimate, 12);
        foreach (var ci in new[] { a.FirstBeforeSecond, a.SecondBeforeFirst, a.Ties, a.Neither, a.FirstMinusSecond })
            Assert.InRange(ci.Estimate, ci.Low, ci.High);
        Assert.True(a.FirstBeforeSecond.High > a.FirstBeforeSecond.Low);
        var narrow = OrderBootstrap.Compute(pairs, 500, 0.5, 7);
        Assert.True(narrow.FirstBeforeSecond.High - narrow.FirstBeforeSecond.Low < a.FirstBeforeSecond.High - a.FirstBeforeSecond.Low);
        Assert.Equal((500, 0.95, 7UL, 12), (a.Resamples, a.Level, a.Seed, a.Prompts));
    }

    [Fact]
    public void Prompts_that_all_agree_give_a_point_interval()
    {
        var pairs = Enumerable.Range(0, 5).SelectMany(p => Enumerable.Range(0, 4).Select(_ => ($"p{p}", ConceptOrder.First))).ToList();
        var r = OrderBootstrap.Compute(pairs, 100);
        Assert.Equal(new ConfidenceInterval(1, 1, 1), r.FirstBeforeSecond);
        Assert.Equal(new ConfidenceInterval(0, 0, 0), r.SecondBeforeFirst);
    }

    [Fact]
    public void Quantile_interpolates_between_order_statistics()
    {
        var v = new double[] { 1, 2, 3, 4, 5 };
        Assert.Equal(1, OrderBootstrap.Quantile(v, 0));
        Assert.Equal(5, OrderBootstrap.Quantile(v, 1));
        Assert.Equal(3, OrderBootstrap.Quantile(v, 0.5));
        Assert.Equal(1.1, OrderBootstrap.Quantile(v, 0.025), 12); // h = 4 * 0.025 = 0.1
    }

    [Fact]
    public void Bad_parameters_are_refused()
    {
        Assert.Throws<LensException>(() => OrderBootstrap.Compute(Pairs(), 0));
        Assert.Throws<LensException>(() => OrderBootstrap.Compute(Pairs(), 10, 1.0));
    }
}
