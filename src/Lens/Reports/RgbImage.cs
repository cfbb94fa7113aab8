using TorchSharp;
using static TorchSharp.torch;
using DiffusionLens.Judge;

namespace DiffusionLens.Reports;

/// <summary>An 8-bit RGB image (row-major, 3 bytes a pixel), the form every output picture takes.</summary>
public sealed class RgbImage
{
    /// <summary>Width in pixels.</summary>
    public int Width { get; }
    /// <summary>Height in pixels.</summary>
    public int Height { get; }
    /// <summary>R, G, B bytes, row by row.</summary>
    public byte[] Pixels { get; }

    /// <summary>A width x height image: the given pixels (3 bytes a pixel, row-major) or black.</summary>
    public RgbImage(int width, int height, byte[]? pixels = null)
    {
        if (width <= 0 || height <= 0) throw new ArgumentException($"image size {width}x{height}");
        Width = width;
        Height = height;
        Pixels = pixels ?? new byte[width * height * 3];
        if (Pixels.Length != width * height * 3) throw new ArgumentException("pixel buffer does not match the size");
    }

    /// <summary>
    /// A batch [N,H,W,3] of float images in [0,1] (diffusers' output_type="np" form), each (x*255).round() to uint8, in
    /// ONE conversion of the whole batch (one pass per op instead of four small ops per image, which the sweep paid
    /// ~30 ms an image for). <see cref="FromUnitHwc"/> is the batch of one.
    /// </summary>
    internal static RgbImage[] FromUnitNhwc(Tensor nhwc)
    {
        using var scope = NewDisposeScope();
        // on the tensor's device (a quarter of the bytes to copy; float32 x*255 and round-half-to-even give the same
        // bits on CUDA as on the CPU)
        var u8 = (nhwc.to(ScalarType.Float32) * 255).round().to(ScalarType.Byte).cpu().contiguous();
        int n = (int)u8.shape[0], h = (int)u8.shape[1], w = (int)u8.shape[2];
        var all = u8.bytes; // the host tensor's memory: each image is copied out of it once
        int size = h * w * 3;
        var images = new RgbImage[n];
        for (int i = 0; i < n; i++) images[i] = new RgbImage(w, h, all.Slice(i * size, size).ToArray());
        return images;
    }

    /// <summary>A [H,W,3] float image in [0,1] (diffusers' output_type="np" form): (x*255).round() to uint8.</summary>
    public static RgbImage FromUnitHwc(Tensor hwc)
    {
        using var batch = hwc.unsqueeze(0);
        return FromUnitNhwc(batch)[0];
    }

    /// <summary>Channel <paramref name="c"/> (0 R, 1 G, 2 B) of pixel (<paramref name="x"/>, <paramref name="y"/>).</summary>
    public byte this[int x, int y, int c]
    {
        get => Pixels[(y * Width + x) * 3 + c];
        set => Pixels[(y * Width + x) * 3 + c] = value;
    }

    /// <summary>
    /// Decodes a PNG file (<see cref="Png"/>: any standard PNG, no colour management), alpha dropped as PIL's
    /// <c>convert("RGB")</c> does (colour values kept, not composited), greyscale replicated to R, G and B.
    /// </summary>
    public static RgbImage Load(string path)
    {
        if (!File.Exists(path)) throw new LensException($"image not found: {path}");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new LensException($"cannot read image {path}: {e.Message}", e); }
        return FromPng(Png.Decode(bytes, path));
    }

    /// <summary>A decoded PNG as RGB: grey replicated, alpha dropped.</summary>
    internal static RgbImage FromPng(PngImage png)
    {
        int n = png.Width * png.Height, ch = png.Channels;
        if (ch == 3) return new RgbImage(png.Width, png.Height, png.Pixels);
        var src = png.Pixels;
        var rgb = new byte[n * 3];
        for (int i = 0; i < n; i++)
        {
            int s = i * ch;
            if (ch <= 2) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = src[s];
            else { rgb[3 * i] = src[s]; rgb[3 * i + 1] = src[s + 1]; rgb[3 * i + 2] = src[s + 2]; }
        }
        return new RgbImage(png.Width, png.Height, rgb);
    }

    /// <summary>zlib level of <see cref="EncodePng"/> (1: fastest; PNG is lossless at every level: the same pixels).</summary>
    public const int DefaultZlibLevel = 6;

    /// <summary>The image as an 8-bit RGB PNG, compressed at <paramref name="zlibLevel"/> (0-9).</summary>
    public byte[] EncodePng(int zlibLevel = DefaultZlibLevel) => Png.Encode(Pixels, Width, Height, 3, zlibLevel);

    /// <summary>Writes the image as PNG.</summary>
    public void SavePng(string path, int zlibLevel = DefaultZlibLevel)
    {
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        Png.Save(path, Pixels, Width, Height, 3, zlibLevel);
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

    /// <summary>Copies <paramref name="src"/> into this image with its top-left corner at (<paramref name="ox"/>, <paramref name="oy"/>).</summary>
    public void Blit(RgbImage src, int ox, int oy)
    {
        for (int y = 0; y < src.Height; y++)
            Array.Copy(src.Pixels, y * src.Width * 3, Pixels, ((oy + y) * Width + ox) * 3, src.Width * 3);
    }

    /// <summary>Sets every pixel to (<paramref name="r"/>, <paramref name="g"/>, <paramref name="b"/>).</summary>
    public void Fill(byte r, byte g, byte b)
    {
        for (int i = 0; i < Pixels.Length; i += 3) { Pixels[i] = r; Pixels[i + 1] = g; Pixels[i + 2] = b; }
    }
}
