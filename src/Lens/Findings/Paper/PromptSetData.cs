namespace DiffusionLens.Findings;

/// <summary>A claim's prompt set as read: the prompts with their nouns and, when given, the two annotation files.</summary>
internal sealed record PromptSetData
{
    public string File { get; init; } = "";
    public IReadOnlyList<PromptPair> Prompts { get; init; } = Array.Empty<PromptPair>();
    public AnnotationFile? First { get; init; }
    public AnnotationFile? Second { get; init; }

    /// <summary>Reads a claim's prompt set; null with the reason when its root folder variable is not set.</summary>
    public static (PromptSetData? Data, string? Reason) Resolve(PromptSetSpec spec, string claimsFolder, Func<string, string?> getEnv)
    {
        string root = claimsFolder;
        if (spec.RootEnv is { } env)
        {
            var v = getEnv(env);
            if (string.IsNullOrEmpty(v)) return (null, $"{env} is not set (the folder prompt_set.file is relative to, e.g. a clone of the paper's repository)");
            if (!Directory.Exists(v)) return (null, $"{env}={v} is not a folder");
            root = v;
        }
        var file = Find(root, spec.File, PromptSetFile.What);
        var prompts = PromptSetFile.Load(file);
        AnnotationFile? first = null, second = null;
        if (spec.Annotations is { } a)
        {
            first = AnnotationFile.Load(Find(root, a.First, AnnotationFile.What));
            second = AnnotationFile.Load(Find(root, a.Second, AnnotationFile.What));
            HumanOrder.Compare(first, second); // rows must pair up
            if (spec.AnnotatedOnly)
            {
                var annotated = first.Rows.Select(r => r.Prompt).ToHashSet(StringComparer.Ordinal);
                prompts = prompts.Where(p => annotated.Contains(p.Prompt)).ToList();
                if (prompts.Count == 0) throw new LensException($"{file}: none of its prompts is in {first.Path}");
            }
        }
        if (spec.MaxPrompts is { } max) prompts = prompts.Take(max).ToList();
        return (new PromptSetData { File = file, Prompts = prompts, First = first, Second = second }, null);
    }

    /// <summary>A path relative to <paramref name="root"/>; a '*' in its file name must match exactly one file.</summary>
    public static string Find(string root, string relative, string what)
    {
        var path = Path.GetFullPath(Path.Combine(root, relative));
        var name = Path.GetFileName(path);
        if (!name.Contains('*')) return System.IO.File.Exists(path) ? path : throw new LensException($"{what} not found: {path}");
        var dir = Path.GetDirectoryName(path)!;
        var matches = Directory.Exists(dir) ? Directory.GetFiles(dir, name).Order(StringComparer.Ordinal).ToArray() : Array.Empty<string>();
        return matches.Length == 1 ? matches[0]
            : throw new LensException($"{what} pattern {path} matches {matches.Length} files{(matches.Length > 1 ? ": " + string.Join(", ", matches.Select(Path.GetFileName)) : "")}; it must match exactly one");
    }
}
