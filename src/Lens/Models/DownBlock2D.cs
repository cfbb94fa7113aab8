using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>diffusers <c>DownBlock2D</c>: num_layers ResnetBlock2D (each output a residual), then an optional conv Downsample2D.</summary>
internal sealed class DownBlock2D : UNetDownBlock
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Downsample2D>? downsamplers;

    public DownBlock2D(int inChannels, int outChannels, int? tembChannels, double dropout = 0.0, int numLayers = 1,
        double resnetEps = 1e-6, string resnetTimeScaleShift = "default", string resnetActFn = "swish",
        int? resnetGroups = 32, double outputScaleFactor = 1.0, bool addDownsample = true, int downsamplePadding = 1)
        : base(nameof(DownBlock2D))
    {
        int groups = resnetGroups ?? throw new LensException("DownBlock2D: resnet_groups (norm_num_groups) must not be null");
        var rs = new ResnetBlock2D[numLayers];
        for (int i = 0; i < numLayers; i++)
            rs[i] = new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, groups: groups,
                eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor);
        resnets = new ModuleList<ResnetBlock2D>(rs);
        if (addDownsample)
            downsamplers = new ModuleList<Downsample2D>(new Downsample2D(outChannels, useConv: true, outChannels: outChannels, padding: downsamplePadding));
        RegisterComponents();
    }

    public override (Tensor Hidden, Tensor[] Residuals) Forward(Tensor hidden, Tensor? temb, Tensor? encoderHidden = null,
        Tensor? attentionMask = null, Tensor? encoderAttentionMask = null)
    {
        using var scope = NewDisposeScope();
        var outputStates = new List<Tensor>();
        foreach (var resnet in resnets)
        {
            hidden = resnet.forward(hidden, temb);
            outputStates.Add(hidden);
        }
        if (downsamplers is not null)
        {
            foreach (var d in downsamplers) hidden = d.forward(hidden);
            outputStates.Add(hidden);
        }
        TensorScopes.MoveOut([hidden], outputStates);
        return (hidden, outputStates.ToArray());
    }
}
