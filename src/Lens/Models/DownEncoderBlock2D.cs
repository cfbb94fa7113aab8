using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>diffusers <c>DownEncoderBlock2D</c> (VAE encoder): num_layers ResnetBlock2D without time embedding, then an optional conv Downsample2D.</summary>
internal sealed class DownEncoderBlock2D : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Downsample2D>? downsamplers;

    public DownEncoderBlock2D(int inChannels, int outChannels, double dropout = 0.0, int numLayers = 1,
        double resnetEps = 1e-6, string resnetTimeScaleShift = "default", string resnetActFn = "swish",
        int resnetGroups = 32, double outputScaleFactor = 1.0, bool addDownsample = true, int downsamplePadding = 1)
        : base(nameof(DownEncoderBlock2D))
    {
        if (resnetTimeScaleShift == "spatial")
            throw new LensException("DownEncoderBlock2D: resnet_time_scale_shift 'spatial' is not supported");
        var rs = new ResnetBlock2D[numLayers];
        for (int i = 0; i < numLayers; i++)
            rs[i] = new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels: null,
                groups: resnetGroups, eps: resnetEps, nonLinearity: resnetActFn,
                timeEmbeddingNorm: resnetTimeScaleShift, outputScaleFactor: outputScaleFactor);
        resnets = new ModuleList<ResnetBlock2D>(rs);
        if (addDownsample)
            downsamplers = new ModuleList<Downsample2D>(new Downsample2D(outChannels, useConv: true, outChannels: outChannels, padding: downsamplePadding));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        foreach (var resnet in resnets) hidden = resnet.forward(hidden, null);
        if (downsamplers is not null)
            foreach (var d in downsamplers) hidden = d.forward(hidden);
        return hidden.MoveToOuterDisposeScope();
    }
}
