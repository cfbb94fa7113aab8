using System.Text;

namespace DiffusionLens.Findings;

/// <summary>
/// A CSV file as spreadsheets export it (RFC 4180): comma-separated, fields in double quotes may hold commas, quotes
/// (doubled) and line breaks; LF or CRLF line ends; a UTF-8 byte-order mark is dropped; blank lines are skipped.
/// Errors name the file and the line.
/// </summary>
internal sealed class CsvTable
{
    public string Path { get; }
    public IReadOnlyList<string> Header { get; }
    /// <summary>Data rows, each with as many fields as the header.</summary>
    public IReadOnlyList<string[]> Rows { get; }
    /// <summary>The 1-based line each data row starts on (for messages).</summary>
    public IReadOnlyList<int> Lines { get; }

    private CsvTable(string path, IReadOnlyList<string> header, IReadOnlyList<string[]> rows, IReadOnlyList<int> lines)
    {
        Path = path;
        Header = header;
        Rows = rows;
        Lines = lines;
    }

    /// <param name="what">what the file is, for messages (e.g. "prompt file")</param>
    public static CsvTable Load(string path, string what)
    {
        if (!File.Exists(path)) throw new LensException($"{what} not found: {path}");
        string text;
        try { text = File.ReadAllText(path, new UTF8Encoding(false, true)); }
        catch (DecoderFallbackException) { throw new LensException($"{path}: {what} is not UTF-8 text"); }
        return Parse(text, path, what);
    }

    public static CsvTable Parse(string text, string path, string what)
    {
        if (text.Length > 0 && text[0] == '\uFEFF') text = text[1..];
        var records = new List<(string[] Fields, int Line)>();
        var fields = new List<string>();
        var field = new StringBuilder();
        int line = 1, recordLine = 1, i = 0;
        bool quoted = false, fieldWasQuoted = false;
        void EndField() { fields.Add(field.ToString()); field.Clear(); fieldWasQuoted = false; }
        void EndRecord()
        {
            EndField();
            if (!(fields.Count == 1 && fields[0].Length == 0)) records.Add((fields.ToArray(), recordLine));
            fields.Clear();
        }
        while (i < text.Length)
        {
            char c = text[i];
            if (quoted)
            {
                if (c == '"')
                {
                    if (i + 1 < text.Length && text[i + 1] == '"') { field.Append('"'); i += 2; continue; }
                    quoted = false;
                    i++;
                    continue;
                }
                if (c == '\n') line++;
                field.Append(c);
                i++;
                continue;
            }
            switch (c)
            {
                case '"' when field.Length == 0 && !fieldWasQuoted:
                    quoted = true;
                    fieldWasQuoted = true;
                    i++;
                    break;
                case '"':
                    throw new LensException($"{path}:{line}: malformed {what}: a quote inside an unquoted field (quote the whole field and double the quote)");
                case ',':
                    EndField();
                    i++;
                    break;
                case '\r' when i + 1 < text.Length && text[i + 1] == '\n':
                    i++;
                    break;
                case '\r':
                case '\n':
                    EndRecord();
                    line++;
                    recordLine = line;
                    i++;
                    break;
                default:
                    if (fieldWasQuoted) throw new LensException($"{path}:{line}: malformed {what}: text after a closing quote");
                    field.Append(c);
                    i++;
                    break;
            }
        }
        if (quoted) throw new LensException($"{path}:{recordLine}: malformed {what}: a quoted field is not closed");
        if (field.Length > 0 || fields.Count > 0 || fieldWasQuoted) EndRecord();
        if (records.Count == 0) throw new LensException($"{path}: {what} is empty (no header line)");
        var header = records[0].Fields.Select(h => h.Trim()).ToArray();
        var rows = new List<string[]>();
        var lines = new List<int>();
        foreach (var (f, l) in records.Skip(1))
        {
            if (f.Length != header.Length)
                throw new LensException($"{path}:{l}: malformed {what}: {f.Length} fields but the header has {header.Length} ({string.Join(",", header)})");
            rows.Add(f);
            lines.Add(l);
        }
        return new CsvTable(path, header, rows, lines);
    }

    /// <summary>The index of a header column; throws naming the file and its columns when absent.</summary>
    public int Column(string name, string what)
    {
        for (int i = 0; i < Header.Count; i++)
            if (Header[i] == name) return i;
        throw new LensException($"{Path}: {what} has no column '{name}' (columns: {string.Join(",", Header)})");
    }
}
