using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>diffusers <c>UNetMidBlock2DCrossAttn</c>: resnets[0], then num_layers x (Transformer2DModel -> ResnetBlock2D).</summary>
internal sealed class UNetMidBlock2DCrossAttn : UNetMidBlock
{
    private readonly ModuleList<Transformer2DModel> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;

    public override bool HasCrossAttention => true;
    public int NumAttentionHeads { get; }

    public UNetMidBlock2DCrossAttn(int inChannels, int? tembChannels, int? outChannels = null, double dropout = 0.0,
        int numLayers = 1, int[]? transformerLayersPerBlock = null, double resnetEps = 1e-6,
        string resnetTimeScaleShift = "default", string resnetActFn = "swish", int? resnetGroups = 32,
        int? resnetGroupsOut = null, int numAttentionHeads = 1, double outputScaleFactor = 1.0,
        int crossAttentionDim = 1280, bool dualCrossAttention = false, bool useLinearProjection = false,
        bool upcastAttention = false, string attentionType = "default") : base(nameof(UNetMidBlock2DCrossAttn))
    {
        if (dualCrossAttention) throw new LensException("UNetMidBlock2DCrossAttn: dual_cross_attention is not supported");
        int outC = outChannels ?? inChannels;
        NumAttentionHeads = numAttentionHeads;
        int groups = resnetGroups ?? Math.Min(inChannels / 4, 32);
        var layers = transformerLayersPerBlock ?? [1];
        if (layers.Length == 1) layers = Enumerable.Repeat(layers[0], numLayers).ToArray();
        else if (layers.Length != numLayers)
            throw new LensException($"UNetMidBlock2DCrossAttn: transformer_layers_per_block has {layers.Length} entries for {numLayers} layers");
        int groupsOut = resnetGroupsOut ?? groups;

        var rs = new List<ResnetBlock2D>
        {
            new(inChannels, outC, tembChannels, groups: groups, groupsOut: groupsOut, eps: resnetEps,
                nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift, outputScaleFactor: outputScaleFactor),
        };
        var ats = new List<Transformer2DModel>();
        for (int i = 0; i < numLayers; i++)
        {
            ats.Add(new Transformer2DModel(numAttentionHeads, outC / numAttentionHeads, inChannels: outC,
                numLayers: layers[i], dropout: dropout, crossAttentionDim: crossAttentionDim, normNumGroups: groupsOut,
                useLinearProjection: useLinearProjection, upcastAttention: upcastAttention, attentionType: attentionType));
            rs.Add(new ResnetBlock2D(outC, outC, tembChannels, groups: groupsOut, eps: resnetEps,
                nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift, outputScaleFactor: outputScaleFactor));
        }
        attentions = new ModuleList<Transformer2DModel>(ats.ToArray());
        resnets = new ModuleList<ResnetBlock2D>(rs.ToArray());
        RegisterComponents();
    }

    public override Tensor Forward(Tensor hidden, Tensor? temb, Tensor? encoderHidden = null,
        Tensor? attentionMask = null, Tensor? encoderAttentionMask = null)
    {
        using var scope = NewDisposeScope();
        hidden = resnets[0].forward(hidden, temb);
        for (int i = 0; i < attentions.Count; i++)
        {
            hidden = attentions[i].forward(hidden, encoderHidden, attentionMask, encoderAttentionMask);
            hidden = resnets[i + 1].forward(hidden, temb);
        }
        return hidden.MoveToOuterDisposeScope();
    }
}
