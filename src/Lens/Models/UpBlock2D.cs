using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>UpBlock2D</c>: for each resnet, pop the last skip connection, concatenate it on channels and run the
/// ResnetBlock2D; then an optional Upsample2D with conv (key upsamplers.0.conv), to <c>upsample_size</c> when given.
/// </summary>
internal sealed class UpBlock2D : UNetUpBlock
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Upsample2D>? upsamplers;

    public int? ResolutionIdx { get; }
    public override int NumResnets => resnets.Count;

    public UpBlock2D(int inChannels, int prevOutputChannel, int outChannels, int? tembChannels, int? resolutionIdx = null,
        double dropout = 0.0, int numLayers = 1, double resnetEps = 1e-6, string resnetTimeScaleShift = "default",
        string resnetActFn = "swish", int? resnetGroups = 32, double outputScaleFactor = 1.0, bool addUpsample = true)
        : base(nameof(UpBlock2D))
    {
        int groups = resnetGroups ?? throw new LensException("UpBlock2D: resnet_groups (norm_num_groups) must not be null");
        ResolutionIdx = resolutionIdx;
        var rs = new ResnetBlock2D[numLayers];
        for (int i = 0; i < numLayers; i++)
        {
            int resSkipChannels = i == numLayers - 1 ? inChannels : outChannels;
            int resnetInChannels = i == 0 ? prevOutputChannel : outChannels;
            rs[i] = new ResnetBlock2D(resnetInChannels + resSkipChannels, outChannels, tembChannels, groups: groups,
                eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor);
        }
        resnets = new ModuleList<ResnetBlock2D>(rs);
        if (addUpsample)
            upsamplers = new ModuleList<Upsample2D>(new Upsample2D(outChannels, useConv: true, outChannels: outChannels));
        RegisterComponents();
    }

    public override Tensor Forward(Tensor hidden, Tensor[] resHiddenStates, Tensor? temb, Tensor? encoderHidden = null,
        long[]? upsampleSize = null, Tensor? attentionMask = null, Tensor? encoderAttentionMask = null)
    {
        using var scope = NewDisposeScope();
        int remaining = resHiddenStates.Length;
        foreach (var resnet in resnets)
        {
            if (remaining == 0) throw new LensException("UpBlock2D: ran out of skip connections");
            var res = resHiddenStates[--remaining];
            hidden = torch.cat(new[] { hidden, res }, 1);
            hidden = resnet.forward(hidden, temb);
        }
        if (upsamplers is not null)
            foreach (var u in upsamplers) hidden = u.forward(hidden, upsampleSize);
        return hidden.MoveToOuterDisposeScope();
    }
}
