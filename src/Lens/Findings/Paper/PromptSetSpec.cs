namespace DiffusionLens.Findings;

/// <summary>The two human annotation files of a prompt set: the first noun's and the second noun's.</summary>
internal sealed record AnnotationSpec
{
    public string First { get; init; } = "";
    public string Second { get; init; } = "";
}

/// <summary>Bootstrap settings of a prompt-set claim (defaults: <see cref="OrderBootstrap"/>).</summary>
internal sealed record BootstrapSpec
{
    public int Resamples { get; init; } = OrderBootstrap.DefaultResamples;
    public double Level { get; init; } = OrderBootstrap.DefaultLevel;
    public ulong Seed { get; init; } = OrderBootstrap.DefaultSeed;
}

/// <summary>
/// A claim's prompts from a CSV in the paper's format (<see cref="PromptSetFile"/>), and optionally the human
/// annotation files to compare with. Paths are relative to the folder named by <see cref="RootEnv"/> when given (e.g.
/// LENS_PAPER_REPO, a clone of the paper's repository), else to the claims file; a file name may hold one '*'
/// (e.g. <c>human_annotations/syntax_head_IsFirstClass_sd_*.csv</c>) that must match exactly one file.
/// </summary>
internal sealed record PromptSetSpec
{
    public string File { get; init; } = "";
    public string? RootEnv { get; init; }
    public AnnotationSpec? Annotations { get; init; }
    /// <summary>only the prompts the annotation files hold</summary>
    public bool AnnotatedOnly { get; init; }
    /// <summary>the first N prompts (after <see cref="AnnotatedOnly"/>)</summary>
    public int? MaxPrompts { get; init; }
    public BootstrapSpec Bootstrap { get; init; } = new();

    public void Validate(string where)
    {
        if (string.IsNullOrWhiteSpace(File)) throw new LensException($"{where}: prompt_set needs a file");
        if (Annotations is { } a && (string.IsNullOrWhiteSpace(a.First) || string.IsNullOrWhiteSpace(a.Second)))
            throw new LensException($"{where}: prompt_set.annotations needs first and second");
        if (AnnotatedOnly && Annotations is null) throw new LensException($"{where}: prompt_set.annotated_only needs annotations");
        if (MaxPrompts is <= 0) throw new LensException($"{where}: prompt_set.max_prompts must be positive");
        if (Bootstrap.Resamples < 1) throw new LensException($"{where}: prompt_set.bootstrap.resamples must be at least 1");
        if (!(Bootstrap.Level > 0 && Bootstrap.Level < 1)) throw new LensException($"{where}: prompt_set.bootstrap.level must be in (0, 1)");
    }
}
