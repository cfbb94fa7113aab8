using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>diffusers <c>UpDecoderBlock2D</c> (VAE decoder): num_layers ResnetBlock2D (temb None for norm_type "group"), then an optional Upsample2D with conv.</summary>
internal sealed class UpDecoderBlock2D : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Upsample2D>? upsamplers;

    public int? ResolutionIdx { get; }

    public UpDecoderBlock2D(int inChannels, int outChannels, int? resolutionIdx = null, double dropout = 0.0,
        int numLayers = 1, double resnetEps = 1e-6, string resnetTimeScaleShift = "default",
        string resnetActFn = "swish", int resnetGroups = 32, double outputScaleFactor = 1.0, bool addUpsample = true,
        int? tembChannels = null) : base(nameof(UpDecoderBlock2D))
    {
        if (resnetTimeScaleShift == "spatial")
            throw new LensException("UpDecoderBlock2D: resnet_time_scale_shift 'spatial' is not supported");
        ResolutionIdx = resolutionIdx;
        var rs = new ResnetBlock2D[numLayers];
        for (int i = 0; i < numLayers; i++)
            rs[i] = new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels,
                groups: resnetGroups, eps: resnetEps, nonLinearity: resnetActFn,
                timeEmbeddingNorm: resnetTimeScaleShift, outputScaleFactor: outputScaleFactor);
        resnets = new ModuleList<ResnetBlock2D>(rs);
        if (addUpsample)
            upsamplers = new ModuleList<Upsample2D>(new Upsample2D(outChannels, useConv: true, outChannels: outChannels));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor? temb)
    {
        using var scope = NewDisposeScope();
        foreach (var resnet in resnets) hidden = resnet.forward(hidden, temb);
        if (upsamplers is not null)
            foreach (var u in upsamplers) hidden = u.forward(hidden, null);
        return hidden.MoveToOuterDisposeScope();
    }

    public Tensor forward(Tensor hidden) => forward(hidden, null);
}
