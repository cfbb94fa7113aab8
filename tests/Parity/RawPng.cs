using System.IO.Compression;

namespace DiffusionLens.Tests;

/// <summary>
/// A deliberately plain PNG writer for tests, independent of the library's codec: unfiltered scanlines (filter 0, or a
/// chosen filter byte with raw data for malformed cases), any colour type and bit depth, optional Adam7, PLTE/tRNS,
/// IDAT split into pieces, a bitwise CRC. Samples are given per pixel and channel at the PNG's own bit depth.
/// </summary>
public static class RawPng
{
    public static readonly (int X0, int Y0, int Dx, int Dy)[] Adam7Passes =
        [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];

    public static int Samples(int colorType) => colorType switch { 0 => 1, 2 => 3, 3 => 1, 4 => 2, 6 => 4, _ => throw new ArgumentException() };

    /// <summary>Scanline bytes (filter byte 0 first) of the pixels at (x0 + i dx, y0 + j dy).</summary>
    public static byte[] Scanlines(int[,,] s, int depth, int x0 = 0, int y0 = 0, int dx = 1, int dy = 1)
    {
        int h = s.GetLength(0), w = s.GetLength(1), ch = s.GetLength(2);
        var bytes = new List<byte>();
        for (int y = y0; y < h; y += dy)
        {
            if (x0 >= w) break;
            bytes.Add(0);
            var bits = new List<int>(); // MSB-first bit stream of the row
            for (int x = x0; x < w; x += dx)
                for (int c = 0; c < ch; c++)
                    for (int b = depth - 1; b >= 0; b--) bits.Add((s[y, x, c] >> b) & 1);
            while (bits.Count % 8 != 0) bits.Add(0);
            for (int i = 0; i < bits.Count; i += 8)
            {
                int v = 0;
                for (int b = 0; b < 8; b++) v = v << 1 | bits[i + b];
                bytes.Add((byte)v);
            }
        }
        return bytes.ToArray();
    }

    public static byte[] Write(int[,,] samples, int depth, int colorType, bool adam7 = false, byte[]? plte = null,
                               byte[]? trns = null, int idatPieces = 1, int interlaceByte = -1, byte[]? rawScanlines = null)
    {
        int h = samples.GetLength(0), w = samples.GetLength(1);
        byte[] raw;
        if (rawScanlines is not null) raw = rawScanlines;
        else if (!adam7) raw = Scanlines(samples, depth);
        else raw = Adam7Passes.SelectMany(p => Scanlines(samples, depth, p.X0, p.Y0, p.Dx, p.Dy)).ToArray();
        var z = new MemoryStream();
        using (var zs = new ZLibStream(z, CompressionLevel.Optimal, leaveOpen: true)) zs.Write(raw);
        var comp = z.ToArray();

        var o = new MemoryStream();
        o.Write([137, 80, 78, 71, 13, 10, 26, 10]);
        var ihdr = new byte[13];
        BigEndian(ihdr, 0, (uint)w); BigEndian(ihdr, 4, (uint)h);
        ihdr[8] = (byte)depth; ihdr[9] = (byte)colorType;
        ihdr[12] = (byte)(interlaceByte >= 0 ? interlaceByte : adam7 ? 1 : 0);
        Chunk(o, "IHDR", ihdr);
        if (plte is not null) Chunk(o, "PLTE", plte);
        if (trns is not null) Chunk(o, "tRNS", trns);
        int piece = (comp.Length + idatPieces - 1) / idatPieces;
        for (int i = 0; i < comp.Length; i += piece) Chunk(o, "IDAT", comp[i..Math.Min(comp.Length, i + piece)]);
        Chunk(o, "IEND", []);
        return o.ToArray();
    }

    public static void Chunk(Stream o, string type, byte[] data)
    {
        var head = new byte[8];
        BigEndian(head, 0, (uint)data.Length);
        for (int i = 0; i < 4; i++) head[4 + i] = (byte)type[i];
        o.Write(head);
        o.Write(data);
        var crcInput = head[4..].Concat(data).ToArray();
        var tail = new byte[4];
        BigEndian(tail, 0, Crc(crcInput));
        o.Write(tail);
    }

    /// <summary>Bitwise CRC-32 (the PNG spec's definition, no table).</summary>
    public static uint Crc(byte[] data)
    {
        uint c = 0xFFFFFFFF;
        foreach (var b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return c ^ 0xFFFFFFFF;
    }

    public static void BigEndian(byte[] a, int o, uint v)
    {
        a[o] = (byte)(v >> 24); a[o + 1] = (byte)(v >> 16); a[o + 2] = (byte)(v >> 8); a[o + 3] = (byte)v;
    }

    /// <summary>Random samples in [0, 2^depth) (palette images: indices below <paramref name="maxIndex"/>).</summary>
    public static int[,,] RandomSamples(Random rng, int w, int h, int ch, int depth, int maxIndex = 0)
    {
        var s = new int[h, w, ch];
        int limit = maxIndex > 0 ? maxIndex : 1 << depth;
        for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) for (int c = 0; c < ch; c++) s[y, x, c] = rng.Next(limit);
        return s;
    }

    /// <summary>The 8-bit pixels a decoder should give: 16-bit to the high byte (as libpng's strip_16, Skia and PIL), sub-byte grey
    /// scaled to 0-255, palette expanded to RGB (RGBA with tRNS, missing entries opaque).</summary>
    public static (int Channels, byte[] Pixels) Expected(int[,,] s, int depth, int colorType, byte[]? plte = null, byte[]? trns = null)
    {
        int h = s.GetLength(0), w = s.GetLength(1), ch = s.GetLength(2);
        int outCh = colorType == 3 ? (trns is null ? 3 : 4) : ch;
        var px = new byte[w * h * outCh];
        int k = 0;
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            if (colorType == 3)
            {
                int i = s[y, x, 0];
                px[k++] = plte![3 * i]; px[k++] = plte[3 * i + 1]; px[k++] = plte[3 * i + 2];
                if (outCh == 4) px[k++] = i < trns!.Length ? trns[i] : (byte)255;
                continue;
            }
            for (int c = 0; c < ch; c++)
                px[k++] = depth == 16 ? (byte)(s[y, x, c] / 256)
                                      : (byte)(s[y, x, c] * 255 / ((1 << depth) - 1));
        }
        return (outCh, px);
    }
}
