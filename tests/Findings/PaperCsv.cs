using System.Text;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// Writes synthetic files in the exact format of the paper's repository (its data has no licence and is never
/// committed): prompt sets (<c>prompt,noun_0,noun_1,head,dependent</c>) and human annotation files
/// (<c>prompt,&lt;hidden-state indices&gt;,seed</c>, cells 1 / 0 / empty).
/// </summary>
internal static class PaperCsv
{
    public static readonly int[] SdIndices = { 3, 7, 11, 15, 19, 23 };
    public static readonly int[] IfIndices = { 0, 4, 8, 12, 16, 20, 24 };

    public static string Quote(string field) =>
        field.IndexOfAny(new[] { ',', '"', '\n', '\r' }) >= 0 ? "\"" + field.Replace("\"", "\"\"") + "\"" : field;

    /// <summary>Joins lines with <paramref name="newline"/>, optionally after a UTF-8 byte-order mark.</summary>
    public static void Write(string path, IEnumerable<string> lines, string newline = "\n", bool bom = false)
    {
        var text = string.Join(newline, lines) + newline;
        File.WriteAllText(path, text, new UTF8Encoding(bom));
    }

    public static void WritePrompts(string path, IEnumerable<(string Prompt, string Noun0, string Noun1)> rows, string newline = "\n", bool bom = false) =>
        Write(path, new[] { "prompt,noun_0,noun_1,head,dependent" }.Concat(rows.Select(r => $"{Quote(r.Prompt)},{r.Noun0},{r.Noun1},{r.Noun1},{r.Noun0}")), newline, bom);

    /// <summary>
    /// An annotation row whose concept is labelled 1 from hidden-state index <paramref name="from"/> on (null: never), 0
    /// before, and empty at the indices in <paramref name="blank"/>.
    /// </summary>
    public static string Row(string prompt, long seed, int[] indices, int? from, params int[] blank) =>
        Quote(prompt) + "," + string.Join(",", indices.Select(i => blank.Contains(i) ? "" : from is { } f && i >= f ? "1" : "0")) + "," + seed;

    public static void WriteAnnotations(string path, int[] indices, IEnumerable<string> rows, string newline = "\n", bool bom = false) =>
        Write(path, new[] { "prompt," + string.Join(",", indices) + ",seed" }.Concat(rows), newline, bom);
}
