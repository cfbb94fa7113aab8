using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>Downsample2D</c> (name "op"): a stride-2 3x3 conv (key <c>conv</c>; padding 0 pads right/bottom by one
/// first, as the VAE encoder does) or, without conv, 2x2 average pooling.
/// </summary>
internal sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d? conv;
    private readonly int _padding;

    public Downsample2D(int channels, bool useConv, int? outChannels = null, int padding = 1) : base(nameof(Downsample2D))
    {
        _padding = padding;
        if (useConv) conv = Layers.Conv2d(channels, outChannels ?? channels, 3, stride: 2, padding: padding);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        if (conv is null) return nn.functional.avg_pool2d(x, 2, 2);
        if (_padding == 0)
        {
            using var padded = nn.functional.pad(x, new long[] { 0, 1, 0, 1 }, PaddingModes.Constant, 0);
            return conv.forward(padded);
        }
        return conv.forward(x);
    }
}
