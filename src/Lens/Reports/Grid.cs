namespace DiffusionLens.Reports;

/// <summary>
/// The sweep's contact sheet: every layer image in order, each under its label ("layer 3", "hidden state 4"), on a white sheet.
/// Small images are enlarged by an integer factor so that tiles are at least <see cref="MinTile"/> pixels wide.
/// </summary>
internal static class Grid
{
    public const int MinTile = 128;
    private const int Pad = 8;

    public static RgbImage Compose(IReadOnlyList<(string Label, RgbImage Image)> tiles, int? columns = null)
    {
        if (tiles.Count == 0) throw new ArgumentException("a grid needs at least one image");
        int w = tiles.Max(t => t.Image.Width), h = tiles.Max(t => t.Image.Height);
        int factor = Math.Max(1, (int)Math.Ceiling((double)MinTile / Math.Max(w, h)));
        int tw = w * factor, th = h * factor;
        int cols = columns ?? Math.Min(tiles.Count, tiles.Count <= 4 ? tiles.Count : (int)Math.Ceiling(Math.Sqrt(tiles.Count * 1.5)));
        int rows = (tiles.Count + cols - 1) / cols;
        int textScale = Math.Max(1, Math.Min(3, tw / 64));
        // a long label ("hidden state 12") is drawn smaller rather than past its tile
        int longest = tiles.Max(t => t.Label.Length);
        while (textScale > 1 && PixelFont.MeasureWidth(new string('x', longest), textScale) > tw) textScale--;
        int labelH = PixelFont.GlyphHeight * textScale + 2 * Pad;
        var sheet = new RgbImage(cols * (tw + Pad) + Pad, rows * (th + labelH) + Pad);
        sheet.Fill(255, 255, 255);
        for (int i = 0; i < tiles.Count; i++)
        {
            int cx = Pad + (i % cols) * (tw + Pad), cy = (i / cols) * (th + labelH);
            var (label, img) = tiles[i];
            int lw = PixelFont.MeasureWidth(label, textScale);
            PixelFont.Draw(sheet, label, cx + Math.Max(0, (tw - lw) / 2), cy + Pad, textScale, (0, 0, 0));
            sheet.Blit(img.Scale(factor), cx, cy + labelH);
        }
        return sheet;
    }
}
