using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>diffusers <c>Upsample2D</c>: nearest-neighbour x2 (or to <c>outputSize</c>), then an optional 3x3 conv (key <c>conv</c>).</summary>
internal sealed class Upsample2D : nn.Module<Tensor, long[]?, Tensor>
{
    private readonly Conv2d? conv;

    public Upsample2D(int channels, bool useConv, int? outChannels = null, int padding = 1) : base(nameof(Upsample2D))
    {
        if (useConv) conv = Layers.Conv2d(channels, outChannels ?? channels, 3, padding: padding);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, long[]? outputSize)
    {
        var h = outputSize is null
            ? nn.functional.interpolate(x, scale_factor: new double[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest)
            : nn.functional.interpolate(x, size: outputSize, mode: InterpolationMode.Nearest);
        if (conv is null) return h;
        using (h) return conv.forward(h);
    }
}
