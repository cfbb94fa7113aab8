using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>ResnetUpsampleBlock2D</c> (DeepFloyd IF): for each resnet, pop the last skip connection, concatenate it
/// on channels and run the ResnetBlock2D; then an optional upsampler that is itself a ResnetBlock2D with <c>up=True</c>
/// (nearest x2 of both paths, key upsamplers.0.*), taking the time embedding. As in diffusers, the upsampler always
/// doubles the size: <c>upsample_size</c> is not used.
/// </summary>
internal sealed class ResnetUpsampleBlock2D : UNetUpBlock
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<ResnetBlock2D>? upsamplers;

    public int? ResolutionIdx { get; }
    public override int NumResnets => resnets.Count;

    public ResnetUpsampleBlock2D(int inChannels, int prevOutputChannel, int outChannels, int? tembChannels,
        int? resolutionIdx = null, double dropout = 0.0, int numLayers = 1, double resnetEps = 1e-6,
        string resnetTimeScaleShift = "default", string resnetActFn = "swish", int? resnetGroups = 32,
        double outputScaleFactor = 1.0, bool addUpsample = true, bool skipTimeAct = false)
        : base(nameof(ResnetUpsampleBlock2D))
    {
        int groups = resnetGroups ?? throw new LensException("ResnetUpsampleBlock2D: resnet_groups (norm_num_groups) must not be null");
        ResolutionIdx = resolutionIdx;
        var rs = new ResnetBlock2D[numLayers];
        for (int i = 0; i < numLayers; i++)
        {
            int resSkipChannels = i == numLayers - 1 ? inChannels : outChannels;
            int resnetInChannels = i == 0 ? prevOutputChannel : outChannels;
            rs[i] = new ResnetBlock2D(resnetInChannels + resSkipChannels, outChannels, tembChannels, groups: groups,
                eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor, skipTimeAct: skipTimeAct);
        }
        resnets = new ModuleList<ResnetBlock2D>(rs);
        if (addUpsample)
            upsamplers = new ModuleList<ResnetBlock2D>(new ResnetBlock2D(outChannels, outChannels, tembChannels,
                groups: groups, eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor, skipTimeAct: skipTimeAct, up: true));
        RegisterComponents();
    }

    public override Tensor Forward(Tensor hidden, Tensor[] resHiddenStates, Tensor? temb, Tensor? encoderHidden = null,
        long[]? upsampleSize = null, Tensor? attentionMask = null, Tensor? encoderAttentionMask = null)
    {
        using var scope = NewDisposeScope();
        int remaining = resHiddenStates.Length;
        foreach (var resnet in resnets)
        {
            if (remaining == 0) throw new LensException("ResnetUpsampleBlock2D: ran out of skip connections");
            hidden = torch.cat(new[] { hidden, resHiddenStates[--remaining] }, 1);
            hidden = resnet.forward(hidden, temb);
        }
        if (upsamplers is not null)
            foreach (var u in upsamplers) hidden = u.forward(hidden, temb);
        return hidden.MoveToOuterDisposeScope();
    }
}
