using DiffusionLens.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// <see cref="Conv2d"/>'s weight layout (issue #11): on CUDA in 16-bit types, a weight holding more values than
/// <see cref="Conv2d.ChannelsLastWeightRows"/> rows of the input is stored channels-last once (cuDNN then skips the
/// weight's conversion every call) and the output is channels-first as before.
/// </summary>
public class ConvWeightLayoutTests
{
    [Theory]
    // IF-I-XL's 8x8 and 16x16 convolutions (weights much larger than 24 rows of input): channels-last
    [InlineData(new long[] { 2048, 4096, 3, 3 }, new long[] { 24, 4096, 8, 8 }, DeviceType.CUDA, ScalarType.Float16, true)]
    [InlineData(new long[] { 2048, 2048, 3, 3 }, new long[] { 2, 2048, 16, 16 }, DeviceType.CUDA, ScalarType.BFloat16, true)]
    // the same at 64x64 (large activations), 1x1 kernels, the CPU, float32: as before
    [InlineData(new long[] { 1024, 1024, 3, 3 }, new long[] { 24, 1024, 64, 64 }, DeviceType.CUDA, ScalarType.Float16, false)]
    [InlineData(new long[] { 2048, 4096, 1, 1 }, new long[] { 24, 4096, 8, 8 }, DeviceType.CUDA, ScalarType.Float16, false)]
    [InlineData(new long[] { 2048, 4096, 3, 3 }, new long[] { 24, 4096, 8, 8 }, DeviceType.CPU, ScalarType.Float16, false)]
    [InlineData(new long[] { 2048, 4096, 3, 3 }, new long[] { 24, 4096, 8, 8 }, DeviceType.CUDA, ScalarType.Float32, false)]
    public void TheLayoutRuleDependsOnTheShapesDeviceAndTypeNotTheBatch(long[] w, long[] x, DeviceType device, ScalarType dtype, bool expected)
    {
        Assert.Equal(expected, Conv2d.ChannelsLastWeightFor(w, x, device, dtype));
        // the rule reads the input's values per row, never its row count: every batch of a shape gets one layout
        var other = (long[])x.Clone();
        other[0] = x[0] == 1 ? 7 : 1;
        Assert.Equal(expected, Conv2d.ChannelsLastWeightFor(w, other, device, dtype));
    }

    [Fact]
    public void OnTheCpuTheWeightStaysChannelsFirst()
    {
        var conv = Layers.Conv2d(64, 64, 3, padding: 1);
        using var x = torch.randn(2, 64, 2, 2);
        using var y = conv.forward(x);
        Assert.False(conv.WeightChannelsLast);
        Assert.Equal(0, Conv2d.CountChannelsLast(new nn.Module[] { conv }));
        Assert.True(conv.weight.is_contiguous());
        Assert.True(y.is_contiguous());
    }

    [Fact]
    public void AWeightGoesChannelsLastInItsOwnMemory()
    {
        // a weight that is a view into a larger buffer, as loaded weights are
        using var buffer = torch.arange(0, 2 * 3 * 4 * 5 + 7, dtype: ScalarType.Float32);
        var w = buffer.narrow(0, 7, 2 * 3 * 4 * 5).view(2, 3, 4, 5);
        using var before = w.clone();
        long offset = w.storage_offset();
        Conv2d.ToChannelsLastInPlace(w);
        Assert.Equal(offset, w.storage_offset());
        Assert.Equal(new long[] { 60, 1, 15, 3 }, w.stride());
        Assert.True(w.Equals(before));
        Assert.True(buffer.narrow(0, 0, 7).Equals(torch.arange(0, 7, dtype: ScalarType.Float32))); // nothing outside it written
        Assert.Throws<ArgumentException>(() => Conv2d.ToChannelsLastInPlace(w)); // not channels-first any more
        // still the buffer's memory: its 8th and 9th values are w[0, 0, 0, 0] and w[0, 1, 0, 0] now (channels innermost)
        buffer[7] = torch.tensor(1000f);
        buffer[8] = torch.tensor(2000f);
        Assert.Equal(1000f, w[0, 0, 0, 0].item<float>());
        Assert.Equal(2000f, w[0, 1, 0, 0].item<float>());
    }

    /// <summary>
    /// On CUDA (float16, an IF-I-XL 8x8 shape): the weight goes channels-last on the first call, the output is
    /// channels-first, and it matches the convolution with the channels-first weight (the same NHWC kernel: an H200 gives
    /// the same numbers; the tolerance, 1e-3 of the output's largest magnitude, allows another GPU's other algorithm).
    /// Skipped without CUDA.
    /// </summary>
    [Fact]
    public void OnCudaALargeWeightGoesChannelsLastAndGivesTheSameConvolution()
    {
        bool cuda;
        try { cuda = torch.cuda.is_available(); } catch (Exception) { cuda = false; }
        if (!cuda) Assert.Skip("needs CUDA: the layout rule applies to cuDNN convolutions in 16-bit types");
        var conv = Layers.Conv2d(1024, 512, 3, padding: 1);
        conv.to(CUDA).to(ScalarType.Float16);
        var g = new torch.Generator(7);
        using var x = torch.randn(new long[] { 4, 1024, 8, 8 }, generator: g).to(CUDA).to(ScalarType.Float16);
        using var reference = nn.functional.conv2d(x, conv.weight.contiguous(), conv.bias, new long[] { 1, 1 }, new long[] { 1, 1 });
        using var y = conv.forward(x);
        Assert.True(conv.WeightChannelsLast);
        Assert.Equal(1, Conv2d.CountChannelsLast(new nn.Module[] { conv })); // the manifest's conv_weights_channels_last
        Assert.False(conv.weight.is_contiguous());
        Assert.True(y.is_contiguous());
        double scale = reference.abs().max().to(ScalarType.Float32).item<float>();
        double diff = (y - reference).abs().max().to(ScalarType.Float32).item<float>();
        Assert.True(diff <= 1e-3 * scale, $"channels-last weight: largest difference {diff} of {scale}");
        using var z = conv.ForwardWithoutBias(x);
        using var zRef = nn.functional.conv2d(x, conv.weight.contiguous(), null, new long[] { 1, 1 }, new long[] { 1, 1 });
        Assert.True(z.is_contiguous());
        Assert.True((z - zRef).abs().max().to(ScalarType.Float32).item<float>() <= 1e-3 * scale);
    }
}
