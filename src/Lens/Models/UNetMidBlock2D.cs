using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>UNetMidBlock2D</c>: resnets[0], then num_layers x ([Attention] -> ResnetBlock2D). The attention is the
/// VAE-style one: group_norm (attn_groups), heads = in_channels / attention_head_dim, bias, residual connection,
/// rescale_output_factor = output_scale_factor, eps = resnet_eps. Used by the VAE encoder/decoder (attention_head_dim =
/// block_out_channels[-1], so one head) and by UNets with mid_block_type "UNetMidBlock2D" (no layers, no attention).
/// </summary>
internal sealed class UNetMidBlock2D : UNetMidBlock
{
    private readonly ModuleList<Attention> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;

    public bool AddAttention { get; }

    public UNetMidBlock2D(int inChannels, int? tembChannels, double dropout = 0.0, int numLayers = 1,
        double resnetEps = 1e-6, string resnetTimeScaleShift = "default", string resnetActFn = "swish",
        int? resnetGroups = 32, int? attnGroups = null, bool addAttention = true, int? attentionHeadDim = 1,
        double outputScaleFactor = 1.0) : base(nameof(UNetMidBlock2D))
    {
        if (resnetTimeScaleShift == "spatial")
            throw new LensException("UNetMidBlock2D: resnet_time_scale_shift 'spatial' (ResnetBlockCondNorm2D / SpatialNorm) is not supported");
        int groups = resnetGroups ?? Math.Min(inChannels / 4, 32);
        AddAttention = addAttention;
        int? aGroups = attnGroups ?? (resnetTimeScaleShift == "default" ? groups : null);
        int headDim = attentionHeadDim ?? inChannels;

        var rs = new List<ResnetBlock2D>
        {
            new(inChannels, inChannels, tembChannels, groups: groups, eps: resnetEps, nonLinearity: resnetActFn,
                timeEmbeddingNorm: resnetTimeScaleShift, outputScaleFactor: outputScaleFactor),
        };
        var ats = new List<Attention>();
        for (int i = 0; i < numLayers; i++)
        {
            if (addAttention)
                ats.Add(new Attention(inChannels, heads: inChannels / headDim, dimHead: headDim,
                    rescaleOutputFactor: outputScaleFactor, eps: resnetEps, normNumGroups: aGroups,
                    residualConnection: true, bias: true, upcastSoftmax: true, fromDeprecatedAttnBlock: true));
            rs.Add(new ResnetBlock2D(inChannels, inChannels, tembChannels, groups: groups, eps: resnetEps,
                nonLinearity: resnetActFn, timeEmbeddingNorm: resnetTimeScaleShift, outputScaleFactor: outputScaleFactor));
        }
        attentions = new ModuleList<Attention>(ats.ToArray());
        resnets = new ModuleList<ResnetBlock2D>(rs.ToArray());
        RegisterComponents();
    }

    public override Tensor Forward(Tensor hidden, Tensor? temb, Tensor? encoderHidden = null,
        Tensor? attentionMask = null, Tensor? encoderAttentionMask = null)
    {
        using var scope = NewDisposeScope();
        hidden = resnets[0].forward(hidden, temb);
        for (int i = 1; i < resnets.Count; i++)
        {
            if (AddAttention) hidden = attentions[i - 1].forward(hidden, null, null);
            hidden = resnets[i].forward(hidden, temb);
        }
        return hidden.MoveToOuterDisposeScope();
    }

    public Tensor forward(Tensor hidden, Tensor? temb = null) => Forward(hidden, temb);
}
