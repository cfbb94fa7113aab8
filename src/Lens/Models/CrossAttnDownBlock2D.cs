using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>CrossAttnDownBlock2D</c>: num_layers x (ResnetBlock2D -> Transformer2DModel), each output kept as a
/// residual, then an optional stride-2 conv Downsample2D (key downsamplers.0.conv) whose output is a residual too.
/// </summary>
internal sealed class CrossAttnDownBlock2D : UNetDownBlock
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Transformer2DModel> attentions;
    private readonly ModuleList<Downsample2D>? downsamplers;

    public override bool HasCrossAttention => true;
    public int NumAttentionHeads { get; }

    public CrossAttnDownBlock2D(int inChannels, int outChannels, int? tembChannels, double dropout = 0.0, int numLayers = 1,
        int[]? transformerLayersPerBlock = null, double resnetEps = 1e-6, string resnetTimeScaleShift = "default",
        string resnetActFn = "swish", int? resnetGroups = 32, int numAttentionHeads = 1, int crossAttentionDim = 1280,
        double outputScaleFactor = 1.0, int downsamplePadding = 1, bool addDownsample = true,
        bool dualCrossAttention = false, bool useLinearProjection = false, bool onlyCrossAttention = false,
        bool upcastAttention = false, string attentionType = "default") : base(nameof(CrossAttnDownBlock2D))
    {
        if (dualCrossAttention) throw new LensException("CrossAttnDownBlock2D: dual_cross_attention is not supported");
        int groups = resnetGroups ?? throw new LensException("CrossAttnDownBlock2D: resnet_groups (norm_num_groups) must not be null");
        NumAttentionHeads = numAttentionHeads;
        var layers = transformerLayersPerBlock ?? [1];
        if (layers.Length == 1) layers = Enumerable.Repeat(layers[0], numLayers).ToArray();

        var rs = new List<ResnetBlock2D>();
        var ats = new List<Transformer2DModel>();
        for (int i = 0; i < numLayers; i++)
        {
            int inC = i == 0 ? inChannels : outChannels;
            rs.Add(new ResnetBlock2D(inC, outChannels, tembChannels, groups: groups, eps: resnetEps,
                nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift, outputScaleFactor: outputScaleFactor));
            ats.Add(new Transformer2DModel(numAttentionHeads, outChannels / numAttentionHeads, inChannels: outChannels,
                numLayers: layers[i], dropout: dropout, crossAttentionDim: crossAttentionDim, normNumGroups: groups,
                useLinearProjection: useLinearProjection, onlyCrossAttention: onlyCrossAttention,
                upcastAttention: upcastAttention, attentionType: attentionType));
        }
        resnets = new ModuleList<ResnetBlock2D>(rs.ToArray());
        attentions = new ModuleList<Transformer2DModel>(ats.ToArray());
        if (addDownsample)
            downsamplers = new ModuleList<Downsample2D>(new Downsample2D(outChannels, useConv: true, outChannels: outChannels, padding: downsamplePadding));
        RegisterComponents();
    }

    public override (Tensor Hidden, Tensor[] Residuals) Forward(Tensor hidden, Tensor? temb, Tensor? encoderHidden = null,
        Tensor? attentionMask = null, Tensor? encoderAttentionMask = null)
    {
        using var scope = NewDisposeScope();
        var outputStates = new List<Tensor>();
        for (int i = 0; i < resnets.Count; i++)
        {
            hidden = resnets[i].forward(hidden, temb);
            hidden = attentions[i].forward(hidden, encoderHidden, attentionMask, encoderAttentionMask);
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
