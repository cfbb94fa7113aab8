using DiffusionLens.Reports;
namespace DiffusionLens.Judge;

/// <summary>
/// OpenCLIP's image preprocessing (resize mode "shortest"): resize so the shorter side is <c>image_size</c> (the
/// longer side <c>int(size * long / short)</c>) with PIL's BICUBIC filter, center crop <c>image_size</c> square with
/// offsets <c>int(round((dim - size) / 2))</c> (torchvision's rule, Python rounding half to even), <c>x / 255</c> in
/// float32, then <c>(x - mean) / std</c> per channel. Output is CHW float32.
/// <para>
/// The resize is a port of Pillow's <c>ImagingResample</c> for 8-bit images (separable two-pass convolution, horizontal
/// first; bicubic kernel a = -0.5 with support 2 scaled by the downscale factor; coefficients normalised per output
/// pixel and converted to 22-bit fixed point; rounding and clipping to uint8 after each pass), so the resized bytes
/// equal PIL's exactly and the pixel tensor matches OpenCLIP's to float32 rounding (checked by the tests against
/// PIL-made fixtures).
/// </para>
/// </summary>
internal sealed class ClipPreprocessor
{
    private const int PrecisionBits = 32 - 8 - 2;

    public int ImageSize { get; }
    private readonly float[] _mean;
    private readonly float[] _std;

    public ClipPreprocessor(int imageSize, float[] mean, float[] std)
    {
        if (imageSize <= 0) throw new ArgumentOutOfRangeException(nameof(imageSize));
        if (mean.Length != 3 || std.Length != 3) throw new ArgumentException("mean and std need 3 entries");
        ImageSize = imageSize;
        _mean = (float[])mean.Clone();
        _std = (float[])std.Clone();
    }

    public ClipPreprocessor(JudgeConfig config) : this(config.ImageSize, config.Mean, config.Std) { }

    public int Length => 3 * ImageSize * ImageSize;

    /// <summary>The CHW float32 tensor of one image.</summary>
    public float[] Preprocess(RgbImage image)
    {
        var result = new float[Length];
        Preprocess(image, result);
        return result;
    }

    /// <summary>Writes the CHW float32 tensor of one image into <paramref name="destination"/> (length 3 * size * size).</summary>
    public void Preprocess(RgbImage image, Span<float> destination)
    {
        if (destination.Length != Length) throw new ArgumentException($"destination needs {Length} floats");
        var cropped = ResizeAndCrop(image);
        int s = ImageSize, plane = s * s;
        var px = cropped.Pixels;
        for (int c = 0; c < 3; c++)
        {
            float m = _mean[c], sd = _std[c];
            for (int i = 0; i < plane; i++)
            {
                float v = px[3 * i + c] / 255f;
                destination[c * plane + i] = (v - m) / sd;
            }
        }
    }

    /// <summary>The resized and center-cropped uint8 image (before normalisation).</summary>
    public RgbImage ResizeAndCrop(RgbImage image)
    {
        var (newW, newH) = ResizedSize(image.Width, image.Height, ImageSize);
        var resized = (newW, newH) == (image.Width, image.Height)
            ? image
            : ResizeBicubic(image, newW, newH);
        int top = CropOffset(newH, ImageSize), left = CropOffset(newW, ImageSize);
        if (top == 0 && left == 0 && newW == ImageSize && newH == ImageSize) return resized;
        var dst = new byte[ImageSize * ImageSize * 3];
        for (int y = 0; y < ImageSize; y++)
            Array.Copy(resized.Pixels, ((top + y) * newW + left) * 3, dst, y * ImageSize * 3, ImageSize * 3);
        return new RgbImage(ImageSize, ImageSize, dst);
    }

    /// <summary>torchvision's <c>_compute_resized_output_size</c> for an int size: the shorter side becomes
    /// <paramref name="size"/>, the longer <c>int(size * long / short)</c>.</summary>
    public static (int Width, int Height) ResizedSize(int width, int height, int size)
    {
        bool wShort = width <= height;
        int shortSide = wShort ? width : height, longSide = wShort ? height : width;
        int newLong = (int)((double)size * longSide / shortSide);
        return wShort ? (size, newLong) : (newLong, size);
    }

    /// <summary>torchvision's center-crop offset <c>int(round((dim - size) / 2.0))</c> (round half to even).</summary>
    public static int CropOffset(int dim, int size)
    {
        if (dim < size) throw new LensException($"cannot center-crop {size} from {dim} pixels");
        return (int)Math.Round((dim - size) / 2.0, MidpointRounding.ToEven);
    }

    private static double Bicubic(double x)
    {
        const double a = -0.5;
        if (x < 0.0) x = -x;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }

