using DiffusionLens.Reports;
using SkiaSharp;
using Xunit;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// The library's managed PNG decoder against an independent one (libpng inside SkiaSharp, a test-only dependency):
/// every PNG in the repository, every colour type / bit depth / Adam7 variant of a plain writer, and PNGs Skia itself
/// encodes, decode to the same RGBA pixels; and what the library encodes, Skia reads back exactly.
/// </summary>
public class PngCrossCheckTests
{
    private static string RepoRoot
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "DiffusionLens.sln"))) return d.FullName;
            throw new InvalidOperationException("DiffusionLens.sln not found");
        }
    }

    /// <summary>Skia's decode as unpremultiplied RGBA (no colour management).</summary>
    private static (int W, int H, byte[] Rgba) SkiaRgba(byte[] png)
    {
        using var data = SKData.CreateCopy(png);
        using var codec = SKCodec.Create(data) ?? throw new InvalidOperationException("Skia cannot open it");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bmp = new SKBitmap(info);
        var result = codec.GetPixels(info, bmp.GetPixels());
        Assert.Equal(SKCodecResult.Success, result);
        var span = bmp.GetPixelSpan();
        var rgba = new byte[info.Width * info.Height * 4];
        for (int y = 0; y < info.Height; y++) span.Slice(y * bmp.RowBytes, info.Width * 4).CopyTo(rgba.AsSpan(y * info.Width * 4));
        return (info.Width, info.Height, rgba);
    }

    private static byte[] ToRgba(PngImage img)
    {
        int n = img.Width * img.Height, ch = img.Channels;
        var o = new byte[n * 4];
        for (int i = 0; i < n; i++)
        {
            var s = img.Pixels.AsSpan(i * ch, ch);
            if (ch <= 2) { o[4 * i] = o[4 * i + 1] = o[4 * i + 2] = s[0]; o[4 * i + 3] = ch == 2 ? s[1] : (byte)255; }
            else { o[4 * i] = s[0]; o[4 * i + 1] = s[1]; o[4 * i + 2] = s[2]; o[4 * i + 3] = ch == 4 ? s[3] : (byte)255; }
        }
        return o;
    }

    private static void AssertSame(byte[] png, string what)
    {
        var (w, h, want) = SkiaRgba(png);
        var got = Png.Decode(png, what);
        Assert.Equal((w, h), (got.Width, got.Height));
        var rgba = ToRgba(got);
        int diffs = 0;
        for (int i = 0; i < rgba.Length; i++) if (rgba[i] != want[i]) diffs++;
        Assert.True(diffs == 0, $"{what}: {diffs} samples differ from Skia's decode");
    }

    [Fact]
    public void Every_png_in_the_repository_decodes_as_skia_decodes_it()
    {
        var files = Directory.GetFiles(Path.Combine(RepoRoot, "fixtures"), "*.png", SearchOption.AllDirectories)
            .Concat(Directory.GetFiles(Path.Combine(RepoRoot, "tests", "Parity", "Snapshots"), "*.png"))
            .Where(f => !f.EndsWith(".received.png") && !f.EndsWith(".diff.png")).ToList();
        Assert.True(files.Count > 100, $"{files.Count} PNG files");
        foreach (var f in files) AssertSame(File.ReadAllBytes(f), f);
    }

    [Theory]
    [InlineData(0, 1)] [InlineData(0, 2)] [InlineData(0, 4)] [InlineData(0, 8)] [InlineData(0, 16)]
    [InlineData(2, 8)] [InlineData(2, 16)] [InlineData(3, 1)] [InlineData(3, 2)] [InlineData(3, 4)] [InlineData(3, 8)]
    [InlineData(4, 8)] [InlineData(4, 16)] [InlineData(6, 8)] [InlineData(6, 16)]
    public void Every_colour_type_depth_and_interlace_decodes_as_skia_decodes_it(int colorType, int depth)
    {
        var rng = new Random(colorType * 17 + depth);
        foreach (var adam7 in new[] { false, true })
        {
            int w = 37, h = 23, entries = 0;
            byte[]? plte = null, trns = null;
            if (colorType == 3)
            {
                entries = 1 << depth;
                plte = new byte[entries * 3]; rng.NextBytes(plte);
                trns = new byte[entries / 2]; rng.NextBytes(trns);
            }
            var s = RawPng.RandomSamples(rng, w, h, RawPng.Samples(colorType), depth, entries);
            AssertSame(RawPng.Write(s, depth, colorType, adam7, plte, trns, idatPieces: 4), $"type {colorType} depth {depth} adam7={adam7}");
        }
    }

    [Theory]
    [InlineData(SKColorType.Rgba8888, SKAlphaType.Unpremul)]
    [InlineData(SKColorType.Rgba8888, SKAlphaType.Opaque)]
    [InlineData(SKColorType.Gray8, SKAlphaType.Opaque)]
    public void Pngs_skia_encodes_with_every_filter_decode_as_skia_decodes_them(SKColorType type, SKAlphaType alpha)
    {
        var rng = new Random((int)type);
        int w = 71, h = 45;
        var info = new SKImageInfo(w, h, type, alpha);
        using var bmp = new SKBitmap(info);
        var px = new byte[info.BytesSize];
        for (int i = 0; i < px.Length; i++) px[i] = (i / info.BytesPerPixel / w) % 3 == 0 ? (byte)rng.Next(256) : (byte)(i % 97 + i / 400);
        if (alpha == SKAlphaType.Opaque && type == SKColorType.Rgba8888) for (int i = 3; i < px.Length; i += 4) px[i] = 255;
        System.Runtime.InteropServices.Marshal.Copy(px, 0, bmp.GetPixels(), px.Length);
        using var pixmap = bmp.PeekPixels();
        foreach (var level in new[] { 1, 6, 9 })
        {
            using var data = pixmap.Encode(new SKPngEncoderOptions(SKPngEncoderFilterFlags.AllFilters, level));
            Assert.NotNull(data);
            AssertSame(data!.ToArray(), $"Skia {type} level {level}");
        }
    }

    [Theory]
    [InlineData(1)] [InlineData(2)] [InlineData(3)] [InlineData(4)]
    public void What_the_library_encodes_skia_reads_back_exactly(int channels)
    {
        var rng = new Random(channels);
        int w = 53, h = 29;
        var px = new byte[w * h * channels];
        rng.NextBytes(px);
        foreach (var f in Enum.GetValues<PngFilter>())
        {
            var png = Png.Encode(px, w, h, channels, 1, f);
            var (_, _, rgba) = SkiaRgba(png);
            Assert.Equal(ToRgba(new PngImage(w, h, channels, px)), rgba);
        }
    }
}
