using System.Globalization;

namespace DiffusionLens.Findings;

/// <summary>
/// Shard K of N (0-based K): the runs of the audit's plan (claims in file order, then prompts, then seeds) whose
/// position p has p mod N == K.
/// </summary>
internal sealed record ShardSpec(int Index, int Count)
{
    public bool Owns(int position) => position % Count == Index;
    public override string ToString() => $"{Index}/{Count}";

    public const string KubernetesEnv = "JOB_COMPLETION_INDEX";
    public const string SlurmEnv = "SLURM_ARRAY_TASK_ID";
    public const string SlurmMinEnv = "SLURM_ARRAY_TASK_MIN";
    public const string SlurmStepEnv = "SLURM_ARRAY_TASK_STEP";

    /// <summary>
    /// "K/N", or "N" with K from the environment: JOB_COMPLETION_INDEX (a Kubernetes Indexed Job; 0-based, used as is),
    /// else SLURM_ARRAY_TASK_ID, made 0-based as (ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP when those are set
    /// (so --array=1-8 and --array=0-7 both give K = 0..7), else the ID itself.
    /// </summary>
    public static ShardSpec Parse(string text, Func<string, string?> getEnv)
    {
        var parts = text.Split('/');
        if (parts.Length > 2 || parts[^1].Trim().Length == 0)
            throw new LensException($"option '--shard' must be K/N (e.g. 0/4) or N (K from {KubernetesEnv} or {SlurmEnv}), got '{text}'");
        int count = Int(parts[^1], "N", text);
        if (count < 1) throw new LensException($"option '--shard': N must be at least 1, got {count}");
        int index = parts.Length == 2 && parts[0].Trim().Length > 0 ? Int(parts[0], "K", text) : FromEnvironment(getEnv);
        if (index < 0 || index >= count) throw new LensException($"option '--shard': shard index {index} is outside 0..{count - 1}");
        return new ShardSpec(index, count);
    }

    public static int FromEnvironment(Func<string, string?> getEnv)
    {
        if (getEnv(KubernetesEnv) is { Length: > 0 } k) return EnvInt(KubernetesEnv, k);
        if (getEnv(SlurmEnv) is { Length: > 0 } s)
        {
            int id = EnvInt(SlurmEnv, s);
            int min = getEnv(SlurmMinEnv) is { Length: > 0 } m ? EnvInt(SlurmMinEnv, m) : 0;
            int step = getEnv(SlurmStepEnv) is { Length: > 0 } st ? EnvInt(SlurmStepEnv, st) : 1;
            if (step < 1) throw new LensException($"{SlurmStepEnv}={step} must be at least 1");
            if ((id - min) % step != 0) throw new LensException($"{SlurmEnv}={id} is not {SlurmMinEnv}={min} plus a multiple of {SlurmStepEnv}={step}");
            return (id - min) / step;
        }
        throw new LensException($"option '--shard N' takes the shard index from {KubernetesEnv} or {SlurmEnv}, and neither is set; pass --shard K/N");
    }

    private static int Int(string s, string what, string text) =>
        int.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
            : throw new LensException($"option '--shard': {what} in '{text}' is not an integer");

    private static int EnvInt(string name, string v) =>
        int.TryParse(v.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var x) ? x
            : throw new LensException($"{name}='{v}' is not an integer");
}
