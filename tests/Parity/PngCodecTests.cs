using System.IO.Compression;
using DiffusionLens.Reports;
using Xunit;
using static TorchSharp.torch;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The managed PNG codec (src/Lens/Reports/Png.cs): every reference PNG decodes to the 8-bit image diffusers wrote
/// ((x*255).round() of its float image, stored in tensors.safetensors); each colour type, bit depth, filter mode and
/// Adam7 decode to the pixels of an independent plain writer (<see cref="RawPng"/>); encode->decode is bit-exact;
/// bad input is one LensException naming the file and the problem.
/// </summary>
public class PngCodecTests
{
    public static TheoryData<string> References()
    {
        var d = new TheoryData<string>();
        foreach (var dir in Directory.GetDirectories(ReferenceData.ReferencesDir).OrderBy(x => x, StringComparer.Ordinal))
            if (File.Exists(Path.Combine(dir, "reference.json")) && Directory.GetFiles(dir, "*.png").Length > 0)
                d.Add(Path.GetFileName(dir));
        return d;
    }

    [Theory]
    [MemberData(nameof(References))]
    public void Reference_pngs_decode_to_the_pixels_diffusers_wrote(string name)
    {
        var r = ReferenceData.Open(name);
        var images = r.Json["images"]!.AsObject();
        var pairs = new List<(string File, string Key)>();
        if (images["stock"]?.GetValue<string>() is string stock) pairs.Add((stock, "stock.image"));
        foreach (var (layer, file) in images["layers"]!.AsObject()) pairs.Add((file!.GetValue<string>(), $"layer.{layer}.image"));
        int checkedCount = 0;
        foreach (var (file, key) in pairs)
        {
            var path = Path.Combine(r.Folder, file);
            Assert.True(File.Exists(path), $"{path} is named in reference.json");
            if (!r.Has(key)) continue;
            using var scope = NewDisposeScope();
            var want = RgbImage.FromUnitHwc(r.Read(key));
            var got = RgbImage.Load(path);
            Assert.Equal((want.Width, want.Height), (got.Width, got.Height));
            Assert.True(want.Pixels.AsSpan().SequenceEqual(got.Pixels), $"{path}: decoded pixels differ from (x*255).round() of {key}");
            checkedCount++;
        }
        Assert.True(checkedCount > 0, $"{name}: no PNG had its float image in the tensors");
    }

    [Theory]
    [InlineData(64, 48, 1)]   // one thread
    [InlineData(700, 600, 1)] // parallel strips (over Png.ParallelMinBytes)
    [InlineData(700, 600, 0)] // stored
    public void Save_writes_the_bytes_Encode_returns_and_they_decode_to_the_pixels(int width, int height, int level)
    {
        var pixels = new byte[width * height * 3];
        var rnd = new Random(width + level);
        for (int i = 0; i < pixels.Length; i++) pixels[i] = (byte)((i / 3 % width) + rnd.Next(16));
        var bytes = Png.Encode(pixels, width, height, 3, level);
        var path = Path.Combine(Path.GetTempPath(), $"lens-png-save-{Guid.NewGuid():N}.png");
        try
        {
            Png.Save(path, pixels, width, height, 3, level);
            Assert.Equal(bytes, File.ReadAllBytes(path));
            // twice in a row: pooled buffers handed back and rented again give the same file
            Png.Save(path, pixels, width, height, 3, level);
            Assert.Equal(bytes, File.ReadAllBytes(path));
        }
        finally { File.Delete(path); }
        var decoded = Png.Decode(bytes, "saved");
        Assert.Equal((width, height, 3), (decoded.Width, decoded.Height, decoded.Channels));
        Assert.Equal(pixels, decoded.Pixels);
    }

    [Fact]
    public void Every_png_in_the_repository_decodes()
    {
        var files = Directory.GetFiles(Path.Combine(ReferenceData.RepoRoot, "fixtures"), "*.png", SearchOption.AllDirectories)
            .Concat(Directory.GetFiles(ImageSnapshot.Folder, "*.png")).Where(f => !f.EndsWith(".received.png") && !f.EndsWith(".diff.png")).ToList();
        Assert.True(files.Count > 100, $"{files.Count} PNG files");
        foreach (var f in files)
        {
            var img = Png.Decode(File.ReadAllBytes(f), f);
            Assert.True(img.Width > 0 && img.Height > 0 && img.Pixels.Length == img.Width * img.Height * img.Channels, f);
        }
    }

    public static TheoryData<int, int> ColorTypesAndDepths() => new()
    {
        { 0, 1 }, { 0, 2 }, { 0, 4 }, { 0, 8 }, { 0, 16 }, { 2, 8 }, { 2, 16 }, { 3, 1 }, { 3, 2 }, { 3, 4 }, { 3, 8 },
        { 4, 8 }, { 4, 16 }, { 6, 8 }, { 6, 16 },
    };

