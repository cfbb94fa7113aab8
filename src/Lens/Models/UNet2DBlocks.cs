namespace DiffusionLens.Models;

/// <summary>
/// diffusers' <c>get_down_block</c> / <c>get_mid_block</c> / <c>get_up_block</c> (models/unets/unet_2d_blocks.py):
/// builds a block from its type name and arguments. Add a case here for a new block type; an unknown type throws a
/// <see cref="LensException"/> naming it.
/// </summary>
internal static class UNet2DBlocks
{
    /// <summary>The block type names the builders below accept (also with diffusers' legacy "UNetRes" prefix).</summary>
    public static readonly string[] DownBlockTypes = ["DownBlock2D", "CrossAttnDownBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"];
    public static readonly string[] MidBlockTypes = ["UNetMidBlock2DCrossAttn", "UNetMidBlock2D", "UNetMidBlock2DSimpleCrossAttn"];
    public static readonly string[] UpBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D"];

    internal static IEnumerable<string> WithLegacyPrefix(string[] types) => types.Concat(types.Where(t => !t.StartsWith("UNet")).Select(t => "UNetRes" + t));

    private static string StripPrefix(string t) => t.StartsWith("UNetRes") ? t[7..] : t;

    private static int Require(int? value, string what, string block) =>
        value ?? throw new LensException($"{block}: {what} must be specified");

    public static UNetDownBlock GetDownBlock(DownBlockArgs a)
    {
        var type = a.BlockType ?? throw new LensException("down block type is null");
        switch (StripPrefix(type))
        {
            case "DownBlock2D":
                return new DownBlock2D(a.InChannels, a.OutChannels, a.TembChannels, dropout: a.Dropout,
                    numLayers: a.NumLayers, resnetEps: a.ResnetEps, resnetTimeScaleShift: a.ResnetTimeScaleShift,
                    resnetActFn: a.ResnetActFn, resnetGroups: a.ResnetGroups, addDownsample: a.AddDownsample,
                    downsamplePadding: Require(a.DownsamplePadding, "downsample_padding", type));
            case "CrossAttnDownBlock2D":
                return new CrossAttnDownBlock2D(a.InChannels, a.OutChannels, a.TembChannels, dropout: a.Dropout,
                    numLayers: a.NumLayers, transformerLayersPerBlock: a.TransformerLayersFor(a.NumLayers, type),
                    resnetEps: a.ResnetEps, resnetTimeScaleShift: a.ResnetTimeScaleShift, resnetActFn: a.ResnetActFn,
                    resnetGroups: a.ResnetGroups, numAttentionHeads: Require(a.NumAttentionHeads, "num_attention_heads", type),
                    crossAttentionDim: Require(a.CrossAttentionDim, "cross_attention_dim", type),
                    downsamplePadding: Require(a.DownsamplePadding, "downsample_padding", type),
                    addDownsample: a.AddDownsample, dualCrossAttention: a.DualCrossAttention,
                    useLinearProjection: a.UseLinearProjection, onlyCrossAttention: a.OnlyCrossAttention,
                    upcastAttention: a.UpcastAttention, attentionType: a.AttentionType);
            case "ResnetDownsampleBlock2D":
                return new ResnetDownsampleBlock2D(a.InChannels, a.OutChannels, a.TembChannels, dropout: a.Dropout,
                    numLayers: a.NumLayers, resnetEps: a.ResnetEps, resnetTimeScaleShift: a.ResnetTimeScaleShift,
                    resnetActFn: a.ResnetActFn, resnetGroups: a.ResnetGroups,
                    outputScaleFactor: a.ResnetOutScaleFactor, addDownsample: a.AddDownsample,
                    skipTimeAct: a.ResnetSkipTimeAct);
            case "SimpleCrossAttnDownBlock2D":
                return new SimpleCrossAttnDownBlock2D(a.InChannels, a.OutChannels, a.TembChannels, dropout: a.Dropout,
                    numLayers: a.NumLayers, resnetEps: a.ResnetEps, resnetTimeScaleShift: a.ResnetTimeScaleShift,
                    resnetActFn: a.ResnetActFn, resnetGroups: a.ResnetGroups,
                    attentionHeadDim: Require(a.ResolvedAttentionHeadDim, "attention_head_dim", type),
                    crossAttentionDim: Require(a.CrossAttentionDim, "cross_attention_dim", type),
                    outputScaleFactor: a.ResnetOutScaleFactor, addDownsample: a.AddDownsample,
                    skipTimeAct: a.ResnetSkipTimeAct, onlyCrossAttention: a.OnlyCrossAttention,
                    crossAttentionNorm: a.CrossAttentionNorm);
            default:
                throw new LensException($"unsupported down block type '{type}'");
        }
    }

