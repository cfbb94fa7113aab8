using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>SimpleCrossAttnDownBlock2D</c> (DeepFloyd IF): num_layers x (ResnetBlock2D -> <see cref="Attention"/>
/// with added k/v projections of the encoder states (<see cref="AttentionProcessorKind.AttnAddedKVProcessor2_0"/>),
/// heads = out_channels / attention_head_dim), each output a residual, then an optional ResnetBlock2D downsampler
/// (<c>down=True</c>) whose output is a residual too.
/// </summary>
internal sealed class SimpleCrossAttnDownBlock2D : UNetDownBlock
{
    private readonly ModuleList<Attention> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<ResnetBlock2D>? downsamplers;

    public override bool HasCrossAttention => true;
    public int AttentionHeadDim { get; }
    public int NumHeads { get; }

    public SimpleCrossAttnDownBlock2D(int inChannels, int outChannels, int? tembChannels, double dropout = 0.0,
        int numLayers = 1, double resnetEps = 1e-6, string resnetTimeScaleShift = "default",
        string resnetActFn = "swish", int? resnetGroups = 32, int attentionHeadDim = 1, int crossAttentionDim = 1280,
        double outputScaleFactor = 1.0, bool addDownsample = true, bool skipTimeAct = false,
        bool onlyCrossAttention = false, string? crossAttentionNorm = null) : base(nameof(SimpleCrossAttnDownBlock2D))
    {
        int groups = resnetGroups ?? throw new LensException("SimpleCrossAttnDownBlock2D: resnet_groups (norm_num_groups) must not be null");
        if (attentionHeadDim <= 0) throw new LensException($"SimpleCrossAttnDownBlock2D: attention_head_dim must be positive, got {attentionHeadDim}");
        AttentionHeadDim = attentionHeadDim;
        NumHeads = outChannels / attentionHeadDim;

        var rs = new ResnetBlock2D[numLayers];
        var ats = new Attention[numLayers];
        for (int i = 0; i < numLayers; i++)
        {
            rs[i] = new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, groups: groups,
                eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor, skipTimeAct: skipTimeAct);
            ats[i] = new Attention(outChannels, crossAttentionDim: outChannels, heads: NumHeads, dimHead: attentionHeadDim,
                addedKvProjDim: crossAttentionDim, normNumGroups: groups, bias: true, upcastSoftmax: true,
                onlyCrossAttention: onlyCrossAttention, crossAttentionNorm: crossAttentionNorm,
                processor: AttentionProcessorKind.AttnAddedKVProcessor2_0);
        }
        attentions = new ModuleList<Attention>(ats);
        resnets = new ModuleList<ResnetBlock2D>(rs);
        if (addDownsample)
            downsamplers = new ModuleList<ResnetBlock2D>(new ResnetBlock2D(outChannels, outChannels, tembChannels,
                groups: groups, eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor, skipTimeAct: skipTimeAct, down: true));
        RegisterComponents();
    }

    /// <summary>
    /// The mask the Simple* blocks hand their attentions: <c>attention_mask</c> when given (UnCLIP's convention), else
    /// <c>encoder_attention_mask</c> when there are encoder states, else none.
    /// </summary>
    internal static Tensor? SelectMask(Tensor? encoderHidden, Tensor? attentionMask, Tensor? encoderAttentionMask) =>
        attentionMask ?? (encoderHidden is null ? null : encoderAttentionMask);

    public override (Tensor Hidden, Tensor[] Residuals) Forward(Tensor hidden, Tensor? temb, Tensor? encoderHidden = null,
        Tensor? attentionMask = null, Tensor? encoderAttentionMask = null)
    {
        using var scope = NewDisposeScope();
        var mask = SelectMask(encoderHidden, attentionMask, encoderAttentionMask);
        var outputStates = new List<Tensor>();
        for (int i = 0; i < resnets.Count; i++)
        {
            hidden = resnets[i].forward(hidden, temb);
            hidden = attentions[i].forward(hidden, encoderHidden, mask);
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
