using System.Globalization;

namespace DiffusionLens.Findings;

/// <summary>
/// A human annotation file of the paper's repository (<c>human_annotations/*.csv</c>): columns
/// <c>prompt,&lt;hidden-state index&gt;...,seed</c>; a cell is 1 (the concept is present in that layer's image), 0
/// (absent) or empty (unannotated). The indices are the paper's hidden-state indices (transformers'
/// <c>hidden_states</c>, 0 = the embeddings): SD files use 3,7,...,23, DeepFloyd files 0,4,...,24.
/// </summary>
internal sealed class AnnotationFile
{
    public const string What = "annotation file";

    public string Path { get; }
    /// <summary>The hidden-state indices of the label columns, increasing.</summary>
    public IReadOnlyList<int> Indices { get; }
    public IReadOnlyList<AnnotationRow> Rows { get; }

    [System.Text.Json.Serialization.JsonConstructor]
    public AnnotationFile(string path, IReadOnlyList<int> indices, IReadOnlyList<AnnotationRow> rows)
    {
        Path = path;
        Indices = indices;
        Rows = rows;
    }

    public static AnnotationFile Load(string path)
    {
        var t = CsvTable.Load(path, What);
        if (t.Header.Count < 3 || t.Header[0] != "prompt" || t.Header[^1] != "seed")
            throw new LensException($"{path}: {What} must have the columns prompt,<hidden-state indices...>,seed; its header is {string.Join(",", t.Header)}");
        var indices = new List<int>();
        foreach (var h in t.Header.Skip(1).Take(t.Header.Count - 2))
        {
            if (!int.TryParse(h, NumberStyles.None, CultureInfo.InvariantCulture, out var idx))
                throw new LensException($"{path}: {What} column '{h}' is not a hidden-state index (a non-negative integer)");
            if (indices.Count > 0 && idx <= indices[^1])
                throw new LensException($"{path}: {What} hidden-state indices must increase ({indices[^1]} then {idx})");
            indices.Add(idx);
        }
        var rows = new List<AnnotationRow>();
        var seen = new HashSet<(string, long)>();
        for (int r = 0; r < t.Rows.Count; r++)
        {
            var row = t.Rows[r];
            int line = t.Lines[r];
            var prompt = row[0].Trim();
            if (prompt.Length == 0) throw new LensException($"{path}:{line}: empty prompt");
            if (!long.TryParse(row[^1].Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var seed))
                throw new LensException($"{path}:{line}: seed '{row[^1]}' is not an integer");
            var labels = new bool?[indices.Count];
            for (int i = 0; i < indices.Count; i++)
            {
                labels[i] = row[i + 1].Trim() switch
                {
                    "1" => true,
                    "0" => false,
                    "" => null,
                    var v => throw new LensException($"{path}:{line}: label '{v}' at hidden-state index {indices[i]} must be 1, 0 or empty"),
                };
            }
            if (!seen.Add((prompt, seed))) throw new LensException($"{path}:{line}: prompt \"{prompt}\" with seed {seed} is listed twice");
            rows.Add(new AnnotationRow(prompt, seed, labels, line));
        }
        return new AnnotationFile(path, indices, rows);
    }

    /// <summary>The first hidden-state index labelled present in a row, or null when none is.</summary>
    public int? FirstPresent(AnnotationRow row)
    {
        for (int i = 0; i < Indices.Count; i++)
            if (row.Labels[i] == true) return Indices[i];
        return null;
    }

    public AnnotationRow? Find(string prompt, long seed) => Rows.FirstOrDefault(r => r.Prompt == prompt && r.Seed == seed);
}
