using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>CrossAttnUpBlock2D</c>: for each layer, pop the last skip connection, concatenate on channels,
/// ResnetBlock2D -> Transformer2DModel; then an optional Upsample2D with conv, to <c>upsample_size</c> when given.
/// </summary>
internal sealed class CrossAttnUpBlock2D : UNetUpBlock
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Transformer2DModel> attentions;
    private readonly ModuleList<Upsample2D>? upsamplers;

    public override bool HasCrossAttention => true;
    public int NumAttentionHeads { get; }
    public int? ResolutionIdx { get; }
    public override int NumResnets => resnets.Count;

    public CrossAttnUpBlock2D(int inChannels, int outChannels, int prevOutputChannel, int? tembChannels,
        int? resolutionIdx = null, double dropout = 0.0, int numLayers = 1, int[]? transformerLayersPerBlock = null,
        double resnetEps = 1e-6, string resnetTimeScaleShift = "default", string resnetActFn = "swish",
        int? resnetGroups = 32, int numAttentionHeads = 1, int crossAttentionDim = 1280, double outputScaleFactor = 1.0,
        bool addUpsample = true, bool dualCrossAttention = false, bool useLinearProjection = false,
        bool onlyCrossAttention = false, bool upcastAttention = false, string attentionType = "default")
        : base(nameof(CrossAttnUpBlock2D))
    {
        if (dualCrossAttention) throw new LensException("CrossAttnUpBlock2D: dual_cross_attention is not supported");
        int groups = resnetGroups ?? throw new LensException("CrossAttnUpBlock2D: resnet_groups (norm_num_groups) must not be null");
        NumAttentionHeads = numAttentionHeads;
        ResolutionIdx = resolutionIdx;
        var layers = transformerLayersPerBlock ?? [1];
        if (layers.Length == 1) layers = Enumerable.Repeat(layers[0], numLayers).ToArray();

        var rs = new ResnetBlock2D[numLayers];
        var ats = new Transformer2DModel[numLayers];
        for (int i = 0; i < numLayers; i++)
        {
            int resSkipChannels = i == numLayers - 1 ? inChannels : outChannels;
            int resnetInChannels = i == 0 ? prevOutputChannel : outChannels;
            rs[i] = new ResnetBlock2D(resnetInChannels + resSkipChannels, outChannels, tembChannels, groups: groups,
                eps: resnetEps, nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor);
            ats[i] = new Transformer2DModel(numAttentionHeads, outChannels / numAttentionHeads, inChannels: outChannels,
                numLayers: layers[i], dropout: dropout, crossAttentionDim: crossAttentionDim, normNumGroups: groups,
                useLinearProjection: useLinearProjection, onlyCrossAttention: onlyCrossAttention,
                upcastAttention: upcastAttention, attentionType: attentionType);
        }
        resnets = new ModuleList<ResnetBlock2D>(rs);
        attentions = new ModuleList<Transformer2DModel>(ats);
        if (addUpsample)
            upsamplers = new ModuleList<Upsample2D>(new Upsample2D(outChannels, useConv: true, outChannels: outChannels));
        RegisterComponents();
    }

    public override Tensor Forward(Tensor hidden, Tensor[] resHiddenStates, Tensor? temb, Tensor? encoderHidden = null,
        long[]? upsampleSize = null, Tensor? attentionMask = null, Tensor? encoderAttentionMask = null)
    {
        using var scope = NewDisposeScope();
        int remaining = resHiddenStates.Length;
        for (int i = 0; i < resnets.Count; i++)
        {
            if (remaining == 0) throw new LensException("CrossAttnUpBlock2D: ran out of skip connections");
            var res = resHiddenStates[--remaining];
            hidden = torch.cat(new[] { hidden, res }, 1);
            hidden = resnets[i].forward(hidden, temb);
            hidden = attentions[i].forward(hidden, encoderHidden, attentionMask, encoderAttentionMask);
        }
        if (upsamplers is not null)
            foreach (var u in upsamplers) hidden = u.forward(hidden, upsampleSize);
        return hidden.MoveToOuterDisposeScope();
    }
}
