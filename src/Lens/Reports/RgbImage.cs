using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

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

    /// <summary>
    /// diffusers' postprocessing of a decoded image in [-1, 1]: (x/2+0.5).clamp(0,1), to float32 HWC,
    /// then numpy_to_pil's (x*255).round() to uint8. <paramref name="image"/> is [3,H,W] or [1,3,H,W].
    /// </summary>
    public static RgbImage FromModelOutput(Tensor image)
    {
        using var scope = NewDisposeScope();
        var x = image.dim() == 4 ? image[0] : image;
        var unit = (x.to(ScalarType.Float32) / 2 + 0.5).clamp(0, 1);
        return FromUnitFloat(unit);
    }

    /// <summary>An image already in [0,1] ([3,H,W] float): (x*255).round() to uint8, as diffusers' numpy_to_pil.</summary>
    public static RgbImage FromUnitFloat(Tensor chw)
    {
        using var scope = NewDisposeScope();
        return FromUnitHwc(chw.permute(1, 2, 0));
    }

    /// <summary>A [H,W,3] float image in [0,1] (diffusers' output_type="np" form): (x*255).round() to uint8.</summary>
    public static RgbImage FromUnitHwc(Tensor hwc)
    {
        using var scope = NewDisposeScope();
        var u8 = (hwc.to(ScalarType.Float32).cpu() * 255).round().to(ScalarType.Byte).contiguous();
        return new RgbImage((int)u8.shape[1], (int)u8.shape[0], u8.data<byte>().ToArray());
    }

    /// <summary>A [H,W,3] float32 tensor in [0,1] (the float image diffusers hands to numpy_to_pil).</summary>
    public static Tensor UnitFloatHwc(Tensor image)
    {
        using var scope = NewDisposeScope();
        var x = image.dim() == 4 ? image[0] : image;
        return (x.to(ScalarType.Float32) / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).contiguous().cpu().MoveToOuterDisposeScope();
    }

    public byte this[int x, int y, int c]
    {
        get => Pixels[(y * Width + x) * 3 + c];
        set => Pixels[(y * Width + x) * 3 + c] = value;
    }

    public void SavePng(string path)
    {
        using var bmp = ToBitmap();
        using var data = bmp.Encode(SKEncodedImageFormat.Png, 100);
        using var fs = File.Create(path);
        data.SaveTo(fs);
    }

    public static RgbImage LoadPng(string path)
    {
        if (!File.Exists(path)) throw new LensException($"image not found: {path}");
        using var bmp = SKBitmap.Decode(path) ?? throw new LensException($"not a readable image: {path}");
        using var rgba = bmp.Copy(SKColorType.Rgba8888) ?? throw new LensException($"cannot convert image {path}");
        var img = new RgbImage(rgba.Width, rgba.Height);
        var src = rgba.GetPixelSpan();
        for (int i = 0, n = rgba.Width * rgba.Height; i < n; i++)
        {
            img.Pixels[i * 3] = src[i * 4];
            img.Pixels[i * 3 + 1] = src[i * 4 + 1];
            img.Pixels[i * 3 + 2] = src[i * 4 + 2];
        }
        return img;
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
