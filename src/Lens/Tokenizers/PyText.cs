using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// Python string and standard-library behaviour that the DeepFloyd IF caption cleaning depends on: <c>str.lower</c>,
/// <c>str.strip</c>, <c>urllib.parse.unquote_plus</c>, <c>html.unescape</c>, Python <c>re</c> character classes in
/// .NET patterns, and the text that BeautifulSoup's html.parser tree gives.
/// </summary>
internal static class PyText
{
    /// <summary>Python <c>str.isspace</c>.</summary>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || (c >= '\x1c' && c <= '\x1f');

    /// <summary>Python <c>str.strip()</c>.</summary>
    public static string Strip(string s)
    {
        int a = 0, b = s.Length;
        while (a < b && IsSpace(s[a])) a++;
        while (b > a && IsSpace(s[b - 1])) b--;
        return s[a..b];
    }

    /// <summary>Python <c>str.lower()</c>: full lowercase mapping (U+0130 -> "i̇") and the Final_Sigma rule.</summary>
    public static string Lower(string s)
    {
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length;)
        {
            Rune.DecodeFromUtf16(s.AsSpan(i), out Rune r, out int len);
            if (r.Value == 0x130) sb.Append("i\u0307");
            else if (r.Value == 0x3A3) sb.Append(IsFinalSigma(s, i) ? '\u03C2' : '\u03C3');
            else sb.Append(Rune.ToLowerInvariant(r).ToString());
            i += len;
        }
        return sb.ToString();
    }

    private static bool IsCased(char c) =>
        char.GetUnicodeCategory(c) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter;

    private static bool IsCaseIgnorable(char c) =>
        char.GetUnicodeCategory(c) is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format
            or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol
        || c is '\'' or '.' or ':' or '^' or '`' or '\u00B7' or '\u2019' or '\u2018' or '\u2024' or '\u2027' or '\u00AD';

    private static bool IsFinalSigma(string s, int i)
    {
        int j = i - 1;
        while (j >= 0 && IsCaseIgnorable(s[j])) j--;
        if (j < 0 || !IsCased(s[j])) return false;
        j = i + 1;
        while (j < s.Length && IsCaseIgnorable(s[j])) j++;
        return j >= s.Length || !IsCased(s[j]);
    }

    /// <summary>
    /// <c>urllib.parse.unquote_plus</c>: '+' to ' ', then %XX decoding; runs of decoded bytes are read as UTF-8
    /// with U+FFFD for invalid sequences; non-ASCII characters are kept and split the runs.
    /// </summary>
    public static string UnquotePlus(string s)
    {
        s = s.Replace('+', ' ');
        if (!s.Contains('%')) return s;
        var sb = new StringBuilder(s.Length);
        var bytes = new List<byte>();
        void Flush()
        {
            if (bytes.Count == 0) return;
            sb.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c > 0x7F) { Flush(); sb.Append(c); continue; }
            if (c == '%' && i + 2 < s.Length && IsHex(s[i + 1]) && IsHex(s[i + 2]))
            {
                bytes.Add((byte)Convert.ToInt32(s.Substring(i + 1, 2), 16));
                i += 2;
                continue;
            }
            bytes.Add((byte)c);
        }
        Flush();
        return sb.ToString();
    }

    private static bool IsHex(char c) => c is >= '0' and <= '9' or >= 'a' and <= 'f' or >= 'A' and <= 'F';

    // ---------------------------------------------------------------- html entities

    /// <summary>HTML5 named references that are also valid without a semicolon (Python html.entities.html5).</summary>
    private static readonly HashSet<string> LegacyNames = new(StringComparer.Ordinal)
    {
        "Aacute", "aacute", "Acirc", "acirc", "acute", "AElig", "aelig", "Agrave", "agrave", "AMP", "amp", "Aring",
        "aring", "Atilde", "atilde", "Auml", "auml", "brvbar", "Ccedil", "ccedil", "cedil", "cent", "COPY", "copy",
        "curren", "deg", "divide", "Eacute", "eacute", "Ecirc", "ecirc", "Egrave", "egrave", "ETH", "eth", "Euml",
        "euml", "frac12", "frac14", "frac34", "GT", "gt", "Iacute", "iacute", "Icirc", "icirc", "iexcl", "Igrave",
        "igrave", "iquest", "Iuml", "iuml", "laquo", "LT", "lt", "macr", "micro", "middot", "nbsp", "not", "Ntilde",
        "ntilde", "Oacute", "oacute", "Ocirc", "ocirc", "Ograve", "ograve", "ordf", "ordm", "Oslash", "oslash",
        "Otilde", "otilde", "Ouml", "ouml", "para", "plusmn", "pound", "QUOT", "quot", "raquo", "REG", "reg", "sect",
        "shy", "sup1", "sup2", "sup3", "szlig", "THORN", "thorn", "times", "Uacute", "uacute", "Ucirc", "ucirc",
        "Ugrave", "ugrave", "uml", "Uuml", "uuml", "Yacute", "yacute", "yen", "yuml",
    };

    /// <summary>
    /// The character(s) of a named reference written with a semicolon, or null. Uses .NET's table (the HTML 4 names
    /// plus &amp;apos;); the upper-case legacy names (AMP, LT, ...) are added. HTML5-only names are not known.
    /// </summary>
    public static string? NamedEntity(string name)
    {
        switch (name)
        {
            case "AMP": return "&";
            case "LT": return "<";
            case "GT": return ">";
            case "QUOT": return "\"";
            case "COPY": return "\u00A9";
            case "REG": return "\u00AE";
        }
        if (name.Length == 0 || name.Length > 32) return null;
        string enc = "&" + name + ";";
        string dec = WebUtility.HtmlDecode(enc);
        return dec == enc ? null : dec;
    }

    // windows-1252 meanings of the C1 range, as html.unescape's _invalid_charrefs and bs4's charref handling use.
    private static readonly string Cp1252High =
        "\u20AC\u0081\u201A\u0192\u201E\u2026\u2020\u2021\u02C6\u2030\u0160\u2039\u0152\u008D\u017D\u008F" +
        "\u0090\u2018\u2019\u201C\u201D\u2022\u2013\u2014\u02DC\u2122\u0161\u203A\u0153\u009D\u017E\u0178";

    /// <summary>windows-1252 decoding of one byte, or null where Python's codec has no character (81 8D 8F 90 9D).</summary>
    public static string? Cp1252(int b)
    {
        if (b < 0x80 || b > 0x9F) return ((char)b).ToString();
        char c = Cp1252High[b - 0x80];
        return c < 0x100 ? null : c.ToString();
    }

    private static readonly Regex CharrefRe = new(@"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)", RegexOptions.CultureInvariant);

    /// <summary>Python <c>html.unescape</c>.</summary>
    public static string HtmlUnescape(string s)
    {
        if (!s.Contains('&')) return s;
        return CharrefRe.Replace(s, m =>
        {
            string g = m.Groups[1].Value;
            if (g[0] == '#')
            {
                bool hex = g.Length > 1 && (g[1] == 'x' || g[1] == 'X');
                string digits = g.Substring(hex ? 2 : 1).TrimEnd(';');
                if (!System.Numerics.BigInteger.TryParse(hex ? "0" + digits : digits,
                        hex ? NumberStyles.AllowHexSpecifier : NumberStyles.None, CultureInfo.InvariantCulture, out var big))
                    return m.Value;
                if (big > 0x10FFFF) return "\uFFFD";
                int num = (int)big;
                if (num == 0) return "\uFFFD";
                if (num == 0x0D) return "\r";
                if (num >= 0x80 && num <= 0x9F) return Cp1252High[num - 0x80].ToString();
                if (num >= 0xD800 && num <= 0xDFFF) return "\uFFFD";
                if (num is >= 0x1 and <= 0x8 or 0xB or >= 0xE and <= 0x1F or >= 0x7F and <= 0x9F or >= 0xFDD0 and <= 0xFDEF
                    || (num & 0xFFFE) == 0xFFFE) return "";
                return char.ConvertFromUtf32(num);
            }
            if (g.EndsWith(';') && NamedEntity(g[..^1]) is string named) return named;
            if (!g.EndsWith(';') && LegacyNames.Contains(g)) return NamedEntity(g)!;
            for (int x = g.Length - 1; x > 1; x--)
                if (LegacyNames.Contains(g[..x])) return NamedEntity(g[..x]) + g[x..];
            return "&" + g;
        });
    }

    // ---------------------------------------------------------------- BeautifulSoup(html.parser).text

    private static readonly Regex StartTagRe = new(@"\G<([a-zA-Z][^\t\n\r\f />\x00]*)[^>]*>", RegexOptions.CultureInvariant);
    private static readonly Regex EndTagRe = new(@"\G</[a-zA-Z][^>]*>", RegexOptions.CultureInvariant);
    private static readonly Regex CommentRe = new(@"\G<!--.*?-->", RegexOptions.CultureInvariant | RegexOptions.Singleline);
    private static readonly Regex DeclRe = new(@"\G<[!?][^>]*>", RegexOptions.CultureInvariant);
    private static readonly Regex EntityRefRe = new(@"\G&([a-zA-Z][-.a-zA-Z0-9]*)[^a-zA-Z0-9]", RegexOptions.CultureInvariant);
    private static readonly Regex CharRefRe = new(@"\G&#(?:[0-9]+|[xX][0-9a-fA-F]+)[^0-9a-fA-F]", RegexOptions.CultureInvariant);

    /// <summary>
    /// <c>BeautifulSoup(text, features="html.parser").text</c>, approximated: tags, comments and declarations are
    /// dropped, the content of &lt;script&gt;/&lt;style&gt; is dropped, and character references are decoded as bs4
    /// does (named: a known name becomes its character, an unknown one stays as "&amp;name" without its ';';
    /// numeric: 128..159 read as windows-1252). A '&lt;' that does not open a complete tag is kept as text, as is an
    /// '&amp;' reference with no terminator at the end (except "&amp;X" alone at the very end, whose '&amp;' Python
    /// 3.11's html.parser drops).
    /// </summary>
    public static string HtmlParserText(string s)
    {
        var sb = new StringBuilder(s.Length);
        int i = 0;
        while (i < s.Length)
        {
            char c = s[i];
            if (c == '<')
            {
                Match m;
                if ((m = CommentRe.Match(s, i)).Success) { i += m.Length; continue; }
                if ((m = StartTagRe.Match(s, i)).Success)
                {
                    i += m.Length;
                    string tag = m.Groups[1].Value.ToLowerInvariant();
                    if ((tag == "script" || tag == "style") && !m.Value.EndsWith("/>", StringComparison.Ordinal))
                    {
                        int end = s.IndexOf("</" + tag, i, StringComparison.OrdinalIgnoreCase);
                        if (end < 0) { i = s.Length; continue; }
                        int close = s.IndexOf('>', end);
                        i = close < 0 ? s.Length : close + 1;
                    }
                    continue;
                }
                if ((m = EndTagRe.Match(s, i)).Success) { i += m.Length; continue; }
                if (i + 1 < s.Length && (s[i + 1] == '!' || s[i + 1] == '?') && (m = DeclRe.Match(s, i)).Success) { i += m.Length; continue; }
                sb.Append(c);
                i++;
                continue;
            }
            if (c == '&')
            {
                Match m;
                if ((m = CharRefRe.Match(s, i)).Success)
                {
                    bool semi = m.Value[^1] == ';';
                    string body = semi ? m.Value[2..^1] : m.Value[2..^1];
                    sb.Append(DecodeBs4Charref(body));
                    i += semi ? m.Length : m.Length - 1;
                    continue;
                }
                if ((m = EntityRefRe.Match(s, i)).Success)
                {
                    string name = m.Groups[1].Value;
                    sb.Append(NamedEntity(name) ?? "&" + name);
                    i += m.Value[^1] == ';' ? m.Length : m.Length - 1;
                    continue;
                }
                if (i == s.Length - 2 && (char.IsAsciiLetter(s[i + 1]) || s[i + 1] == '#')) { i++; continue; }
                sb.Append(c);
                i++;
                continue;
            }
            sb.Append(c);
            i++;
        }
        return sb.ToString();
    }

    private static string DecodeBs4Charref(string body)
    {
        bool hex = body[0] == 'x' || body[0] == 'X';
        if (!System.Numerics.BigInteger.TryParse(hex ? "0" + body[1..] : body,
                hex ? NumberStyles.AllowHexSpecifier : NumberStyles.None, CultureInfo.InvariantCulture, out var big))
            return "\uFFFD";
        if (big < 256 && Cp1252((int)big) is string d) return d;
        if (big > 0x10FFFF) return "\uFFFD";
        int v = (int)big;
        if (v >= 0xD800 && v <= 0xDFFF) return ((char)v).ToString();
        return char.ConvertFromUtf32(v);
    }

    // ---------------------------------------------------------------- Python re classes in .NET patterns

    private const string WordIn = @"\p{L}\p{N}_";
    private const string SpaceIn = @"\s\x1c-\x1f";
    private const string Boundary = @"(?:(?<=[" + WordIn + @"])(?![" + WordIn + @"])|(?<![" + WordIn + @"])(?=[" + WordIn + @"]))";

    /// <summary>
    /// Compiles a Python <c>re</c> pattern (str, default flags) as a .NET Regex with the same meaning for \w \W \s \S
    /// \b (Python: \w = letters, all numerics and '_'; \s = str.isspace) and without .NET's "unrecognized escape"
    /// errors (\_ \').
    /// </summary>
    public static Regex Py(string pattern, RegexOptions extra = RegexOptions.None)
    {
        pattern = pattern.Replace(@"[\w\W]", @"[\d\D]").Replace(@"[\S]", @"\S");
        var sb = new StringBuilder(pattern.Length * 2);
        bool inClass = false;
        for (int i = 0; i < pattern.Length; i++)
        {
            char c = pattern[i];
            if (c == '\\' && i + 1 < pattern.Length)
            {
                char n = pattern[++i];
                switch (n)
                {
                    case 'w': sb.Append(inClass ? WordIn : "[" + WordIn + "]"); break;
                    case 'W':
                        if (inClass) throw new NotSupportedException(@"\W inside a character class");
                        sb.Append("[^" + WordIn + "]");
                        break;
                    case 's': sb.Append(inClass ? SpaceIn : "[" + SpaceIn + "]"); break;
                    case 'S':
                        if (inClass) throw new NotSupportedException(@"\S inside a character class");
                        sb.Append("[^" + SpaceIn + "]");
                        break;
                    case 'b':
                        if (inClass) sb.Append(@"\b");
                        else sb.Append(Boundary);
                        break;
                    case '_': sb.Append('_'); break;
                    case '\'': sb.Append('\''); break;
                    default: sb.Append('\\').Append(n); break;
                }
                continue;
            }
            if (c == '[' && !inClass)
            {
                inClass = true;
                sb.Append(c);
                // A ']' or '^]' right after '[' is literal in both engines.
                if (i + 1 < pattern.Length && pattern[i + 1] == '^') { sb.Append('^'); i++; }
                if (i + 1 < pattern.Length && pattern[i + 1] == ']') { sb.Append(@"\]"); i++; }
                continue;
            }
            if (c == ']' && inClass) inClass = false;
            sb.Append(c);
        }
        return new Regex(sb.ToString(), RegexOptions.CultureInvariant | extra);
    }
}
