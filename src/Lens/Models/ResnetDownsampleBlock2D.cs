using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>ResnetDownsampleBlock2D</c> (DeepFloyd IF): num_layers ResnetBlock2D (each output a residual), then an
/// optional downsampler that is itself a ResnetBlock2D with <c>down=True</c> (2x2 average pooling of both paths, key
/// downsamplers.0.*), taking the time embedding; its output is a residual too.
/// </summary>
internal sealed class ResnetDownsampleBlock2D : UNetDownBlock
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<ResnetBlock2D>? downsamplers;

    public ResnetDownsampleBlock2D(int inChannels, int outChannels, int? tembChannels, double dropout = 0.0,
        int numLayers = 1, double resnetEps = 1e-6, string resnetTimeScaleShift = "default",
        string resnetActFn = "swish", int? resnetGroups = 32, double outputScaleFactor = 1.0, bool addDownsample = true,
        bool skipTimeAct = false) : base(nameof(ResnetDownsampleBlock2D))
    {
        int groups = resnetGroups ?? throw new LensException("ResnetDownsampleBlock2D: resnet_groups (norm_num_groups) must not be null");
        var rs = new ResnetBlock2D[numLayers];
        for (int i = 0; i < numLayers; i++)
            rs[i] = new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, groups: groups,
                eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor, skipTimeAct: skipTimeAct);
        resnets = new ModuleList<ResnetBlock2D>(rs);
        if (addDownsample)
            downsamplers = new ModuleList<ResnetBlock2D>(new ResnetBlock2D(outChannels, outChannels, tembChannels,
                groups: groups, eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor, skipTimeAct: skipTimeAct, down: true));
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
            foreach (var d in downsamplers) hidden = d.forward(hidden, temb);
            outputStates.Add(hidden);
        }
        TensorScopes.MoveOut([hidden], outputStates);
        return (hidden, outputStates.ToArray());
    }
}
