using System.Text;
using System.Text.RegularExpressions;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// ftfy 6.3's <c>fix_encoding</c> (mojibake repair), with its default configuration: while the text is not ASCII and
/// the badness heuristic finds mojibake, re-encode it in the first single-byte encoding (latin-1, sloppy
/// windows-1252/1251/1250/1253/1254/1257, iso-8859-2, macroman, cp437) that can represent it and decode as UTF-8
/// (after restoring spaces that stood for byte A0 and replacing lossy sequences); else fix embedded UTF-8 runs, else
/// read Latin-1 as windows-1252, else map C1 controls.
/// </summary>
internal static class FtfyEncoding
{
    private static readonly Regex BadnessRe = PyText.Py(FtfyData.BadnessPattern);
    private static readonly Regex Utf8DetectorRe = PyText.Py(FtfyData.Utf8DetectorPattern);

    private sealed class Charmap
    {
        public required string Name;
        public required string Table;
        public required Dictionary<char, byte> Reverse;
        public required HashSet<char> Possible;
    }

    private static readonly Charmap[] Charmaps = FtfyData.Charmaps.Select(c =>
    {
        var reverse = new Dictionary<char, byte>();
        for (int b = 255; b >= 0; b--) reverse[c.Table[b]] = (byte)b; // first byte wins, as Python's charmap encoder
        // ftfy.chardata.ENCODING_REGEXES: [\x00-\x19\x1b-\x7f] plus the decodings of 0x80-0xFF and 0x1A.
        var possible = new HashSet<char>();
        for (int i = 0; i <= 0x7F; i++) if (i != 0x1A) possible.Add((char)i);
        for (int b = 0x80; b <= 0xFF; b++) possible.Add(c.Table[b]);
        possible.Add(c.Table[0x1A]);
        return new Charmap { Name = c.Name, Table = c.Table, Reverse = reverse, Possible = possible };
    }).ToArray();

