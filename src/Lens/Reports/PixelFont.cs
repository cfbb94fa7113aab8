namespace DiffusionLens.Reports;

/// <summary>
/// A built-in 5x7 bitmap font for grid labels: drawn pixel by pixel, so labels look the same on every machine
/// (no system fonts needed) and grid snapshots stay byte-stable.
/// </summary>
internal static class PixelFont
{
    public const int GlyphWidth = 5, GlyphHeight = 7, Advance = 6;

    // each glyph: 7 rows of 5 bits, most significant bit on the left
    private static readonly Dictionary<char, byte[]> Glyphs = new()
    {
        ['0'] = new byte[] { 0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E },
        ['1'] = new byte[] { 0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E },
        ['2'] = new byte[] { 0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F },
        ['3'] = new byte[] { 0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E },
        ['4'] = new byte[] { 0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02 },
        ['5'] = new byte[] { 0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E },
        ['6'] = new byte[] { 0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E },
        ['7'] = new byte[] { 0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08 },
        ['8'] = new byte[] { 0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E },
        ['9'] = new byte[] { 0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C },
        ['a'] = new byte[] { 0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F },
        ['c'] = new byte[] { 0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E },
        ['e'] = new byte[] { 0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E },
        ['k'] = new byte[] { 0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12 },
        ['l'] = new byte[] { 0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E },
        ['o'] = new byte[] { 0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E },
        ['r'] = new byte[] { 0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10 },
        ['s'] = new byte[] { 0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E },
        ['t'] = new byte[] { 0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06 },
        ['y'] = new byte[] { 0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E },
        [' '] = new byte[] { 0, 0, 0, 0, 0, 0, 0 },
        ['-'] = new byte[] { 0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00 },
    };

    public static int MeasureWidth(string text, int scale) => text.Length == 0 ? 0 : (text.Length * Advance - 1) * scale;

    public static void Draw(RgbImage img, string text, int x0, int y0, int scale, (byte R, byte G, byte B) color)
    {
        int x = x0;
        foreach (var ch in text)
        {
            if (!Glyphs.TryGetValue(char.ToLowerInvariant(ch), out var rows)) rows = Glyphs['-'];
            for (int r = 0; r < GlyphHeight; r++)
            for (int c = 0; c < GlyphWidth; c++)
            {
                if ((rows[r] >> (GlyphWidth - 1 - c) & 1) == 0) continue;
                for (int dy = 0; dy < scale; dy++)
                for (int dx = 0; dx < scale; dx++)
                {
                    int px = x + c * scale + dx, py = y0 + r * scale + dy;
                    if (px < 0 || py < 0 || px >= img.Width || py >= img.Height) continue;
                    img[px, py, 0] = color.R; img[px, py, 1] = color.G; img[px, py, 2] = color.B;
                }
            }
            x += Advance * scale;
        }
    }
}
