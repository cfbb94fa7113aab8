namespace DiffusionLens.Findings;

/// <summary>
/// A prompt set in the paper's CSV format (<c>prompts/syntactic_ralations_coco - Sheet1.csv</c>): columns
/// <c>prompt,noun_0,noun_1</c> (and optionally <c>head,dependent</c>, kept but not used). <c>noun_0</c> and
/// <c>noun_1</c> become the two concepts of each prompt, in that order.
/// </summary>
internal static class PromptSetFile
{
    public const string What = "prompt file";

    public static IReadOnlyList<PromptPair> Load(string path)
    {
        var t = CsvTable.Load(path, What);
        int p = t.Column("prompt", What), n0 = t.Column("noun_0", What), n1 = t.Column("noun_1", What);
        int head = t.Header.ToList().IndexOf("head"), dep = t.Header.ToList().IndexOf("dependent");
        var list = new List<PromptPair>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int r = 0; r < t.Rows.Count; r++)
        {
            var row = t.Rows[r];
            string where = $"{path}:{t.Lines[r]}";
            var prompt = row[p].Trim();
            var a = row[n0].Trim();
            var b = row[n1].Trim();
            if (prompt.Length == 0) throw new LensException($"{where}: empty prompt");
            if (a.Length == 0 || b.Length == 0) throw new LensException($"{where}: noun_0 and noun_1 must not be empty");
            if (a == b) throw new LensException($"{where}: noun_0 and noun_1 are both '{a}'");
            if (!seen.Add(prompt)) throw new LensException($"{where}: prompt \"{prompt}\" is listed twice");
            list.Add(new PromptPair(prompt, a, b, head >= 0 ? row[head].Trim() : null, dep >= 0 ? row[dep].Trim() : null));
        }
        if (list.Count == 0) throw new LensException($"{path}: {What} has no prompts");
        return list;
    }
}
