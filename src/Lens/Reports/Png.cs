using System.Buffers;
using System.Buffers.Binary;
using System.IO.Compression;

namespace DiffusionLens.Reports;

/// <summary>How <see cref="Png.Encode"/> filters rows before compression (PNG filter types, spec section 9).</summary>
internal enum PngFilter
{
    /// <summary>No filtering (type 0): the fastest, the largest.</summary>
    None,
    /// <summary>Type 1 on every row: difference with the pixel to the left.</summary>
    Sub,
    /// <summary>Type 2 on every row (type 1 on the first): difference with the pixel above.</summary>
    Up,
    /// <summary>Per row, the type among 0-4 whose bytes have the smallest sum of |signed value| (libpng's heuristic).</summary>
    Adaptive,
}

/// <summary>A decoded PNG: 8 bits a sample, row-major, <see cref="Channels"/> samples a pixel
/// (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA; a palette image is expanded to RGB, or RGBA when it has a tRNS chunk).</summary>
internal sealed record PngImage(int Width, int Height, int Channels, byte[] Pixels);

/// <summary>
/// A small managed PNG codec (no native image library). Decodes every standard PNG: colour types 0, 2, 3, 4, 6, bit
/// depths 1-16 (16-bit samples to their high byte, as libpng's <c>png_set_strip_16</c>, Skia and PIL do; sub-byte
/// grey scaled to 0-255, as <c>png_set_expand</c> does), Adam7 interlacing, any split of IDAT, every chunk's CRC checked;
/// ancillary chunks other than tRNS are ignored (no gamma or colour management). Encodes 8-bit grey, grey+alpha, RGB
/// or RGBA with <see cref="ZLibStream"/> at zlib level 0-9. Bad or unsupported input is a <see cref="LensException"/>
/// naming the file and the problem.
/// </summary>
internal static class Png
{
    private static ReadOnlySpan<byte> Signature => [137, 80, 78, 71, 13, 10, 26, 10];

    // ---------------------------------------------------------------- encoding