    [Theory]
    [MemberData(nameof(ColorTypesAndDepths))]
    public void Every_colour_type_and_depth_decodes_plain_and_adam7(int colorType, int depth)
    {
        var rng = new Random(colorType * 100 + depth);
        foreach (var (w, h) in new[] { (1, 1), (3, 2), (13, 9), (33, 17) })
        foreach (var adam7 in new[] { false, true })
        {
            byte[]? plte = null, trns = null;
            int entries = 0;
            if (colorType == 3)
            {
                entries = Math.Min(1 << depth, 7 + depth * 20);
                plte = new byte[entries * 3];
                rng.NextBytes(plte);
                if (w > 3) { trns = new byte[entries / 2]; rng.NextBytes(trns); } // some entries opaque by default
            }
            var s = RawPng.RandomSamples(rng, w, h, RawPng.Samples(colorType), depth, entries);
            var file = RawPng.Write(s, depth, colorType, adam7, plte, trns, idatPieces: 3);
            var (ch, want) = RawPng.Expected(s, depth, colorType, plte, trns);
            var got = Png.Decode(file, "test.png");
            Assert.Equal((w, h, ch), (got.Width, got.Height, got.Channels));
            Assert.True(want.AsSpan().SequenceEqual(got.Pixels), $"type {colorType} depth {depth} {w}x{h} adam7={adam7}");
        }
    }

    [Fact]
    public void Sixteen_bit_samples_keep_their_high_byte_for_every_value() // what Skia (libpng) and PIL give
    {
        var s = new int[256, 256, 1];
        for (int v = 0; v < 65536; v++) s[v / 256, v % 256, 0] = v;
        var got = Png.Decode(RawPng.Write(s, 16, 0), "grey16.png");
        for (int v = 0; v < 65536; v++)
            Assert.Equal((byte)(v / 256), got.Pixels[v]);
    }

    [Fact]
    public void Grey_and_alpha_become_rgb_as_pil_convert_does()
    {
        var s = new int[1, 2, 2] { { { 10, 0 }, { 200, 128 } } };
        Assert.Equal(new byte[] { 10, 10, 10, 200, 200, 200 }, RgbImage.FromPng(Png.Decode(RawPng.Write(s, 8, 4), "ga.png")).Pixels);
        var rgba = new int[1, 2, 4] { { { 200, 100, 50, 0 }, { 10, 20, 30, 128 } } };
        Assert.Equal(new byte[] { 200, 100, 50, 10, 20, 30 }, RgbImage.FromPng(Png.Decode(RawPng.Write(rgba, 8, 6), "rgba.png")).Pixels);
    }

    /// <summary>(channels, filter name, zlib level); the filter goes by name since PngFilter is internal to the library.</summary>
    public static TheoryData<int, string, int> EncodeCases()
    {
        var d = new TheoryData<int, string, int>();
        foreach (var ch in new[] { 1, 2, 3, 4 })
        foreach (var f in Enum.GetValues<PngFilter>())
            d.Add(ch, f.ToString(), ch == 3 ? 1 : 6);
        d.Add(3, nameof(PngFilter.Adaptive), 0);
        d.Add(3, nameof(PngFilter.Adaptive), 9);
        return d;
    }

    [Theory]
    [MemberData(nameof(EncodeCases))]
    public void Encode_decode_round_trips_bit_exactly(int channels, string filterName, int level)
    {
        var filter = Enum.Parse<PngFilter>(filterName);
        var rng = new Random(channels * 31 + (int)filter * 7 + level);
        foreach (var (w, h) in new[] { (1, 1), (2, 7), (17, 5), (64, 48) })
        {
            // half noise, half smooth gradients so that every filter type wins somewhere under Adaptive
            var px = new byte[w * h * channels];
            for (int y = 0; y < h; y++)
            for (int x = 0; x < w * channels; x++)
                px[y * w * channels + x] = y % 2 == 0 ? (byte)rng.Next(256) : (byte)(x * 3 + y * 5);
            var png = Png.Encode(px, w, h, channels, level, filter);
            var got = Png.Decode(png, "round-trip.png");
            Assert.Equal((w, h, channels), (got.Width, got.Height, got.Channels));
            Assert.True(px.AsSpan().SequenceEqual(got.Pixels), $"{channels} channels {filter} level {level} {w}x{h}");
        }
    }

