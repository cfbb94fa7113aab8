using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>SimpleCrossAttnUpBlock2D</c> (DeepFloyd IF): for each layer, pop the last skip connection, concatenate
/// on channels, ResnetBlock2D -> <see cref="Attention"/> with added k/v projections (heads = out_channels /
/// attention_head_dim); then an optional ResnetBlock2D upsampler (<c>up=True</c>, always x2: <c>upsample_size</c> is
/// not used, as in diffusers).
/// </summary>
internal sealed class SimpleCrossAttnUpBlock2D : UNetUpBlock
{
    private readonly ModuleList<Attention> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<ResnetBlock2D>? upsamplers;

    public override bool HasCrossAttention => true;
    public int AttentionHeadDim { get; }
    public int NumHeads { get; }
    public int? ResolutionIdx { get; }
    public override int NumResnets => resnets.Count;

    public SimpleCrossAttnUpBlock2D(int inChannels, int outChannels, int prevOutputChannel, int? tembChannels,
        int? resolutionIdx = null, double dropout = 0.0, int numLayers = 1, double resnetEps = 1e-6,
        string resnetTimeScaleShift = "default", string resnetActFn = "swish", int? resnetGroups = 32,
        int attentionHeadDim = 1, int crossAttentionDim = 1280, double outputScaleFactor = 1.0, bool addUpsample = true,
        bool skipTimeAct = false, bool onlyCrossAttention = false, string? crossAttentionNorm = null)
        : base(nameof(SimpleCrossAttnUpBlock2D))
    {
        int groups = resnetGroups ?? throw new LensException("SimpleCrossAttnUpBlock2D: resnet_groups (norm_num_groups) must not be null");
        if (attentionHeadDim <= 0) throw new LensException($"SimpleCrossAttnUpBlock2D: attention_head_dim must be positive, got {attentionHeadDim}");
        AttentionHeadDim = attentionHeadDim;
        NumHeads = outChannels / attentionHeadDim;
        ResolutionIdx = resolutionIdx;

        var rs = new ResnetBlock2D[numLayers];
        var ats = new Attention[numLayers];
        for (int i = 0; i < numLayers; i++)
        {
            int resSkipChannels = i == numLayers - 1 ? inChannels : outChannels;
            int resnetInChannels = i == 0 ? prevOutputChannel : outChannels;
            rs[i] = new ResnetBlock2D(resnetInChannels + resSkipChannels, outChannels, tembChannels, groups: groups,
                eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor, skipTimeAct: skipTimeAct);
            ats[i] = new Attention(outChannels, crossAttentionDim: outChannels, heads: NumHeads, dimHead: attentionHeadDim,
                addedKvProjDim: crossAttentionDim, normNumGroups: groups, bias: true, upcastSoftmax: true,
                onlyCrossAttention: onlyCrossAttention, crossAttentionNorm: crossAttentionNorm,
                processor: AttentionProcessorKind.AttnAddedKVProcessor2_0);
        }
        attentions = new ModuleList<Attention>(ats);
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
        var mask = SimpleCrossAttnDownBlock2D.SelectMask(encoderHidden, attentionMask, encoderAttentionMask);
        int remaining = resHiddenStates.Length;
        for (int i = 0; i < resnets.Count; i++)
        {
            if (remaining == 0) throw new LensException("SimpleCrossAttnUpBlock2D: ran out of skip connections");
            hidden = torch.cat(new[] { hidden, resHiddenStates[--remaining] }, 1);
            hidden = resnets[i].forward(hidden, temb);
            hidden = attentions[i].forward(hidden, encoderHidden, mask);
        }
        if (upsamplers is not null)
            foreach (var u in upsamplers) hidden = u.forward(hidden, temb);
        return hidden.MoveToOuterDisposeScope();
    }
}