    /// <summary>Returns null for a null mid_block_type (no mid block), as diffusers does.</summary>
    public static UNetMidBlock? GetMidBlock(MidBlockArgs a)
    {
        var type = a.BlockType;
        switch (type)
        {
            case null:
                return null;
            case "UNetMidBlock2DCrossAttn":
                return new UNetMidBlock2DCrossAttn(a.InChannels, a.TembChannels, dropout: a.Dropout,
                    transformerLayersPerBlock: a.TransformerLayersPerBlock, resnetEps: a.ResnetEps,
                    resnetTimeScaleShift: a.ResnetTimeScaleShift, resnetActFn: a.ResnetActFn,
                    resnetGroups: a.ResnetGroups, numAttentionHeads: Require(a.NumAttentionHeads, "num_attention_heads", type),
                    outputScaleFactor: a.OutputScaleFactor,
                    crossAttentionDim: Require(a.CrossAttentionDim, "cross_attention_dim", type),
                    dualCrossAttention: a.DualCrossAttention, useLinearProjection: a.UseLinearProjection,
                    upcastAttention: a.UpcastAttention, attentionType: a.AttentionType);
            case "UNetMidBlock2D":
                return new UNetMidBlock2D(a.InChannels, a.TembChannels, dropout: a.Dropout, numLayers: 0,
                    resnetEps: a.ResnetEps, resnetActFn: a.ResnetActFn, outputScaleFactor: a.OutputScaleFactor,
                    resnetGroups: a.ResnetGroups, resnetTimeScaleShift: a.ResnetTimeScaleShift, addAttention: false);
            case "UNetMidBlock2DSimpleCrossAttn":
                return new UNetMidBlock2DSimpleCrossAttn(a.InChannels, a.TembChannels, dropout: a.Dropout,
                    resnetEps: a.ResnetEps, resnetActFn: a.ResnetActFn, outputScaleFactor: a.OutputScaleFactor,
                    crossAttentionDim: Require(a.CrossAttentionDim, "cross_attention_dim", type),
                    attentionHeadDim: Require(a.AttentionHeadDim, "attention_head_dim", type),
                    resnetGroups: a.ResnetGroups, resnetTimeScaleShift: a.ResnetTimeScaleShift,
                    skipTimeAct: a.ResnetSkipTimeAct, onlyCrossAttention: a.MidBlockOnlyCrossAttention,
                    crossAttentionNorm: a.CrossAttentionNorm);
            default:
                throw new LensException($"unsupported mid block type '{type}'");
        }
    }

    public static UNetUpBlock GetUpBlock(UpBlockArgs a)
    {
        var type = a.BlockType ?? throw new LensException("up block type is null");
        switch (StripPrefix(type))
        {
            case "UpBlock2D":
                return new UpBlock2D(a.InChannels, a.PrevOutputChannel, a.OutChannels, a.TembChannels,
                    resolutionIdx: a.ResolutionIdx, dropout: a.Dropout, numLayers: a.NumLayers, resnetEps: a.ResnetEps,
                    resnetTimeScaleShift: a.ResnetTimeScaleShift, resnetActFn: a.ResnetActFn,
                    resnetGroups: a.ResnetGroups, addUpsample: a.AddUpsample);
            case "CrossAttnUpBlock2D":
                return new CrossAttnUpBlock2D(a.InChannels, a.OutChannels, a.PrevOutputChannel, a.TembChannels,
                    resolutionIdx: a.ResolutionIdx, dropout: a.Dropout, numLayers: a.NumLayers,
                    transformerLayersPerBlock: a.TransformerLayersFor(a.NumLayers, type), resnetEps: a.ResnetEps,
                    resnetTimeScaleShift: a.ResnetTimeScaleShift, resnetActFn: a.ResnetActFn,
                    resnetGroups: a.ResnetGroups, numAttentionHeads: Require(a.NumAttentionHeads, "num_attention_heads", type),
                    crossAttentionDim: Require(a.CrossAttentionDim, "cross_attention_dim", type),
                    addUpsample: a.AddUpsample, dualCrossAttention: a.DualCrossAttention,
                    useLinearProjection: a.UseLinearProjection, onlyCrossAttention: a.OnlyCrossAttention,
                    upcastAttention: a.UpcastAttention, attentionType: a.AttentionType);
            case "ResnetUpsampleBlock2D":
                return new ResnetUpsampleBlock2D(a.InChannels, a.PrevOutputChannel, a.OutChannels, a.TembChannels,
                    resolutionIdx: a.ResolutionIdx, dropout: a.Dropout, numLayers: a.NumLayers, resnetEps: a.ResnetEps,
                    resnetTimeScaleShift: a.ResnetTimeScaleShift, resnetActFn: a.ResnetActFn,
                    resnetGroups: a.ResnetGroups, outputScaleFactor: a.ResnetOutScaleFactor,
                    addUpsample: a.AddUpsample, skipTimeAct: a.ResnetSkipTimeAct);
            case "SimpleCrossAttnUpBlock2D":
                return new SimpleCrossAttnUpBlock2D(a.InChannels, a.OutChannels, a.PrevOutputChannel, a.TembChannels,
                    resolutionIdx: a.ResolutionIdx, dropout: a.Dropout, numLayers: a.NumLayers, resnetEps: a.ResnetEps,
                    resnetTimeScaleShift: a.ResnetTimeScaleShift, resnetActFn: a.ResnetActFn,
                    resnetGroups: a.ResnetGroups,
                    attentionHeadDim: Require(a.ResolvedAttentionHeadDim, "attention_head_dim", type),
                    crossAttentionDim: Require(a.CrossAttentionDim, "cross_attention_dim", type),
                    outputScaleFactor: a.ResnetOutScaleFactor, addUpsample: a.AddUpsample,
                    skipTimeAct: a.ResnetSkipTimeAct, onlyCrossAttention: a.OnlyCrossAttention,
                    crossAttentionNorm: a.CrossAttentionNorm);
            default:
                throw new LensException($"unsupported up block type '{type}'");
        }
    }
}
