namespace DiffusionLens.Findings;

/// <summary>
/// Percentile bootstrap intervals for the order fractions, resampling prompts (with all their seeds) with replacement:
/// the seeds of one prompt are not independent, so the prompt is the unit.
/// </summary>
internal sealed record OrderBootstrap
{
    public string Method { get; init; } = MethodText;
    public int Resamples { get; init; }
    public double Level { get; init; }
    public ulong Seed { get; init; }
    public int Prompts { get; init; }
    public ConfidenceInterval FirstBeforeSecond { get; init; } = new(0, 0, 0);
    public ConfidenceInterval SecondBeforeFirst { get; init; } = new(0, 0, 0);
    public ConfidenceInterval Ties { get; init; } = new(0, 0, 0);
    public ConfidenceInterval Neither { get; init; } = new(0, 0, 0);
    /// <summary>fraction first-before-second minus fraction second-before-first</summary>
    public ConfidenceInterval FirstMinusSecond { get; init; } = new(0, 0, 0);

    public const string MethodText =
        "percentile bootstrap over prompts (each resample draws as many prompts as there are, with replacement, with all their seeds; " +
        "SplitMix64 from the stated seed); fractions of the resampled (prompt, seed) pairs; quantiles interpolated linearly between order statistics";

    public const int DefaultResamples = 2000;
    public const double DefaultLevel = 0.95;
    public const ulong DefaultSeed = 20240305;

    public static OrderBootstrap Compute(IReadOnlyList<(string Prompt, ConceptOrder Order)> pairs, int resamples = DefaultResamples,
        double level = DefaultLevel, ulong seed = DefaultSeed)
    {
        if (resamples < 1) throw new LensException($"bootstrap resamples must be at least 1, got {resamples}");
        if (!(level > 0 && level < 1)) throw new LensException($"bootstrap level must be in (0, 1), got {level}");
        var byPrompt = pairs.GroupBy(p => p.Prompt, StringComparer.Ordinal)
            .Select(g => Counts(g.Select(x => x.Order))).ToList();
        var estimate = Fractions(byPrompt.Aggregate(new int[5], Add));
        var samples = new double[5][];
        for (int k = 0; k < 5; k++) samples[k] = new double[resamples];
        if (byPrompt.Count > 0)
        {
            var rng = new SplitMix64(seed);
            for (int b = 0; b < resamples; b++)
            {
                var sum = new int[5];
                for (int i = 0; i < byPrompt.Count; i++) sum = Add(sum, byPrompt[rng.NextInt(byPrompt.Count)]);
                var f = Fractions(sum);
                for (int k = 0; k < 5; k++) samples[k][b] = f[k];
            }
        }
        ConfidenceInterval Ci(int k)
        {
            if (byPrompt.Count == 0) return new ConfidenceInterval(0, 0, 0);
            Array.Sort(samples[k]);
            double a = (1 - level) / 2;
            return new ConfidenceInterval(estimate[k], Quantile(samples[k], a), Quantile(samples[k], 1 - a));
        }
        return new OrderBootstrap
        {
            Resamples = resamples,
            Level = level,
            Seed = seed,
            Prompts = byPrompt.Count,
            FirstBeforeSecond = Ci(0),
            SecondBeforeFirst = Ci(1),
            Ties = Ci(2),
            Neither = Ci(3),
            FirstMinusSecond = Ci(4),
        };
    }

    /// <summary>The q-quantile of sorted values, interpolating linearly between order statistics (numpy's default).</summary>
    public static double Quantile(IReadOnlyList<double> sorted, double q)
    {
        if (sorted.Count == 0) throw new ArgumentException("no values");
        double h = (sorted.Count - 1) * q;
        int lo = (int)Math.Floor(h);
        int hi = Math.Min(lo + 1, sorted.Count - 1);
        return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
    }

    // counts: first, second, ties, neither, total
    private static int[] Counts(IEnumerable<ConceptOrder> orders)
    {
        var c = new int[5];
        foreach (var o in orders)
        {
            c[o switch { ConceptOrder.First => 0, ConceptOrder.Second => 1, ConceptOrder.Simultaneous => 2, _ => 3 }]++;
            c[4]++;
        }
        return c;
    }

    private static int[] Add(int[] a, int[] b) => a.Zip(b, (x, y) => x + y).ToArray();

    // fractions: first, second, ties, neither, first - second
    private static double[] Fractions(int[] c)
    {
        double n = Math.Max(1, c[4]);
        return new[] { c[0] / n, c[1] / n, c[2] / n, c[3] / n, (c[0] - c[1]) / n };
    }
}
