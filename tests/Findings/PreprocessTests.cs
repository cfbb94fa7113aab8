using DiffusionLens.Reports;
using System.Text.Json;
using DiffusionLens.Judge;

namespace DiffusionLens.Tests.Findings;

/// <summary>The judge's preprocessing against Pillow (fixtures/judge/pil-bicubic, made by its make_fixture.py).</summary>
public class PreprocessTests
{
    private static string Dir => Repo.PathOf("fixtures", "judge", "pil-bicubic");

    public static TheoryData<string, int, int, string> Cases()
    {
        var data = new TheoryData<string, int, int, string>();
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "cases.json")));
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
            data.Add(c.GetProperty("source").GetString()!, c.GetProperty("width").GetInt32(), c.GetProperty("height").GetInt32(), c.GetProperty("expected").GetString()!);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Bicubic_resize_equals_pillow_byte_for_byte(string source, int width, int height, string expected)
    {
        var src = RgbImage.Load(Path.Combine(Dir, source));
        var want = RgbImage.Load(Path.Combine(Dir, expected));
        var got = ClipPreprocessor.ResizeBicubic(src, width, height);
        Assert.Equal((want.Width, want.Height), (got.Width, got.Height));
        int diff = 0, maxDiff = 0;
        for (int i = 0; i < want.Pixels.Length; i++)
        {
            int d = Math.Abs(want.Pixels[i] - got.Pixels[i]);
            if (d != 0) diff++;
            maxDiff = Math.Max(maxDiff, d);
        }
        Assert.True(diff == 0, $"{diff} of {want.Pixels.Length} bytes differ from Pillow (max {maxDiff})");
    }

    [Fact]
    public void Full_preprocessing_matches_the_openclip_pixel_tensor()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "cases.json")));
        var p = doc.RootElement.GetProperty("preprocessed");
        int size = p.GetProperty("image_size").GetInt32();
        var mean = p.GetProperty("mean").EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();
        var std = p.GetProperty("std").EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();
        var want = p.GetProperty("values").EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();
        var img = RgbImage.Load(Path.Combine(Dir, p.GetProperty("source").GetString()!));
        var (w, h) = ClipPreprocessor.ResizedSize(img.Width, img.Height, size);
        Assert.Equal(p.GetProperty("crop_left").GetInt32(), ClipPreprocessor.CropOffset(w, size));
        Assert.Equal(p.GetProperty("crop_top").GetInt32(), ClipPreprocessor.CropOffset(h, size));
        var got = new ClipPreprocessor(size, mean, std).Preprocess(img);
        Assert.Equal(want.Length, got.Length);
        double max = want.Zip(got, (a, b) => Math.Abs((double)a - b)).Max();
        Assert.True(max == 0, $"max |diff| {max} against numpy float32");
    }

    [Theory]
    [InlineData(48, 40, 32, 38, 32)]
    [InlineData(40, 56, 32, 32, 44)]
    [InlineData(49, 40, 32, 39, 32)]
    [InlineData(512, 512, 224, 224, 224)]
    [InlineData(20, 20, 224, 224, 224)]
    [InlineData(640, 480, 224, 298, 224)]
    public void Shortest_side_resize_size_follows_torchvision(int w, int h, int size, int ew, int eh) =>
        Assert.Equal((ew, eh), ClipPreprocessor.ResizedSize(w, h, size));

    [Theory]
    [InlineData(39, 32, 4)] // round(3.5) = 4 (half to even)
    [InlineData(37, 32, 2)] // round(2.5) = 2
    [InlineData(38, 32, 3)]
    [InlineData(32, 32, 0)]
    public void Center_crop_offset_rounds_half_to_even(int dim, int size, int expected) =>
        Assert.Equal(expected, ClipPreprocessor.CropOffset(dim, size));

    [Fact]
    public void Png_round_trip_and_alpha_is_dropped_not_composited()
    {
        using var tmp = new TempDir();
        var px = Enumerable.Range(0, 5 * 3 * 3).Select(i => (byte)(i * 17 % 256)).ToArray();
        var img = new RgbImage(5, 3, px);
        var path = tmp.Sub("a.png");
        img.SavePng(path);
        Assert.Equal(px, RgbImage.Load(path).Pixels);

        // an RGBA PNG with alpha 0: PIL's convert("RGB") keeps the colour values
        var info = new SkiaSharp.SKImageInfo(2, 1, SkiaSharp.SKColorType.Rgba8888, SkiaSharp.SKAlphaType.Unpremul);
        using var bmp = new SkiaSharp.SKBitmap(info);
        System.Runtime.InteropServices.Marshal.Copy(new byte[] { 200, 100, 50, 0, 10, 20, 30, 128 }, 0, bmp.GetPixels(), 8);
        using (var data = bmp.Encode(SkiaSharp.SKEncodedImageFormat.Png, 100))
            File.WriteAllBytes(tmp.Sub("rgba.png"), data.ToArray());
        Assert.Equal(new byte[] { 200, 100, 50, 10, 20, 30 }, RgbImage.Load(tmp.Sub("rgba.png")).Pixels);
    }
}
