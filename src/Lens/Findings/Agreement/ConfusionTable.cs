namespace DiffusionLens.Findings;

/// <summary>
/// Presence calls of the judge against the annotators' labels (the annotators are the reference):
/// both present, judge only, annotators only, both absent.
/// </summary>
internal sealed record ConfusionTable
{
    public int BothPresent { get; init; }
    public int JudgeOnly { get; init; }
    public int HumanOnly { get; init; }
    public int BothAbsent { get; init; }

    public int N => BothPresent + JudgeOnly + HumanOnly + BothAbsent;

    public static ConfusionTable From(IEnumerable<(bool Judge, bool Human)> calls)
    {
        int tp = 0, fp = 0, fn = 0, tn = 0;
        foreach (var (j, h) in calls)
        {
            if (j && h) tp++;
            else if (j) fp++;
            else if (h) fn++;
            else tn++;
        }
        return new ConfusionTable { BothPresent = tp, JudgeOnly = fp, HumanOnly = fn, BothAbsent = tn };
    }

    /// <summary>Observed agreement: the fraction of calls where judge and annotators agree (null without calls).</summary>
    public double? Accuracy => N == 0 ? null : (double)(BothPresent + BothAbsent) / N;

    /// <summary>
    /// Cohen's kappa, (p_o - p_e) / (1 - p_e), with p_e the agreement expected by chance from each rater's own rate of
    /// "present". Null without calls, or when p_e = 1 (both raters gave one and the same call throughout: kappa is
    /// undefined).
    /// </summary>
    public double? Kappa
    {
        get
        {
            if (N == 0) return null;
            double n = N;
            double po = (BothPresent + BothAbsent) / n;
            double judgeYes = (BothPresent + JudgeOnly) / n, humanYes = (BothPresent + HumanOnly) / n;
            double pe = judgeYes * humanYes + (1 - judgeYes) * (1 - humanYes);
            return pe >= 1 ? null : (po - pe) / (1 - pe);
        }
    }

    public static ConfusionTable operator +(ConfusionTable a, ConfusionTable b) => new()
    {
        BothPresent = a.BothPresent + b.BothPresent,
        JudgeOnly = a.JudgeOnly + b.JudgeOnly,
        HumanOnly = a.HumanOnly + b.HumanOnly,
        BothAbsent = a.BothAbsent + b.BothAbsent,
    };
}
