using System.Text;
using System.Text.RegularExpressions;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// <c>ftfy.fix_text(text)</c> with ftfy 6.3's default configuration: the text is fixed line by line; on each line,
/// until it stops changing: unescape HTML entities (only while no line so far contained '&lt;'), fix mojibake
/// (<see cref="FtfyEncoding"/>), C1 controls as windows-1252, Latin ligatures, full/half-width forms, curly quotes,
/// line breaks, surrogates, ANSI terminal escapes, control characters, then NFC.
/// </summary>
internal static class Ftfy
{
    public static string FixText(string text)
    {
        bool unescapeHtml = true; // "auto"
        var outp = new StringBuilder(text.Length);
        int pos = 0;
        while (pos < text.Length)
        {
            int brk = text.IndexOf('\n', pos) + 1;
            if (brk == 0) brk = text.Length;
            if (brk - pos > 1_000_000) brk = pos + 1_000_000;
            string segment = text[pos..brk];
            if (unescapeHtml && segment.Contains('<')) unescapeHtml = false;
            outp.Append(FixSegment(segment, unescapeHtml));
            pos = brk;
        }
        return outp.ToString();
    }

    private static string FixSegment(string text, bool unescapeHtml)
    {
        while (true)
        {
            string orig = text;
            if (unescapeHtml) text = UnescapeHtml(text);
            text = FtfyEncoding.FixEncoding(text);
            text = FixC1Controls(text);
            text = FixLatinLigatures(text);
            text = FixCharacterWidth(text);
            text = UncurlQuotes(text);
            text = FixLineBreaks(text);
            text = FixSurrogates(text);
            text = AnsiRe.Replace(text, "");
            text = RemoveControlChars(text);
            text = text.Normalize(NormalizationForm.FormC);
            if (text == orig) return text;
        }
    }

    private static readonly Regex HtmlEntityRe = new(@"&#?[0-9A-Za-z]{1,24};", RegexOptions.CultureInvariant);

    /// <summary>
    /// ftfy's unescape_html: entities with a semicolon only, plus all-caps spellings of lower-case entity names
    /// (&amp;EACUTE; -> É); numeric references through html.unescape.
    /// </summary>
    internal static string UnescapeHtml(string text)
    {
        if (!text.Contains('&')) return text;
        return HtmlEntityRe.Replace(text, m =>
        {
            string t = m.Value;
            if (t.StartsWith("&#", StringComparison.Ordinal))
            {
                string u = PyText.HtmlUnescape(t);
                return u.Contains(';') ? t : u;
            }
            string name = t[1..^1];
            if (PyText.NamedEntity(name) is string v) return v;
            // All-caps form of a lower-case entity whose capitalised spelling is not itself an entity.
            string lower = name.ToLowerInvariant();
            if (name == name.ToUpperInvariant() && lower != name && PyText.NamedEntity(lower) is string lv
                && PyText.HtmlUnescape(t) == t)
                return lv.ToUpperInvariant();
            return t;
        });
    }

    internal static readonly Regex C1Re = new("[\u0080-\u009f]", RegexOptions.CultureInvariant);

    internal static string FixC1Controls(string text) =>
        C1Re.Replace(text, m => PyText.Cp1252(m.Value[0]) ?? m.Value);

    private static readonly Dictionary<char, string> Ligatures = new()
    {
        ['\u0132'] = "IJ", ['\u0133'] = "ij", ['\u0149'] = "\u02BCn", ['\u01F1'] = "DZ", ['\u01F2'] = "Dz",
        ['\u01F3'] = "dz", ['\u01C4'] = "D\u017D", ['\u01C5'] = "D\u017E", ['\u01C6'] = "d\u017E", ['\u01C7'] = "LJ",
        ['\u01C8'] = "Lj", ['\u01C9'] = "lj", ['\u01CA'] = "NJ", ['\u01CB'] = "Nj", ['\u01CC'] = "nj",
        ['\uFB00'] = "ff", ['\uFB01'] = "fi", ['\uFB02'] = "fl", ['\uFB03'] = "ffi", ['\uFB04'] = "ffl",
        ['\uFB05'] = "\u017Ft", ['\uFB06'] = "st",
    };

    private static string FixLatinLigatures(string text)
    {
        if (!text.Any(Ligatures.ContainsKey)) return text;
        var sb = new StringBuilder(text.Length + 8);
        foreach (char c in text) sb.Append(Ligatures.TryGetValue(c, out var r) ? r : c.ToString());
        return sb.ToString();
    }

    /// <summary>U+3000 to ' ' and U+FF01..U+FFEF to their NFKC forms (ftfy's WIDTH_MAP).</summary>
    private static string FixCharacterWidth(string text)
    {
        if (!text.Any(c => c == '\u3000' || (c >= '\uFF01' && c <= '\uFFEF'))) return text;
        var sb = new StringBuilder(text.Length);
        foreach (char c in text)
        {
            if (c == '\u3000') sb.Append(' ');
            else if (c >= '\uFF01' && c <= '\uFFEF') sb.Append(c.ToString().Normalize(NormalizationForm.FormKC));
            else sb.Append(c);
        }
        return sb.ToString();
    }

    private static readonly Regex SingleQuoteRe = new("[\u02bc\u2018-\u201b]", RegexOptions.CultureInvariant);
    private static readonly Regex DoubleQuoteRe = new("[\u201c-\u201f]", RegexOptions.CultureInvariant);

    private static string UncurlQuotes(string text) => SingleQuoteRe.Replace(DoubleQuoteRe.Replace(text, "\""), "'");

    private static string FixLineBreaks(string text) =>
        text.Replace("\r\n", "\n").Replace('\r', '\n').Replace('\u2028', '\n').Replace('\u2029', '\n').Replace('\u0085', '\n');

    /// <summary>Unpaired surrogates become U+FFFD (pairs are already single code points in .NET strings).</summary>
    private static string FixSurrogates(string text)
    {
        if (!text.Any(char.IsSurrogate)) return text;
        var sb = new StringBuilder(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                sb.Append(c).Append(text[++i]);
            }
            else sb.Append(char.IsSurrogate(c) ? '\uFFFD' : c);
        }
        return sb.ToString();
    }

    private static readonly Regex AnsiRe = new("\u001b\\[((?:\\d|;)*)([a-zA-Z])", RegexOptions.CultureInvariant);

    private static bool IsRemovedControl(char c) =>
        c <= '\u0008' || c == '\u000B' || (c >= '\u000E' && c <= '\u001F') || c == '\u007F'
        || (c >= '\u206A' && c <= '\u206F') || c == '\uFEFF' || (c >= '\uFFF9' && c <= '\uFFFC');

    private static string RemoveControlChars(string text) =>
        text.Any(IsRemovedControl) ? new string(text.Where(c => !IsRemovedControl(c)).ToArray()) : text;
}
