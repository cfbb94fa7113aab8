namespace DiffusionLens.Models;

/// <summary>
/// The keyword arguments diffusers' <c>get_down_block</c> / <c>get_up_block</c> / <c>get_mid_block</c> take, with
/// their defaults. <see cref="UNet2DConditionModel"/> fills them from config.json; <see cref="UNet2DBlocks"/> turns
/// them into blocks.
/// </summary>
internal abstract record UNet2DBlockArgs
{
    /// <summary>Block type name as in config.json (a "UNetRes" prefix is stripped, as diffusers does).</summary>
    public required string? BlockType { get; init; }
    public int? TembChannels { get; init; }
    public double ResnetEps { get; init; } = 1e-6;
    public string ResnetActFn { get; init; } = "swish";
    /// <summary>
    /// transformer_layers_per_block for this block: one entry (an int, broadcast to every layer) or one entry per
    /// layer (the per-layer tuple diffusers also accepts).
    /// </summary>
    public int[] TransformerLayersPerBlock { get; init; } = [1];
    public int? NumAttentionHeads { get; init; }
    public int? ResnetGroups { get; init; }
    public int? CrossAttentionDim { get; init; }
    public bool DualCrossAttention { get; init; }
    public bool UseLinearProjection { get; init; }
    public bool UpcastAttention { get; init; }
    public string ResnetTimeScaleShift { get; init; } = "default";
    public string AttentionType { get; init; } = "default";
    public bool ResnetSkipTimeAct { get; init; }
    public string? CrossAttentionNorm { get; init; }
    public int? AttentionHeadDim { get; init; }
    public double Dropout { get; init; }

    /// <summary>attention_head_dim as get_down_block / get_up_block resolve it: defaults to num_attention_heads when null.</summary>
    public int? ResolvedAttentionHeadDim => AttentionHeadDim ?? NumAttentionHeads;

    /// <summary>The per-layer transformer depth for a block of <paramref name="numLayers"/> layers.</summary>
    public int[] TransformerLayersFor(int numLayers, string block)
    {
        if (TransformerLayersPerBlock.Length == 1) return Enumerable.Repeat(TransformerLayersPerBlock[0], numLayers).ToArray();
        if (TransformerLayersPerBlock.Length != numLayers)
            throw new LensException($"{block}: transformer_layers_per_block has {TransformerLayersPerBlock.Length} entries for {numLayers} layers");
        return TransformerLayersPerBlock;
    }
}

/// <summary>Arguments of diffusers' <c>get_down_block</c>.</summary>
internal sealed record DownBlockArgs : UNet2DBlockArgs
{
    public required int NumLayers { get; init; }
    public required int InChannels { get; init; }
    public required int OutChannels { get; init; }
    public required bool AddDownsample { get; init; }
    public int? DownsamplePadding { get; init; }
    public bool OnlyCrossAttention { get; init; }
    public double ResnetOutScaleFactor { get; init; } = 1.0;
    public string? DownsampleType { get; init; }
}

/// <summary>Arguments of diffusers' <c>get_up_block</c>.</summary>
internal sealed record UpBlockArgs : UNet2DBlockArgs
{
    public required int NumLayers { get; init; }
    public required int InChannels { get; init; }
    public required int OutChannels { get; init; }
    public required int PrevOutputChannel { get; init; }
    public required bool AddUpsample { get; init; }
    public int? ResolutionIdx { get; init; }
    public bool OnlyCrossAttention { get; init; }
    public double ResnetOutScaleFactor { get; init; } = 1.0;
    public string? UpsampleType { get; init; }
}

/// <summary>Arguments of diffusers' <c>get_mid_block</c>.</summary>
internal sealed record MidBlockArgs : UNet2DBlockArgs
{
    public required int InChannels { get; init; }
    public double OutputScaleFactor { get; init; } = 1.0;
    public bool MidBlockOnlyCrossAttention { get; init; }
    public MidBlockArgs() { AttentionHeadDim = 1; }
}
