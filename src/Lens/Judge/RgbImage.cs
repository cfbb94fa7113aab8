using SkiaSharp;

namespace DiffusionLens.Judge;

/// <summary>An 8-bit RGB image, rows top to bottom, pixels interleaved R,G,B.</summary>
public sealed class RgbImage
{
    public int Width { get; }
    public int Height { get; }
    public byte[] Pixels { get; }

    public RgbImage(int width, int height, byte[] pixels)
    {
        if (width <= 0 || height <= 0) throw new ArgumentException($"image size {width}x{height} is not positive");
        if (pixels.Length != width * height * 3) throw new ArgumentException($"expected {width * height * 3} bytes for {width}x{height} RGB, got {pixels.Length}");
        Width = width;
        Height = height;
        Pixels = pixels;
    }

    /// <summary>
    /// Decodes an image file (PNG, JPEG, ...) without colour management, alpha dropped as PIL's <c>convert("RGB")</c>
    /// does (colour values kept, not composited), greyscale replicated to R, G and B.
    /// </summary>
    public static RgbImage Load(string path)
    {
        if (!File.Exists(path)) throw new LensException($"image not found: {path}");
        using var codec = SKCodec.Create(path) ?? throw new LensException($"cannot decode image {path}");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        var result = codec.GetPixels(info, bitmap.GetPixels());
        if (result is not (SKCodecResult.Success or SKCodecResult.IncompleteInput))
            throw new LensException($"cannot decode image {path}: {result}");
        var rgba = bitmap.GetPixelSpan();
        int w = info.Width, h = info.Height, stride = bitmap.RowBytes;
        var rgb = new byte[w * h * 3];
        for (int y = 0; y < h; y++)
        {
            var row = rgba.Slice(y * stride, w * 4);
            int o = y * w * 3;
            for (int x = 0; x < w; x++)
            {
                rgb[o + 3 * x] = row[4 * x];
                rgb[o + 3 * x + 1] = row[4 * x + 1];
                rgb[o + 3 * x + 2] = row[4 * x + 2];
            }
        }
        return new RgbImage(w, h, rgb);
    }

    /// <summary>The image as PNG bytes.</summary>
    public byte[] EncodePng()
    {
        var info = new SKImageInfo(Width, Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        int stride = bitmap.RowBytes;
        var dst = new byte[stride * Height];
        for (int y = 0; y < Height; y++)
            for (int x = 0; x < Width; x++)
            {
                int s = (y * Width + x) * 3, d = y * stride + 4 * x;
                dst[d] = Pixels[s];
                dst[d + 1] = Pixels[s + 1];
                dst[d + 2] = Pixels[s + 2];
                dst[d + 3] = 255;
            }
        System.Runtime.InteropServices.Marshal.Copy(dst, 0, bitmap.GetPixels(), dst.Length);
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100) ?? throw new LensException("cannot encode PNG");
        return data.ToArray();
    }

    /// <summary>Writes the image as PNG.</summary>
    public void SavePng(string path)
    {
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllBytes(path, EncodePng());
    }

    /// <summary>A copy no larger than <paramref name="maxSide"/> on its longer side (PIL-bicubic downscale).</summary>
    public RgbImage Thumbnail(int maxSide)
    {
        int longSide = Math.Max(Width, Height);
        if (longSide <= maxSide) return this;
        int w = Math.Max(1, (int)Math.Round((double)Width * maxSide / longSide));
        int h = Math.Max(1, (int)Math.Round((double)Height * maxSide / longSide));
        return ClipPreprocessor.ResizeBicubic(this, w, h);
    }
}
