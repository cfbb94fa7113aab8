using System.Text.RegularExpressions;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// The DeepFloyd IF pipelines' prompt preprocessing (diffusers <c>IFPipeline._text_preprocessing</c> and
/// <c>_clean_caption</c>). Every step of <c>_clean_caption</c> is kept in order; Python <c>re</c> semantics are kept
/// for \w \s \b (see <see cref="PyText.Py"/>). The library calls are re-implemented: <c>urllib.parse.unquote_plus</c>,
/// <c>BeautifulSoup(caption, features="html.parser").text</c> (approximated by <see cref="PyText.HtmlParserText"/>),
/// <c>ftfy.fix_text</c> (<see cref="Ftfy"/>) and <c>html.unescape</c>.
/// </summary>
internal static class CaptionCleaner
{
    /// <summary>
    /// What the IF pipeline does to one prompt: with <paramref name="cleanCaption"/>, <see cref="Clean"/> twice (the
    /// pipeline calls it twice); without, <c>text.lower().strip()</c>. (The pipeline's default for <c>__call__</c> is
    /// clean_caption=True; diffusers falls back to False when bs4 or ftfy is not installed.)
    /// </summary>
    public static string Preprocess(string text, bool cleanCaption)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (cleanCaption) return Clean(Clean(text));
        return PyText.Strip(PyText.Lower(text));
    }

    /// <summary>One pass of <c>IFPipeline._clean_caption</c>.</summary>
    public static string Clean(string caption)
    {
        ArgumentNullException.ThrowIfNull(caption);
        caption = PyText.UnquotePlus(caption);
        caption = PyText.Lower(PyText.Strip(caption));
        caption = caption.Replace("<person>", "person");
        // urls:
        caption = UrlRe1.Replace(caption, "");
        caption = UrlRe2.Replace(caption, "");
        // html:
        caption = PyText.HtmlParserText(caption);
        // @<nickname>
        caption = NicknameRe.Replace(caption, "");
        // CJK ranges
        foreach (var re in CjkRes) caption = re.Replace(caption, "");
        // all types of dash --> "-"
        caption = DashRe.Replace(caption, "-");
        // quotes to one standard
        caption = DoubleQuotesRe.Replace(caption, "\"");
        caption = SingleQuotesRe.Replace(caption, "'");
        // &quot;
        caption = QuotEntityRe.Replace(caption, "");
        // &amp
        caption = caption.Replace("&amp", "");
        // ip addresses:
        caption = IpRe.Replace(caption, " ");
        // article ids:
        caption = ArticleIdRe.Replace(caption, "");
        // \n (a literal backslash-n)
        caption = caption.Replace("\\n", " ");
        // "#123", "#12345..", "123456.."
        caption = Hash3Re.Replace(caption, "");
        caption = Hash5Re.Replace(caption, "");
        caption = Digits6Re.Replace(caption, "");
        // filenames:
        caption = FilenameRe.Replace(caption, "");
        caption = RepeatedQuotesRe.Replace(caption, "\"");
        caption = RepeatedDotsRe.Replace(caption, " ");
        caption = BadPunctRe.Replace(caption, " ");
        caption = SpacedDotRe.Replace(caption, " ");
        // this-is-my-cute-cat / this_is_my_cute_cat
        if (caption.Count(c => c == '-' || c == '_') > 3) caption = DashUnderscoreRe.Replace(caption, " ");

        caption = Ftfy.FixText(caption);
        caption = PyText.HtmlUnescape(PyText.HtmlUnescape(caption));

        caption = IdRe1.Replace(caption, ""); // jc6640
        caption = IdRe2.Replace(caption, ""); // jc6640vc
        caption = IdRe3.Replace(caption, ""); // 6640vc231

        caption = ShippingRe.Replace(caption, "");
        caption = DownloadRe.Replace(caption, "");
        caption = ClickRe.Replace(caption, "");
        caption = ImageExtRe.Replace(caption, "");
        caption = PageRe.Replace(caption, "");

        caption = IdRe4.Replace(caption, " "); // j2d1a2a...

        caption = SizeRe.Replace(caption, "");

        caption = ColonRe.Replace(caption, ": ");
        caption = PunctSpaceRe.Replace(caption, "$1 ");
        caption = WhitespaceRe.Replace(caption, " ");

        caption = QuotedWholeRe.Replace(caption, "$1");
        caption = LeadingPunctRe.Replace(caption, "");
        caption = TrailingPunctRe.Replace(caption, "");
        caption = DotWordRe.Replace(caption, "");

        return PyText.Strip(caption);
    }

    private static readonly Regex UrlRe1 = PyText.Py(
        @"\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))");
    private static readonly Regex UrlRe2 = PyText.Py(
        @"\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))");
    private static readonly Regex NicknameRe = PyText.Py(@"@[\w\d]+\b");
    private static readonly Regex[] CjkRes =
    {
        PyText.Py(@"[\u31c0-\u31ef]+"), PyText.Py(@"[\u31f0-\u31ff]+"), PyText.Py(@"[\u3200-\u32ff]+"),
        PyText.Py(@"[\u3300-\u33ff]+"), PyText.Py(@"[\u3400-\u4dbf]+"), PyText.Py(@"[\u4dc0-\u4dff]+"),
        PyText.Py(@"[\u4e00-\u9fff]+"),
    };
    private static readonly Regex DashRe = PyText.Py(
        @"[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030\u30A0\uFE31\uFE32\uFE58\uFE63\uFF0D]+");
    private static readonly Regex DoubleQuotesRe = PyText.Py("[`\u00b4\u00ab\u00bb\u201c\u201d\u00a8]");
    private static readonly Regex SingleQuotesRe = PyText.Py("[\u2018\u2019]");
    private static readonly Regex QuotEntityRe = PyText.Py(@"&quot;?");
    private static readonly Regex IpRe = PyText.Py(@"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}");
    private static readonly Regex ArticleIdRe = PyText.Py(@"\d:\d\d\s+$");
    private static readonly Regex Hash3Re = PyText.Py(@"#\d{1,3}\b");
    private static readonly Regex Hash5Re = PyText.Py(@"#\d{5,}\b");
    private static readonly Regex Digits6Re = PyText.Py(@"\b\d{6,}\b");
    private static readonly Regex FilenameRe = PyText.Py(@"[\S]+\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)");
    private static readonly Regex RepeatedQuotesRe = PyText.Py(@"[\""\']{2,}");
    private static readonly Regex RepeatedDotsRe = PyText.Py(@"[\.]{2,}");
    // diffusers' bad_punct_regex: r"[" + "#®•©™&@·º½¾¿¡§~" + r"\)\(\]\[\}\{\|" + "\\" + r"\/\*" + r"]{1,}"
    private static readonly Regex BadPunctRe = PyText.Py("[#\u00ae\u2022\u00a9\u2122&@\u00b7\u00ba\u00bd\u00be\u00bf\u00a1\u00a7~" + @"\)\(\]\[\}\{\|" + "\\" + @"\/\*" + "]{1,}");
    private static readonly Regex SpacedDotRe = PyText.Py(@"\s+\.\s+");
    private static readonly Regex DashUnderscoreRe = PyText.Py(@"(?:\-|\_)");
    private static readonly Regex IdRe1 = PyText.Py(@"\b[a-zA-Z]{1,3}\d{3,15}\b");
    private static readonly Regex IdRe2 = PyText.Py(@"\b[a-zA-Z]+\d+[a-zA-Z]+\b");
    private static readonly Regex IdRe3 = PyText.Py(@"\b\d+[a-zA-Z]+\d+\b");
    private static readonly Regex ShippingRe = PyText.Py(@"(worldwide\s+)?(free\s+)?shipping");
    private static readonly Regex DownloadRe = PyText.Py(@"(free\s)?download(\sfree)?");
    private static readonly Regex ClickRe = PyText.Py(@"\bclick\b\s(?:for|on)\s\w+");
    private static readonly Regex ImageExtRe = PyText.Py(@"\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\simage[s]?)?");
    private static readonly Regex PageRe = PyText.Py(@"\bpage\s+\d+\b");
    private static readonly Regex IdRe4 = PyText.Py(@"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b");
    private static readonly Regex SizeRe = PyText.Py("\\b\\d+\\.?\\d*[x\u0445\u00d7]\\d+\\.?\\d*\\b");
    private static readonly Regex ColonRe = PyText.Py(@"\b\s+\:\s+");
    private static readonly Regex PunctSpaceRe = PyText.Py(@"(\D[,\./])\b");
    private static readonly Regex WhitespaceRe = PyText.Py(@"\s+");
    private static readonly Regex QuotedWholeRe = PyText.Py(@"^[\""\']([\w\W]+)[\""\']$");
    private static readonly Regex LeadingPunctRe = PyText.Py(@"^[\'\_,\-\:;]");
    private static readonly Regex TrailingPunctRe = PyText.Py(@"[\'\_,\-\:\-\+]$");
    private static readonly Regex DotWordRe = PyText.Py(@"^\.\S+$");
}
