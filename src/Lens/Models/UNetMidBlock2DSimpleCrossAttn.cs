using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>UNetMidBlock2DSimpleCrossAttn</c> (DeepFloyd IF): resnets[0], then num_layers x (<see cref="Attention"/>
/// with added k/v projections -> ResnetBlock2D); heads = in_channels / attention_head_dim.
/// </summary>
internal sealed class UNetMidBlock2DSimpleCrossAttn : UNetMidBlock
{
    private readonly ModuleList<Attention> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;

    public override bool HasCrossAttention => true;
    public int AttentionHeadDim { get; }
    public int NumHeads { get; }

    public UNetMidBlock2DSimpleCrossAttn(int inChannels, int? tembChannels, double dropout = 0.0, int numLayers = 1,
        double resnetEps = 1e-6, string resnetTimeScaleShift = "default", string resnetActFn = "swish",
        int? resnetGroups = 32, int attentionHeadDim = 1, double outputScaleFactor = 1.0, int crossAttentionDim = 1280,
        bool skipTimeAct = false, bool onlyCrossAttention = false, string? crossAttentionNorm = null)
        : base(nameof(UNetMidBlock2DSimpleCrossAttn))
    {
        if (attentionHeadDim <= 0) throw new LensException($"UNetMidBlock2DSimpleCrossAttn: attention_head_dim must be positive, got {attentionHeadDim}");
        int groups = resnetGroups ?? Math.Min(inChannels / 4, 32);
        AttentionHeadDim = attentionHeadDim;
        NumHeads = inChannels / attentionHeadDim;

        ResnetBlock2D MakeResnet() => new(inChannels, inChannels, tembChannels, groups: groups, eps: resnetEps,
            nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift, outputScaleFactor: outputScaleFactor,
            skipTimeAct: skipTimeAct);

        var rs = new List<ResnetBlock2D> { MakeResnet() };
        var ats = new List<Attention>();
        for (int i = 0; i < numLayers; i++)
        {
            ats.Add(new Attention(inChannels, crossAttentionDim: inChannels, heads: NumHeads, dimHead: attentionHeadDim,
                addedKvProjDim: crossAttentionDim, normNumGroups: groups, bias: true, upcastSoftmax: true,
                onlyCrossAttention: onlyCrossAttention, crossAttentionNorm: crossAttentionNorm,
                processor: AttentionProcessorKind.AttnAddedKVProcessor2_0));
            rs.Add(MakeResnet());
        }
        attentions = new ModuleList<Attention>(ats.ToArray());
        resnets = new ModuleList<ResnetBlock2D>(rs.ToArray());
        RegisterComponents();
    }

    public override Tensor Forward(Tensor hidden, Tensor? temb, Tensor? encoderHidden = null,
        Tensor? attentionMask = null, Tensor? encoderAttentionMask = null)
    {
        using var scope = NewDisposeScope();
        var mask = SimpleCrossAttnDownBlock2D.SelectMask(encoderHidden, attentionMask, encoderAttentionMask);
        hidden = resnets[0].forward(hidden, temb);
        for (int i = 0; i < attentions.Count; i++)
        {
            hidden = attentions[i].forward(hidden, encoderHidden, mask);
            hidden = resnets[i + 1].forward(hidden, temb);
        }
        return hidden.MoveToOuterDisposeScope();
    }
}