    /// <summary>Pillow's precompute_coeffs + normalize_coeffs_8bpc for box [0, inSize) to outSize samples.</summary>
    private static (int[] Bounds, int[] Coeffs, int KSize) Coefficients(int inSize, int outSize)
    {
        const double support0 = 2.0; // bicubic
        double scale = (double)inSize / outSize;
        double filterScale = scale < 1.0 ? 1.0 : scale;
        double support = support0 * filterScale;
        int ksize = (int)Math.Ceiling(support) * 2 + 1;
        var bounds = new int[outSize * 2];
        var coeffs = new int[outSize * ksize];
        var k = new double[ksize];
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale;
            double ww = 0.0;
            double ss = 1.0 / filterScale;
            int xmin = (int)(center - support + 0.5);
            if (xmin < 0) xmin = 0;
            int xmax = (int)(center + support + 0.5);
            if (xmax > inSize) xmax = inSize;
            xmax -= xmin;
            Array.Clear(k);
            for (int x = 0; x < xmax; x++)
            {
                double w = Bicubic(((double)(x + xmin) - center + 0.5) * ss);
                k[x] = w;
                ww += w;
            }
            for (int x = 0; x < xmax; x++)
                if (ww != 0.0) k[x] /= ww;
            for (int x = 0; x < ksize; x++)
            {
                double v = k[x] * (1 << PrecisionBits);
                coeffs[xx * ksize + x] = k[x] < 0 ? (int)(-0.5 + v) : (int)(0.5 + v);
            }
            bounds[2 * xx] = xmin;
            bounds[2 * xx + 1] = xmax;
        }
        return (bounds, coeffs, ksize);
    }

    private static byte Clip8(int v)
    {
        int s = v >> PrecisionBits;
        return s < 0 ? (byte)0 : s > 255 ? (byte)255 : (byte)s;
    }

    /// <summary>Pillow's <c>Image.resize(size, BICUBIC)</c> for an RGB image, bit for bit.</summary>
    public static RgbImage ResizeBicubic(RgbImage src, int newW, int newH)
    {
        if (newW <= 0 || newH <= 0) throw new ArgumentOutOfRangeException(nameof(newW), "target size must be positive");
        int w = src.Width, h = src.Height;
        if (newW == w && newH == h) return new RgbImage(w, h, (byte[])src.Pixels.Clone());
        var (hb, hk, hks) = Coefficients(w, newW);
        var (vb, vk, vks) = Coefficients(h, newH);
        bool needH = newW != w, needV = newH != h;

        byte[] cur = src.Pixels;
        int curW = w;
        if (needH)
        {
            int yFirst = vb[0];
            int yLast = vb[2 * (newH - 1)] + vb[2 * (newH - 1) + 1];
            int rows = yLast - yFirst;
            var tmp = new byte[rows * newW * 3];
            var input = cur;
            Parallel.For(0, rows, y =>
            {
                int inRow = (y + yFirst) * w * 3, outRow = y * newW * 3;
                for (int xx = 0; xx < newW; xx++)
                {
                    int xmin = hb[2 * xx], xmax = hb[2 * xx + 1], ko = xx * hks;
                    int s0 = 1 << (PrecisionBits - 1), s1 = s0, s2 = s0;
                    for (int x = 0; x < xmax; x++)
                    {
                        int p = inRow + (x + xmin) * 3, kv = hk[ko + x];
                        s0 += input[p] * kv;
                        s1 += input[p + 1] * kv;
                        s2 += input[p + 2] * kv;
                    }
                    tmp[outRow + 3 * xx] = Clip8(s0);
                    tmp[outRow + 3 * xx + 1] = Clip8(s1);
                    tmp[outRow + 3 * xx + 2] = Clip8(s2);
                }
            });
            for (int i = 0; i < newH; i++) vb[2 * i] -= yFirst;
            cur = tmp;
            curW = newW;
        }
        if (!needV) return new RgbImage(newW, newH, cur);

        var output = new byte[newW * newH * 3];
        var inp = cur;
        int cw = curW;
        Parallel.For(0, newH, yy =>
        {
            int ymin = vb[2 * yy], ymax = vb[2 * yy + 1], ko = yy * vks;
            for (int xx = 0; xx < newW; xx++)
            {
                int s0 = 1 << (PrecisionBits - 1), s1 = s0, s2 = s0;
                for (int y = 0; y < ymax; y++)
                {
                    int p = ((y + ymin) * cw + xx) * 3, kv = vk[ko + y];
                    s0 += inp[p] * kv;
                    s1 += inp[p + 1] * kv;
                    s2 += inp[p + 2] * kv;
                }
                int o = (yy * newW + xx) * 3;
                output[o] = Clip8(s0);
                output[o + 1] = Clip8(s1);
                output[o + 2] = Clip8(s2);
            }
        });
        return new RgbImage(newW, newH, output);
    }
}