    [Theory]
    [InlineData(1, "Up")]
    [InlineData(6, "Adaptive")]
    [InlineData(9, "None")]
    public void Large_images_compressed_in_parallel_strips_round_trip_and_are_one_valid_zlib_stream(int level, string filterName)
    {
        // above Png.ParallelMinBytes: strips of rows deflated on several threads, joined with sync flushes
        int w = 1000, h = 700, channels = 3;
        Assert.True((long)(w * channels + 1) * h >= Png.ParallelMinBytes);
        var rng = new Random(level);
        var px = new byte[w * h * channels];
        for (int i = 0; i < px.Length; i++) px[i] = (i / (w * channels)) % 3 == 0 ? (byte)rng.Next(256) : (byte)(i % 251);
        var png = Png.Encode(px, w, h, channels, level, Enum.Parse<PngFilter>(filterName));
        var got = Png.Decode(png, "parallel.png");
        Assert.True(px.AsSpan().SequenceEqual(got.Pixels), $"level {level} {filterName}: pixels differ after the round trip");
        // an independent inflater reads the whole IDAT as one zlib stream to its end (the Adler-32 is checked by it)
        int idat = png.AsSpan().IndexOf("IDAT"u8);
        int len = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(idat - 4));
        using var z = new ZLibStream(new MemoryStream(png, idat + 4, len), CompressionMode.Decompress);
        var all = new MemoryStream();
        z.CopyTo(all);
        Assert.Equal((long)(w * channels + 1) * h, all.Length);
    }

    [Fact]
    public void Adler32_matches_rfc1950_values()
    {
        Assert.Equal(0x11E60398u, Png.Adler32("Wikipedia"u8)); // the worked example of the Adler-32 article
        Assert.Equal(1u, Png.Adler32(ReadOnlySpan<byte>.Empty));
        // long input crosses the 5552-byte reduction boundary: compare with the textbook byte-at-a-time definition
        var data = new byte[20000];
        new Random(3).NextBytes(data);
        uint a = 1, b = 0;
        foreach (var x in data) { a = (a + x) % 65521; b = (b + a) % 65521; }
        Assert.Equal((b << 16) | a, Png.Adler32(data));
    }

    [Fact]
    public void Adaptive_filtering_uses_all_five_filter_types_and_each_decodes()
    {
        var rng = new Random(5);
        int w = 96, h = 80;
        var px = new byte[w * h * 3];
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w * 3; x++)
            px[y * w * 3 + x] = (y % 5) switch
            {
                0 => (byte)rng.Next(256),            // noise: None
                1 => (byte)(x / 3 * 2),              // horizontal ramp: Sub
                2 => px[(y - 1) * w * 3 + x],        // repeat of the row above: Up
                3 => (byte)((x / 3 + y) * 7 % 256),
                _ => (byte)(rng.Next(3) + x / 3 + y),
            };
        var png = Png.Encode(px, w, h, 3, 6, PngFilter.Adaptive);
        Assert.Equal(px, Png.Decode(png, "adaptive.png").Pixels);
        var types = FilterTypes(png, w * 3);
        Assert.True(types.Distinct().Count() >= 4, $"filter types used: {string.Join(",", types.Distinct().Order())}");

        // each filter type decoded on its own: rows written with one type everywhere
        foreach (var f in new[] { PngFilter.None, PngFilter.Sub, PngFilter.Up })
            Assert.Equal(px, Png.Decode(Png.Encode(px, w, h, 3, 1, f), "f.png").Pixels);
    }

    /// <summary>The filter byte of every scanline of a non-interlaced PNG written by <see cref="Png.Encode"/> (one IDAT).</summary>
    private static byte[] FilterTypes(byte[] png, int rowBytes)
    {
        int pos = 8;
        var idat = new MemoryStream();
        while (pos < png.Length)
        {
            int len = png[pos] << 24 | png[pos + 1] << 16 | png[pos + 2] << 8 | png[pos + 3];
            if (png[pos + 4] == 'I' && png[pos + 5] == 'D') idat.Write(png, pos + 8, len);
            pos += 12 + len;
        }
        idat.Position = 0;
        var raw = new MemoryStream();
        using (var z = new ZLibStream(idat, CompressionMode.Decompress)) z.CopyTo(raw);
        var b = raw.ToArray();
        return Enumerable.Range(0, b.Length / (rowBytes + 1)).Select(r => b[r * (rowBytes + 1)]).ToArray();
    }

    [Fact]
    public void RgbImage_writes_an_rgb_png_that_reads_back()
    {
        using var tmp = new TempDir();
        var px = Enumerable.Range(0, 31 * 7 * 3).Select(i => (byte)(i * 37 % 251)).ToArray();
        var path = Path.Combine(tmp.Path, "sub", "a.png");
        new RgbImage(31, 7, px).SavePng(path, 1);
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(2, bytes[25]); // IHDR colour type: RGB
        Assert.Equal(px, RgbImage.Load(path).Pixels);
    }

    // ------------------------------------------------------------------ bad input

    private static byte[] Valid() => RawPng.Write(RawPng.RandomSamples(new Random(1), 8, 6, 3, 8), 8, 2);

    private static void AssertRejected(byte[] file, params string[] fragments)
    {
        using var tmp = new TempDir();
        var path = Path.Combine(tmp.Path, "bad.png");
        File.WriteAllBytes(path, file);
        var e = Assert.Throws<LensException>(() => RgbImage.Load(path));
        Assert.Contains(path, e.Message);
        foreach (var f in fragments) Assert.Contains(f, e.Message);
    }

    [Fact]
    public void A_valid_file_is_accepted_so_the_rejections_below_are_about_the_damage() =>
        Assert.Equal(8, Png.Decode(Valid(), "ok.png").Width);

    [Fact]
    public void Bad_signature_is_rejected()
    {
        var f = Valid(); f[1] = (byte)'X';
        AssertRejected(f, "not a PNG", "signature");
        AssertRejected([0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, (byte)'J', (byte)'F', (byte)'I', (byte)'F'], "not a PNG", "JPEG");
        AssertRejected([], "not a PNG");
    }

    [Fact]
    public void Bad_crc_is_rejected_naming_the_chunk()
    {
        var f = Valid(); f[8 + 8 + 2] ^= 1; // a byte of IHDR's width
        AssertRejected(f, "CRC", "IHDR");
        var g = Valid(); g[^20] ^= 0x40; // inside the IDAT data
        AssertRejected(g, "CRC", "IDAT");
    }

    [Fact]
    public void Truncated_files_and_image_data_are_rejected()
    {
        var f = Valid();
        AssertRejected(f[..(f.Length - 30)], "truncated"); // cut inside IDAT
        AssertRejected(f[..(f.Length - 12)], "truncated", "IEND"); // IEND missing

        // a complete, valid chunk structure whose zlib stream holds half the scanlines
        var s = RawPng.RandomSamples(new Random(2), 8, 6, 3, 8);
        var half = RawPng.Scanlines(s, 8)[..(6 / 2 * (1 + 24))];
        AssertRejected(RawPng.Write(s, 8, 2, rawScanlines: half), "truncated", "image data");
        // the zlib stream itself cut short (chunk CRCs intact)
        var z = new MemoryStream();
        using (var zs = new ZLibStream(z, CompressionLevel.Optimal, leaveOpen: true)) zs.Write(RawPng.Scanlines(s, 8));
        var comp = z.ToArray()[..^10];
        var o = new MemoryStream();
        o.Write(Valid()[..33]); // signature + IHDR (same size and type)
        RawPng.Chunk(o, "IDAT", comp);
        RawPng.Chunk(o, "IEND", []);
        var e = Assert.Throws<LensException>(() => Png.Decode(o.ToArray(), "cut.png"));
        Assert.Contains("cut.png", e.Message);
    }

    [Fact]
    public void Unsupported_or_invalid_header_values_are_named()
    {
        var s = RawPng.RandomSamples(new Random(3), 4, 4, 3, 8);
        AssertRejected(RawPng.Write(s, 8, 2, interlaceByte: 2), "interlace method 2");
        AssertRejected(RawPng.Write(s, 4, 2), "bit depth 4", "colour type 2");
        AssertRejected(RawPng.Write(RawPng.RandomSamples(new Random(3), 4, 4, 1, 8), 8, 5), "colour type 5");
        AssertRejected(RawPng.Write(RawPng.RandomSamples(new Random(3), 4, 4, 1, 8, 4), 8, 3), "PLTE");
    }

    [Fact]
    public void Bad_filter_type_and_palette_index_are_rejected()
    {
        var s = RawPng.RandomSamples(new Random(4), 4, 2, 3, 8);
        var raw = RawPng.Scanlines(s, 8);
        raw[1 + 12] = 5;
        AssertRejected(RawPng.Write(s, 8, 2, rawScanlines: raw), "filter type 5");
        var idx = new int[1, 2, 1] { { { 0 }, { 3 } } };
        AssertRejected(RawPng.Write(idx, 8, 3, plte: [1, 2, 3, 4, 5, 6]), "palette index 3");
    }

    [Fact]
    public void Unknown_critical_chunks_are_rejected_ancillary_ones_ignored()
    {
        var f = Valid();
        var withChunk = (string type) =>
        {
            var o = new MemoryStream();
            o.Write(f[..33]);
            RawPng.Chunk(o, type, [1, 2, 3]);
            o.Write(f[33..]);
            return o.ToArray();
        };
        AssertRejected(withChunk("ZZZZ"), "critical chunk ZZZZ");
        Assert.Equal(Png.Decode(f, "a").Pixels, Png.Decode(withChunk("zzZZ"), "b").Pixels);
    }

    private sealed class TempDir : IDisposable
    {
        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "lens-png-" + Guid.NewGuid().ToString("N"));
        public TempDir() => Directory.CreateDirectory(Path);
        public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
    }
}