    /// <summary>PNG bytes of 8-bit pixels with <paramref name="channels"/> samples a pixel (1, 2, 3 or 4), at zlib
    /// level <paramref name="zlibLevel"/> (0 stored ... 9 smallest; every level gives the same pixels back). Rows are
    /// filtered with <paramref name="filter"/>; by default Up at levels 0-2 (speed: a vectorised subtraction, about 3x
    /// faster than Skia at level 1) and Adaptive above (size).</summary>
    public static byte[] Encode(ReadOnlySpan<byte> pixels, int width, int height, int channels, int zlibLevel = 6,
                                PngFilter? filter = null)
    {
        var (buffer, length) = EncodePooled(pixels, width, height, channels, zlibLevel, filter);
        try { return buffer.AsSpan(0, length).ToArray(); }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary><see cref="Encode"/> written to the file <paramref name="path"/> (created or replaced), without a copy
    /// of the PNG's bytes.</summary>
    public static void Save(string path, ReadOnlySpan<byte> pixels, int width, int height, int channels, int zlibLevel = 6,
                            PngFilter? filter = null)
    {
        var (buffer, length) = EncodePooled(pixels, width, height, channels, zlibLevel, filter);
        try
        {
            using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
            file.Write(buffer, 0, length);
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>
    /// The PNG in a buffer from <see cref="ArrayPool{T}.Shared"/> (to return), and its length. Encoding allocates no large
    /// arrays of its own: a sweep encodes a dozen images at once on the thread pool, and in an H200 host's run, each
    /// 512x512 image took 130-180 ms that way (10 ms alone), its output stream growing and copied in new large-object
    /// arrays.
    /// </summary>
    private static (byte[] Buffer, int Length) EncodePooled(ReadOnlySpan<byte> pixels, int width, int height, int channels,
                                                            int zlibLevel, PngFilter? filter)
    {
        var rowFilter = filter ?? (zlibLevel <= 2 ? PngFilter.Up : PngFilter.Adaptive);
        if (width <= 0 || height <= 0) throw new ArgumentException($"image size {width}x{height}");
        if (channels is < 1 or > 4) throw new ArgumentException($"{channels} channels (1-4)");
        if (zlibLevel is < 0 or > 9) throw new ArgumentException($"zlib level {zlibLevel} (0-9)");
        long rowBytes = (long)width * channels;
        if (pixels.Length != rowBytes * height) throw new ArgumentException("pixel buffer does not match the size");
        long filteredBytes = (1 + rowBytes) * height;
        // more than deflate can need for incompressible data (stored blocks: 5 bytes per 64 KiB; a sync flush per strip)
        long bound = filteredBytes + filteredBytes / 8 + (64 << 10);
        if (bound > Array.MaxLength) throw new ArgumentException($"image size {width}x{height} is too large for one PNG buffer");
        var buffer = ArrayPool<byte>.Shared.Rent((int)bound);
        try
        {
            var output = new MemoryStream(buffer, 0, buffer.Length, writable: true, publiclyVisible: true);
            WritePng(output, pixels, width, height, channels, zlibLevel, rowFilter);
            return (buffer, (int)output.Position);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }

    private static void WritePng(MemoryStream output, ReadOnlySpan<byte> pixels, int width, int height, int channels,
                                 int zlibLevel, PngFilter rowFilter)
    {
        byte colorType = channels switch { 1 => 0, 2 => 4, 3 => 2, _ => 6 };
        output.Write(Signature);
        Span<byte> ihdr = stackalloc byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr[4..], height);
        ihdr[8] = 8; ihdr[9] = colorType; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
        WriteChunk(output, "IHDR"u8, ihdr);

        // IDAT: written as one chunk, its length and CRC patched in once the zlib stream is complete
        long idatStart = output.Position;
        output.Write("\0\0\0\0IDAT"u8);
        int rb = width * channels;
        long filteredBytes = (1L + rb) * height;
        if (zlibLevel == 0 || filteredBytes < ParallelMinBytes || Environment.ProcessorCount < 2)
        {
            using var z = new ZLibStream(output, new ZLibCompressionOptions { CompressionLevel = zlibLevel }, leaveOpen: true);
            var line = new byte[1 + rb];
            var trial = rowFilter == PngFilter.Adaptive ? new byte[1 + rb] : null;
            for (int y = 0; y < height; y++)
            {
                var cur = pixels.Slice(y * rb, rb);
                var prev = y == 0 ? default : pixels.Slice((y - 1) * rb, rb);
                FilterRow(rowFilter, cur, prev, y == 0, channels, line, trial);
                z.Write(line);
            }
        }
        else
        {
            var copy = ArrayPool<byte>.Shared.Rent(pixels.Length); // the strips' lambdas cannot capture a span
            try
            {
                pixels.CopyTo(copy);
                WriteParallelZlib(output, copy, width, height, channels, zlibLevel, rowFilter);
            }
            finally { ArrayPool<byte>.Shared.Return(copy); }
        }
        long idatEnd = output.Position;
        var buf = output.GetBuffer();
        int idatLength = checked((int)(idatEnd - idatStart - 8));
        BinaryPrimitives.WriteInt32BigEndian(buf.AsSpan((int)idatStart), idatLength);
        uint crc = Crc32.Compute(buf.AsSpan((int)idatStart + 4, idatLength + 4));
        Span<byte> crcBytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crcBytes, crc);
        output.Write(crcBytes);
        WriteChunk(output, "IEND"u8, default);
    }

    /// <summary>Filtered image data from this size up is compressed in strips on several threads.</summary>
    internal const long ParallelMinBytes = 1 << 20;

    /// <summary>
    /// The zlib stream of the filtered rows, compressed in strips of rows on the thread pool (as pigz does): each strip
    /// is raw deflate ending in a sync flush (byte-aligned, not final) except the last, which ends the stream; the
    /// strips, concatenated between the zlib header and the Adler-32 of all the data, are one valid zlib stream. Strips
    /// do not share a dictionary, which costs a little size, never pixels.
    /// </summary>
    private static void WriteParallelZlib(Stream output, byte[] pixels, int width, int height, int channels, int zlibLevel, PngFilter filter)
    {
        int rb = width * channels, line = rb + 1;
        long filteredBytes = (long)line * height;
        var pool = ArrayPool<byte>.Shared;
        var filtered = pool.Rent(checked((int)filteredBytes));
        int strips = (int)Math.Clamp(filteredBytes / (256 << 10), 2, Environment.ProcessorCount);
        int rowsPer = (height + strips - 1) / strips;
        strips = (height + rowsPer - 1) / rowsPer;
        var parts = new (byte[] Buffer, int Length)[strips];
        try
        {
            Parallel.For(0, strips, i =>
            {
                int y0 = i * rowsPer, y1 = Math.Min(height, y0 + rowsPer);
                var trial = filter == PngFilter.Adaptive ? new byte[line] : null;
                var row = new byte[line];
                for (int y = y0; y < y1; y++)
                {
                    var cur = pixels.AsSpan(y * rb, rb);
                    var prev = y == 0 ? default : pixels.AsSpan((y - 1) * rb, rb);
                    FilterRow(filter, cur, prev, y == 0, channels, row, trial);
                    row.CopyTo(filtered, (long)y * line);
                }
                int stripBytes = (y1 - y0) * line;
                var part = pool.Rent(stripBytes + stripBytes / 8 + (64 << 10));
                parts[i] = (part, 0);
                var ms = new MemoryStream(part, 0, part.Length, writable: true, publiclyVisible: true);
                int length;
                using (var d = new DeflateStream(ms, new ZLibCompressionOptions { CompressionLevel = zlibLevel }, leaveOpen: true))
                {
                    d.Write(filtered, y0 * line, stripBytes);
                    d.Flush(); // Z_SYNC_FLUSH: everything so far, byte-aligned, no final block
                    length = (int)ms.Position; // taken before Dispose adds the final block
                }
                if (i == strips - 1) length = (int)ms.Position; // the last strip ends the stream (Z_FINISH)
                parts[i] = (part, length);
            });
            output.Write([0x78, 0x01]); // deflate, 32K window, no dictionary (FLEVEL is informational)
            foreach (var (buffer, length) in parts) output.Write(buffer, 0, length);
            Span<byte> adler = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(adler, Adler32(filtered.AsSpan(0, (int)filteredBytes)));
            output.Write(adler);
        }
        finally
        {
            pool.Return(filtered);
            foreach (var (buffer, _) in parts)
                if (buffer is not null) pool.Return(buffer);
        }
    }

    /// <summary>Adler-32 (RFC 1950) of <paramref name="data"/>.</summary>
    internal static uint Adler32(ReadOnlySpan<byte> data)
    {
        const uint Mod = 65521;
        uint a = 1, b = 0;
        while (data.Length > 0)
        {
            int n = Math.Min(data.Length, 5552); // the most bytes before b can overflow 32 bits
            foreach (var x in data[..n]) { a += x; b += a; }
            a %= Mod; b %= Mod;
            data = data[n..];
        }
        return (b << 16) | a;
    }

    private static void FilterRow(PngFilter filter, ReadOnlySpan<byte> cur, ReadOnlySpan<byte> prev, bool first, int bpp,
                                  byte[] line, byte[]? trial)
    {
        var dst = line.AsSpan(1);
        switch (filter)
        {
            case PngFilter.None:
                line[0] = 0; cur.CopyTo(dst); return;
            case PngFilter.Sub:
                line[0] = 1; Sub(cur, dst, bpp); return;
            case PngFilter.Up when !first:
                line[0] = 2; Up(cur, prev, dst); return;
            case PngFilter.Up:
                line[0] = 1; Sub(cur, dst, bpp); return;
        }
        // adaptive: keep the candidate with the smallest sum of |(sbyte)b|
        var t = trial!.AsSpan(1);
        cur.CopyTo(dst); line[0] = 0;
        long best = Cost(dst);
        for (byte type = 1; type <= 4; type++)
        {
            if (first && type == 2) continue; // Up of the first row is None
            switch (type)
            {
                case 1: Sub(cur, t, bpp); break;
                case 2: Up(cur, prev, t); break;
                case 3: Average(cur, first ? default : prev, t, bpp); break;
                default: Paeth(cur, first ? default : prev, t, bpp); break;
            }
            long cost = Cost(t);
            if (cost < best) { best = cost; t.CopyTo(dst); line[0] = type; }
        }
    }

    private static long Cost(ReadOnlySpan<byte> row)
    {
        long sum = 0;
        foreach (var b in row) sum += Math.Abs((int)(sbyte)b);
        return sum;
    }

    private static void Sub(ReadOnlySpan<byte> cur, Span<byte> dst, int bpp)
    {
        cur[..bpp].CopyTo(dst);
        for (int i = bpp; i < cur.Length; i++) dst[i] = (byte)(cur[i] - cur[i - bpp]);
    }

    private static void Up(ReadOnlySpan<byte> cur, ReadOnlySpan<byte> prev, Span<byte> dst)
    {
        int i = 0;
        if (System.Numerics.Vector.IsHardwareAccelerated)
        {
            int n = System.Numerics.Vector<byte>.Count;
            for (; i + n <= cur.Length; i += n)
                (new System.Numerics.Vector<byte>(cur[i..]) - new System.Numerics.Vector<byte>(prev[i..])).CopyTo(dst[i..]);
        }
        for (; i < cur.Length; i++) dst[i] = (byte)(cur[i] - prev[i]);
    }

    private static void Average(ReadOnlySpan<byte> cur, ReadOnlySpan<byte> prev, Span<byte> dst, int bpp)
    {
        for (int i = 0; i < cur.Length; i++)
        {
            int a = i >= bpp ? cur[i - bpp] : 0, b = prev.IsEmpty ? 0 : prev[i];
            dst[i] = (byte)(cur[i] - ((a + b) >> 1));
        }
    }

    private static void Paeth(ReadOnlySpan<byte> cur, ReadOnlySpan<byte> prev, Span<byte> dst, int bpp)
    {
        for (int i = 0; i < cur.Length; i++)
        {
            int a = i >= bpp ? cur[i - bpp] : 0, b = prev.IsEmpty ? 0 : prev[i], c = i >= bpp && !prev.IsEmpty ? prev[i - bpp] : 0;
            dst[i] = (byte)(cur[i] - PaethPredictor(a, b, c));
        }
    }

    private static int PaethPredictor(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }

    private static void WriteChunk(Stream s, ReadOnlySpan<byte> type, ReadOnlySpan<byte> data)
    {
        Span<byte> head = stackalloc byte[8];
        BinaryPrimitives.WriteInt32BigEndian(head, data.Length);
        type.CopyTo(head[4..]);
        s.Write(head);
        s.Write(data);
        uint crc = Crc32.Update(Crc32.Update(0xFFFFFFFFu, type), data) ^ 0xFFFFFFFFu;
        Span<byte> tail = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(tail, crc);
        s.Write(tail);
    }

    // ---------------------------------------------------------------- decoding

    /// <summary>Decodes PNG bytes; <paramref name="name"/> (a path) names the file in error messages.</summary>
    public static PngImage Decode(ReadOnlySpan<byte> data, string name)
    {
        if (data.Length < 8 || !data[..8].SequenceEqual(Signature))
        {
            string what = data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF ? " (it is a JPEG; only PNG is read)"
                        : data.Length >= 4 && data[..4].SequenceEqual("RIFF"u8) ? " (it is a RIFF/WebP file; only PNG is read)"
                        : data.Length >= 6 && (data[..6].SequenceEqual("GIF87a"u8) || data[..6].SequenceEqual("GIF89a"u8)) ? " (it is a GIF; only PNG is read)"
                        : "";
            throw new LensException($"not a PNG image: {name}: bad signature{what}");
        }
        int pos = 8;
        bool haveHeader = false, sawIdat = false, idatEnded = false, sawEnd = false;
        int width = 0, height = 0, depth = 0, colorType = 0, interlace = 0;
        byte[]? palette = null, paletteAlpha = null;
        var idat = new MemoryStream();
        while (!sawEnd)
        {
            if (pos == data.Length) throw new LensException($"truncated PNG {name}: no IEND chunk" + (haveHeader && sawIdat ? "" : " and no image data"));
            if (data.Length - pos < 12) throw new LensException($"truncated PNG {name}: a chunk header is cut off at byte {pos}");
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data[pos..]);
            var type = data.Slice(pos + 4, 4);
            string typeName = System.Text.Encoding.ASCII.GetString(type);
            foreach (var c in type)
                if (c is not ((>= (byte)'A' and <= (byte)'Z') or (>= (byte)'a' and <= (byte)'z')))
                    throw new LensException($"corrupt PNG {name}: bad chunk type at byte {pos}");
            if (length > int.MaxValue || length > data.Length - pos - 12)
                throw new LensException($"truncated PNG {name}: chunk {typeName} at byte {pos} declares {length} bytes, the file has {Math.Max(0, data.Length - pos - 12)} left");
            var body = data.Slice(pos + 8, (int)length);
            uint stored = BinaryPrimitives.ReadUInt32BigEndian(data[(pos + 8 + (int)length)..]);
            uint actual = Crc32.Compute(data.Slice(pos + 4, (int)length + 4));
            if (stored != actual) throw new LensException($"corrupt PNG {name}: CRC mismatch in chunk {typeName} at byte {pos} (stored {stored:x8}, computed {actual:x8})");
            if (!haveHeader && typeName != "IHDR") throw new LensException($"corrupt PNG {name}: the first chunk is {typeName}, not IHDR");
            if (sawIdat && typeName != "IDAT") idatEnded = true;
            switch (typeName)
            {
                case "IHDR":
                    if (haveHeader) throw new LensException($"corrupt PNG {name}: a second IHDR chunk");
                    if (length != 13) throw new LensException($"corrupt PNG {name}: IHDR has {length} bytes, not 13");
                    haveHeader = true;
                    width = BinaryPrimitives.ReadInt32BigEndian(body);
                    height = BinaryPrimitives.ReadInt32BigEndian(body[4..]);
                    depth = body[8]; colorType = body[9]; interlace = body[12];
                    CheckHeader(name, width, height, depth, colorType, body[10], body[11], interlace);
                    break;
                case "PLTE":
                    if (length % 3 != 0 || length == 0 || length > 768) throw new LensException($"corrupt PNG {name}: PLTE has {length} bytes (a multiple of 3, at most 768)");
                    palette = body.ToArray();
                    break;
                case "tRNS":
                    if (colorType == 3) paletteAlpha = body.ToArray(); // grey/RGB colour keys are ignored (alpha is dropped anyway)
                    break;
                case "IDAT":
                    if (idatEnded) throw new LensException($"corrupt PNG {name}: IDAT chunks are not consecutive");
                    sawIdat = true;
                    idat.Write(body);
                    break;
                case "IEND":
                    sawEnd = true;
                    break;
                default:
                    if (char.IsUpper(typeName[0])) throw new LensException($"unsupported PNG {name}: unknown critical chunk {typeName}");
                    break; // ancillary: ignored
            }
            pos += 12 + (int)length;
        }
        if (!sawIdat) throw new LensException($"corrupt PNG {name}: no IDAT chunk");
        if (colorType == 3 && palette is null) throw new LensException($"corrupt PNG {name}: a palette image without a PLTE chunk");

        int samples = colorType switch { 0 => 1, 2 => 3, 3 => 1, 4 => 2, _ => 4 };
        int bitsPerPixel = samples * depth;
        int bpp = Math.Max(1, bitsPerPixel / 8);
        int outChannels = colorType == 3 ? (paletteAlpha is null ? 3 : 4) : samples;
        long outBytes = (long)width * height * outChannels;
        if (outBytes > Array.MaxLength) throw new LensException($"unsupported PNG {name}: {width}x{height} is too large to decode");

        // the filtered scanlines of every pass
        var passes = interlace == 1 ? Adam7 : [(0, 0, 1, 1)];
        long rawLength = 0;
        foreach (var (x0, y0, dx, dy) in passes)
        {
            long pw = PassSize(width, x0, dx), ph = PassSize(height, y0, dy);
            if (pw > 0 && ph > 0) rawLength += ph * (1 + (pw * bitsPerPixel + 7) / 8);
        }
        if (rawLength > Array.MaxLength) throw new LensException($"unsupported PNG {name}: {width}x{height} is too large to decode");
        if (rawLength > idat.Length * 1100 + 4096) // deflate expands at most ~1032:1
            throw new LensException($"truncated PNG {name}: {idat.Length} bytes of compressed image data cannot hold {width}x{height} pixels");
        var raw = new byte[rawLength];
        idat.Position = 0;
        try
        {
            using var z = new ZLibStream(idat, CompressionMode.Decompress);
            int got = 0;
            while (got < raw.Length)
            {
                int n = z.Read(raw, got, raw.Length - got);
                if (n == 0) break;
                got += n;
            }
            if (got < raw.Length) throw new LensException($"truncated PNG {name}: the image data ends after {got} of {raw.Length} bytes");
        }
        catch (InvalidDataException e)
        {
            throw new LensException($"corrupt PNG {name}: bad compressed image data ({e.Message})", e);
        }

        var pixels = new byte[outBytes];
        var img = new PngImage(width, height, outChannels, pixels);
        int offset = 0;
        foreach (var (x0, y0, dx, dy) in passes)
        {
            int pw = PassSize(width, x0, dx), ph = PassSize(height, y0, dy);
            if (pw == 0 || ph == 0) continue;
            int rowBytes = (int)(((long)pw * bitsPerPixel + 7) / 8);
            var rows = raw.AsSpan(offset, ph * (1 + rowBytes));
            Unfilter(rows, rowBytes, bpp, name);
            for (int r = 0; r < ph; r++)
                EmitRow(img, rows.Slice(r * (1 + rowBytes) + 1, rowBytes), y0 + r * dy, x0, dx, pw, depth, colorType, palette, paletteAlpha, name);
            offset += ph * (1 + rowBytes);
        }
        return img;
    }

    private static readonly (int X0, int Y0, int Dx, int Dy)[] Adam7 =
        [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];

    private static int PassSize(int size, int start, int step) => size <= start ? 0 : (size - start + step - 1) / step;

    private static void CheckHeader(string name, int width, int height, int depth, int colorType, int compression, int filterMethod, int interlace)
    {
        if (width <= 0 || height <= 0) throw new LensException($"corrupt PNG {name}: image size {(uint)width}x{(uint)height}");
        bool depthOk = colorType switch
        {
            0 => depth is 1 or 2 or 4 or 8 or 16,
            3 => depth is 1 or 2 or 4 or 8,
            2 or 4 or 6 => depth is 8 or 16,
            _ => throw new LensException($"corrupt PNG {name}: colour type {colorType} (PNG has 0, 2, 3, 4, 6)"),
        };
        if (!depthOk) throw new LensException($"corrupt PNG {name}: bit depth {depth} is not allowed with colour type {colorType}");
        if (compression != 0) throw new LensException($"unsupported PNG {name}: compression method {compression} (only 0, deflate)");
        if (filterMethod != 0) throw new LensException($"unsupported PNG {name}: filter method {filterMethod} (only 0)");
        if (interlace > 1) throw new LensException($"unsupported PNG {name}: interlace method {interlace} (only 0, none, and 1, Adam7)");
    }

    /// <summary>Reverses the filters of consecutive [type, bytes...] rows in place.</summary>
    private static void Unfilter(Span<byte> rows, int rowBytes, int bpp, string name)
    {
        int stride = rowBytes + 1;
        for (int r = 0, o = 0; o < rows.Length; r++, o += stride)
        {
            byte type = rows[o];
            var cur = rows.Slice(o + 1, rowBytes);
            var prev = r == 0 ? default : rows.Slice(o - stride + 1, rowBytes);
            switch (type)
            {
                case 0: break;
                case 1:
                    for (int i = bpp; i < cur.Length; i++) cur[i] += cur[i - bpp];
                    break;
                case 2:
                    if (r == 0) break;
                    int k = 0;
                    if (System.Numerics.Vector.IsHardwareAccelerated)
                    {
                        int n = System.Numerics.Vector<byte>.Count;
                        for (; k + n <= cur.Length; k += n)
                            (new System.Numerics.Vector<byte>(cur[k..]) + new System.Numerics.Vector<byte>(prev[k..])).CopyTo(cur[k..]);
                    }
                    for (; k < cur.Length; k++) cur[k] += prev[k];
                    break;
                case 3:
                    for (int i = 0; i < cur.Length; i++)
                    {
                        int a = i >= bpp ? cur[i - bpp] : 0, b = r == 0 ? 0 : prev[i];
                        cur[i] = (byte)(cur[i] + ((a + b) >> 1));
                    }
                    break;
                case 4:
                    for (int i = 0; i < cur.Length; i++)
                    {
                        int a = i >= bpp ? cur[i - bpp] : 0, b = r == 0 ? 0 : prev[i], c = i >= bpp && r != 0 ? prev[i - bpp] : 0;
                        cur[i] = (byte)(cur[i] + PaethPredictor(a, b, c));
                    }
                    break;
                default:
                    throw new LensException($"corrupt PNG {name}: filter type {type} in scanline {r} (PNG has 0-4)");
            }
        }
    }

    /// <summary>One unfiltered scanline of a pass to 8-bit output samples at x0, x0+dx, ... of row y.</summary>
    private static void EmitRow(PngImage img, ReadOnlySpan<byte> src, int y, int x0, int dx, int count, int depth,
                                int colorType, byte[]? palette, byte[]? paletteAlpha, string name)
    {
        int ch = img.Channels;
        var dst = img.Pixels.AsSpan(y * img.Width * ch);
        if (depth == 8 && colorType != 3)
        {
            if (dx == 1) { src.CopyTo(dst); return; }
            for (int i = 0; i < count; i++) src.Slice(i * ch, ch).CopyTo(dst[((x0 + i * dx) * ch)..]);
            return;
        }
        if (depth == 16)
        {
            for (int i = 0; i < count; i++)
            {
                int d = (x0 + i * dx) * ch;
                for (int c = 0; c < ch; c++)
                {
                    dst[d + c] = src[2 * (i * ch + c)]; // the high byte, as libpng's strip_16, Skia and PIL's RGB;16B do
                }
            }
            return;
        }
        // depth 1, 2, 4 (grey or palette) or 8 (palette): one sample a pixel, packed from the high bits
        int mask = (1 << depth) - 1, perByte = 8 / depth;
        int scale = colorType == 0 ? 255 / mask : 0;
        for (int i = 0; i < count; i++)
        {
            int v = depth == 8 ? src[i] : src[i / perByte] >> (8 - depth * (i % perByte + 1)) & mask;
            int d = (x0 + i * dx) * ch;
            if (colorType == 0) { dst[d] = (byte)(v * scale); continue; }
            if (3 * v + 2 >= palette!.Length) throw new LensException($"corrupt PNG {name}: palette index {v} is beyond the {palette.Length / 3}-entry palette");
            dst[d] = palette[3 * v]; dst[d + 1] = palette[3 * v + 1]; dst[d + 2] = palette[3 * v + 2];
            if (ch == 4) dst[d + 3] = v < paletteAlpha!.Length ? paletteAlpha[v] : (byte)255;
        }
    }

    /// <summary>CRC-32 (ISO 3309 / PNG), slicing by 4.</summary>
    private static class Crc32
    {
        private static readonly uint[] Table = Build();

        private static uint[] Build()
        {
            var t = new uint[4 * 256];
            for (uint n = 0; n < 256; n++)
            {
                uint c = n;
                for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
                t[n] = c;
            }
            for (int n = 0; n < 256; n++)
                for (int s = 1; s < 4; s++) t[s * 256 + n] = (t[(s - 1) * 256 + n] >> 8) ^ t[t[(s - 1) * 256 + n] & 0xFF];
            return t;
        }

        public static uint Compute(ReadOnlySpan<byte> data) => Update(0xFFFFFFFFu, data) ^ 0xFFFFFFFFu;

        public static uint Update(uint crc, ReadOnlySpan<byte> data)
        {
            var t = Table;
            int i = 0;
            for (; i + 4 <= data.Length; i += 4)
            {
                crc ^= BinaryPrimitives.ReadUInt32LittleEndian(data[i..]);
                crc = t[768 + (crc & 0xFF)] ^ t[512 + ((crc >> 8) & 0xFF)] ^ t[256 + ((crc >> 16) & 0xFF)] ^ t[crc >> 24];
            }
            for (; i < data.Length; i++) crc = t[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
            return crc;
        }
    }
}