    private static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);

    public static bool IsBad(string text) => BadnessRe.IsMatch(text);

    public static string FixEncoding(string text)
    {
        while (true)
        {
            string prev = text;
            text = OneStep(text);
            if (text == prev) return text;
        }
    }

    private static string OneStep(string text)
    {
        if (text.Length == 0 || text.All(c => c <= 0x7F) || !IsBad(text)) return text;

        var possible = new List<string>();
        foreach (var cm in Charmaps)
        {
            if (!text.All(cm.Possible.Contains)) continue;
            possible.Add(cm.Name);
            byte[] bytes = Encode(text, cm);
            if (cm.Name != "macroman" && AlteredUtf8Re.IsMatch(Latin1(bytes)))
                bytes = RestoreByteA0(bytes);
            if (cm.Name.StartsWith("sloppy", StringComparison.Ordinal))
                bytes = FromLatin1(LossyUtf8Re.Replace(Latin1(bytes), "\u00ef\u00bf\u00bd"));
            string? fixedText = bytes.Contains((byte)0xED) || bytes.Contains((byte)0xC0) ? DecodeUtf8Variants(bytes) : DecodeUtf8(bytes);
            if (fixedText is not null) return fixedText;
        }

        if (Utf8DetectorRe.IsMatch(text))
        {
            string fixedText = Utf8DetectorRe.Replace(text, m =>
                m.Value.Length < text.Length && IsBad(m.Value) ? FixEncoding(m.Value) : m.Value);
            if (fixedText != text) return fixedText;
        }

        // ftfy checks for "windows-1252" in the list, which only ever holds "sloppy-windows-1252", so Latin-1 text
        // is always tried as strict windows-1252.
        if (possible.Contains("latin-1"))
        {
            var sb = new StringBuilder(text.Length);
            bool ok = true;
            foreach (char c in text)
            {
                string? d = PyText.Cp1252(c);
                if (d is null) { ok = false; break; }
                sb.Append(d);
            }
            if (ok && sb.ToString() != text) return sb.ToString();
        }

        if (Ftfy.C1Re.IsMatch(text)) return Ftfy.FixC1Controls(text);
        return text;
    }

    private static byte[] Encode(string text, Charmap cm)
    {
        var bytes = new byte[text.Length];
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            bytes[i] = c <= 0x7F && c != 0x1A ? (byte)c : cm.Reverse[c];
        }
        return bytes;
    }

    private static string Latin1(byte[] b) => Encoding.Latin1.GetString(b);
    private static byte[] FromLatin1(string s) => Encoding.Latin1.GetBytes(s);

    private static readonly Regex AlteredUtf8Re = new(
        "[\u00c2\u00c3\u00c5\u00ce\u00d0\u00d9][ ]" +
        "|[\u00e2\u00e3][ ][\u0080-\u0084\u0086-\u009f\u00a1-\u00bf]" +
        "|[\u00e0-\u00e3][\u0080-\u0084\u0086-\u009f\u00a1-\u00bf][ ]" +
        "|[\u00f0][ ][\u0080-\u00bf][\u0080-\u00bf]" +
        "|[\u00f0][\u0080-\u00bf][ ][\u0080-\u00bf]" +
        "|[\u00f0][\u0080-\u00bf][\u0080-\u00bf][ ]", RegexOptions.CultureInvariant);

    private static readonly Regex AGraveWordRe = new("\u00c3 (?! |quele|quela|quilo|s )", RegexOptions.CultureInvariant);

    private static readonly Regex LossyUtf8Re = new(
        "[\u00c2-\u00df][\u001a]" +
        "|[\u00c2-\u00c3][?]" +
        "|\u00ed[\u00a0-\u00af][\u001a?]\u00ed[\u00b0-\u00bf][\u001a?\u0080-\u00bf]" +
        "|\u00ed[\u00a0-\u00af][\u001a?\u0080-\u00bf]\u00ed[\u00b0-\u00bf][\u001a?]" +
        "|[\u00e0-\u00ef][\u001a?][\u001a\u0080-\u00bf]" +
        "|[\u00e0-\u00ef][\u001a\u0080-\u00bf][\u001a?]" +
        "|[\u00f0-\u00f4][\u001a?][\u001a\u0080-\u00bf][\u001a\u0080-\u00bf]" +
        "|[\u00f0-\u00f4][\u001a\u0080-\u00bf][\u001a?][\u001a\u0080-\u00bf]" +
        "|[\u00f0-\u00f4][\u001a\u0080-\u00bf][\u001a\u0080-\u00bf][\u001a?]" +
        "|\u001a", RegexOptions.CultureInvariant);

    private static byte[] RestoreByteA0(byte[] bytes)
    {
        string s = AGraveWordRe.Replace(Latin1(bytes), "\u00c3\u00a0 ");
        s = AlteredUtf8Re.Replace(s, m => m.Value.Replace(' ', '\u00a0'));
        return FromLatin1(s);
    }

    private static string? DecodeUtf8(byte[] bytes)
    {
        try { return StrictUtf8.GetString(bytes); }
        catch (DecoderFallbackException) { return null; }
    }

    /// <summary>ftfy's "utf-8-variants": UTF-8 plus CESU-8 surrogate pairs and Java's C0 80 for U+0000.</summary>
    private static string? DecodeUtf8Variants(byte[] b)
    {
        var sb = new StringBuilder(b.Length);
        int start = 0, i = 0;
        while (i < b.Length)
        {
            if (b[i] == 0xC0 && i + 1 < b.Length && b[i + 1] == 0x80)
            {
                if (!Flush(i)) return null;
                sb.Append('\0');
                i += 2;
                start = i;
                continue;
            }
            if (b[i] == 0xED && i + 5 < b.Length && b[i + 1] >= 0xA0 && b[i + 1] <= 0xAF && b[i + 2] >= 0x80 && b[i + 2] <= 0xBF
                && b[i + 3] == 0xED && b[i + 4] >= 0xB0 && b[i + 4] <= 0xBF && b[i + 5] >= 0x80 && b[i + 5] <= 0xBF)
            {
                if (!Flush(i)) return null;
                int cp = ((b[i + 1] & 0x0F) << 16) + ((b[i + 2] & 0x3F) << 10) + ((b[i + 4] & 0x0F) << 6) + (b[i + 5] & 0x3F) + 0x10000;
                sb.Append(char.ConvertFromUtf32(cp));
                i += 6;
                start = i;
                continue;
            }
            i++;
        }
        return Flush(b.Length) ? sb.ToString() : null;

        bool Flush(int end)
        {
            if (end <= start) return true;
            string? s = DecodeUtf8(b[start..end]);
            if (s is null) return false;
            sb.Append(s);
            return true;
        }
    }
}
