using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;
using DiffusionLens.Judge;

namespace DiffusionLens.Reports;

/// <summary>An 8-bit RGB image (row-major, 3 bytes a pixel), the form every output picture takes.</summary>
public sealed class RgbImage
{
    public int Width { get; }
    public int Height { get; }
    public byte[] Pixels { get; }

    public RgbImage(int width, int height, byte[]? pixels = null)
    {
        if (width <= 0 || height <= 0) throw new ArgumentException($"image size {width}x{height}");
        Width = width;
        Height = height;
        Pixels = pixels ?? new byte[width * height * 3];
        if (Pixels.Length != width * height * 3) throw new ArgumentException("pixel buffer does not match the size");
    }

    /// <summary>A [H,W,3] float image in [0,1] (diffusers' output_type="np" form): (x*255).round() to uint8.</summary>
    public static RgbImage FromUnitHwc(Tensor hwc)
    {
        using var scope = NewDisposeScope();
        var u8 = (hwc.to(ScalarType.Float32).cpu() * 255).round().to(ScalarType.Byte).contiguous();
        return new RgbImage((int)u8.shape[1], (int)u8.shape[0], u8.data<byte>().ToArray());
    }

    public byte this[int x, int y, int c]
    {
        get => Pixels[(y * Width + x) * 3 + c];
        set => Pixels[(y * Width + x) * 3 + c] = value;
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

    /// <summary>zlib level of <see cref="EncodePng"/> (1: fastest; PNG is lossless at every level: the same pixels).</summary>
    public const int DefaultZlibLevel = 6;

    /// <summary>The image as PNG bytes (RGBA, opaque), compressed at <paramref name="zlibLevel"/> (0-9).</summary>
    public byte[] EncodePng(int zlibLevel = DefaultZlibLevel)
    {
        var info = new SKImageInfo(Width, Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        CopyToRgba(bitmap.GetPixelSpan(), bitmap.RowBytes);
        using var pixmap = bitmap.PeekPixels();
        using var data = pixmap.Encode(new SKPngEncoderOptions(SKPngEncoderFilterFlags.AllFilters, zlibLevel))
                         ?? throw new LensException("cannot encode PNG");
        return data.ToArray();
    }

    /// <summary>RGB to opaque RGBA rows, a row at a time with 32-bit stores (no per-channel indexing).</summary>
    private void CopyToRgba(Span<byte> dst, int stride)
    {
        var src = Pixels.AsSpan();
        for (int y = 0; y < Height; y++)
        {
            var s = src.Slice(y * Width * 3, Width * 3);
            var d = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(dst.Slice(y * stride, Width * 4));
            for (int x = 0, i = 0; x < d.Length; x++, i += 3)
                d[x] = s[i] | (uint)s[i + 1] << 8 | (uint)s[i + 2] << 16 | 0xFF000000u; // little-endian R,G,B,A
        }
    }

    /// <summary>Writes the image as PNG.</summary>
    public void SavePng(string path, int zlibLevel = DefaultZlibLevel)
    {
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllBytes(path, EncodePng(zlibLevel));
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

    public SKBitmap ToBitmap()
    {
        var bmp = new SKBitmap(new SKImageInfo(Width, Height, SKColorType.Rgba8888, SKAlphaType.Opaque));
        var dst = bmp.GetPixelSpan();
        for (int i = 0, n = Width * Height; i < n; i++)
        {
            dst[i * 4] = Pixels[i * 3];
            dst[i * 4 + 1] = Pixels[i * 3 + 1];
            dst[i * 4 + 2] = Pixels[i * 3 + 2];
            dst[i * 4 + 3] = 255;
        }
        return bmp;
    }

    /// <summary>Nearest-neighbour upscale by an integer factor (small model outputs are shown enlarged).</summary>
    public RgbImage Scale(int factor)
    {
        if (factor == 1) return this;
        var o = new RgbImage(Width * factor, Height * factor);
        for (int y = 0; y < o.Height; y++)
        for (int x = 0; x < o.Width; x++)
        for (int c = 0; c < 3; c++)
            o[x, y, c] = this[x / factor, y / factor, c];
        return o;
    }

    public void Blit(RgbImage src, int ox, int oy)
    {
        for (int y = 0; y < src.Height; y++)
            Array.Copy(src.Pixels, y * src.Width * 3, Pixels, ((oy + y) * Width + ox) * 3, src.Width * 3);
    }

    public void Fill(byte r, byte g, byte b)
    {
        for (int i = 0; i < Pixels.Length; i += 3) { Pixels[i] = r; Pixels[i + 1] = g; Pixels[i + 2] = b; }
    }
}
