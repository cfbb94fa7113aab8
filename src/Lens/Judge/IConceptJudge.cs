using System.Text.RegularExpressions;

namespace DiffusionLens.Judge;

/// <summary>One image of a lens sweep: the encoder layer it was generated from and its file.</summary>
internal sealed record LayerImage(int Layer, string Path);

/// <summary>Scores lens images for concepts (the CLIP judge, or a fake in tests).</summary>
internal interface IConceptJudge
{
    /// <param name="images">the sweep's images, in layer order</param>
    /// <param name="concepts">the concepts whose emergence is analysed (e.g. "people", "ocean")</param>
    /// <param name="template">prompt template with "{}" for the concept</param>
    /// <param name="distractors">extra labels that take part in the softmax but are not analysed (may be null)</param>
    JudgeScores Score(IReadOnlyList<LayerImage> images, IReadOnlyList<string> concepts, string template = ClipJudge.DefaultTemplate,
        IReadOnlyList<string>? distractors = null);
}

internal static class ConceptSet
{
    /// <summary>Concepts followed by distractors; at least one concept, none empty, no duplicates.</summary>
    public static string[] Validate(IReadOnlyList<string> concepts, IReadOnlyList<string>? distractors)
    {
        if (concepts.Count == 0) throw new LensException("no concepts given");
        var all = concepts.Concat(distractors ?? Array.Empty<string>()).ToArray();
        foreach (var c in all)
            if (string.IsNullOrWhiteSpace(c)) throw new LensException("a concept is empty");
        var dup = all.GroupBy(c => c, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new LensException($"concept '{dup.Key}' is given twice");
        if (all.Length < 2) throw new LensException($"one concept ('{all[0]}') cannot be scored: the softmax needs at least two labels (add a concept or a distractor)");
        return all;
    }

    /// <summary>Splits "people,ocean" into trimmed, non-empty entries.</summary>
    public static string[] ParseList(string? list) =>
        (list ?? "").Split(',').Select(s => s.Trim()).Where(s => s.Length > 0).ToArray();
}

/// <summary>Finds the <c>layer-XX.png</c> images of a sweep folder.</summary>
internal static class SweepImages
{
    private static readonly Regex LayerFile = new(@"^layer-(\d+)\.png$", RegexOptions.CultureInvariant);

    public static IReadOnlyList<LayerImage> Find(string folder)
    {
        if (!Directory.Exists(folder)) throw new LensException($"images folder not found: {folder}");
        var list = new List<LayerImage>();
        foreach (var f in Directory.EnumerateFiles(folder))
        {
            var m = LayerFile.Match(System.IO.Path.GetFileName(f));
            if (!m.Success) continue;
            if (!int.TryParse(m.Groups[1].Value, out var layer)) throw new LensException($"layer number out of range: {f}");
            list.Add(new LayerImage(layer, f));
        }
        if (list.Count == 0 && Directory.EnumerateFiles(folder, "hidden-*.png").Any())
            throw new LensException($"{folder} holds a sweep in hidden-state numbering (hidden-KK.png); layer images are scored in lens numbering only: run lens sweep with --layer-numbering lens (the default; hidden state k is lens layer k-1)");
        if (list.Count == 0) throw new LensException($"no layer-XX.png images in {folder}");
        var dup = list.GroupBy(l => l.Layer).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new LensException($"layer {dup.Key} has more than one image in {folder}: {string.Join(", ", dup.Select(d => System.IO.Path.GetFileName(d.Path)))}");
        return list.OrderBy(l => l.Layer).ToList();
    }
}
