using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>UNet2DConditionModel</c> (models/unets/unet_2d_condition.py), built from the unet config.json with
/// diffusers' defaults for missing keys. Keys: conv_in, time_proj (no parameters), time_embedding, down_blocks,
/// mid_block, up_blocks, conv_norm_out, conv_act (no parameters), conv_out, for DeepFloyd IF encoder_hid_proj and
/// add_embedding, for SDXL add_time_proj (no parameters) and add_embedding.
/// Supported: positional time embedding, the Stable Diffusion and DeepFloyd IF block sets (see
/// <see cref="UNet2DBlocks"/>), the legacy head rule (num_attention_heads = attention_head_dim), per-block lists for
/// attention_head_dim, cross_attention_dim, layers_per_block, transformer_layers_per_block and only_cross_attention,
/// encoder_hid_dim_type "text_proj" (also implied by encoder_hid_dim alone), addition_embed_type "text"
/// (<see cref="TextTimeEmbedding"/> of the unprojected encoder states, added to the time embedding) and "text_time"
/// (SDXL: add_time_proj of the time ids and the pooled text embeddings through add_embedding), resnet_time_scale_shift
/// "scale_shift", resnet_skip_time_act, resnet_out_scale_factor, cross_attention_norm, mid_block_only_cross_attention.
/// class_embed_type "timestep" (DeepFloyd IF stage II: the class labels, IF's noise level, through time_proj and a
/// <see cref="TimestepEmbedding"/> added to the time embedding).
/// Not supported (a <see cref="LensException"/> names them): other class embeddings (tables, identity, projections),
/// class_embeddings_concat, other addition / encoder projection types, time_cond_proj, non-positional time embeddings.
/// </summary>
internal sealed class UNet2DConditionModel : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    private readonly Conv2d conv_in;
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding time_embedding;
    // Optional conditioning modules, built in the constructor's switches below, applied in Forward.
    private readonly Linear? encoder_hid_proj;
    private readonly TimestepEmbedding? class_embedding;
    // addition_embed_type "text": a TextTimeEmbedding of the encoder states; "text_time" (SDXL): a TimestepEmbedding of
    // [text_embeds, add_time_proj(time_ids)]
    private readonly nn.Module? add_embedding;
    private readonly Timesteps? add_time_proj;
    private readonly ModuleList<UNetDownBlock> down_blocks;
    private readonly UNetMidBlock? mid_block;
    private readonly ModuleList<UNetUpBlock> up_blocks;
    private readonly GroupNorm? conv_norm_out;
    private readonly Conv2d conv_out;

    private readonly Func<Tensor, Tensor>? _timeEmbedAct;
    private readonly Func<Tensor, Tensor>? _convAct;
    private readonly bool _centerInputSample;

    public DiffusersConfig Config { get; }
    public int InChannels { get; }
    public int OutChannels { get; }
    public int[] BlockOutChannels { get; }
    public int[] CrossAttentionDims { get; }
    /// <summary>How many up blocks upsample; inputs whose size is not a multiple of 2^this get forwarded upsample sizes.</summary>
    public int NumUpsamplers { get; }
    /// <summary>
    /// What height and width must be multiples of: 2^NumUpsamplers when an up block upsamples with a resnet
    /// (ResnetUpsampleBlock2D, SimpleCrossAttnUpBlock2D: DeepFloyd IF), which doubles the size and cannot take a
    /// forwarded upsample size (diffusers then fails inside torch.cat); 1 otherwise.
    /// </summary>
    public int SizeMultiple { get; }
    public int? SampleSize { get; }
    /// <summary>encoder_hid_dim_type as diffusers resolves it ("text_proj" when only encoder_hid_dim is set), or null.</summary>
    public string? EncoderHidDimType { get; }
    /// <summary>addition_embed_type ("text" for DeepFloyd IF, "text_time" for SDXL), or null.</summary>
    public string? AdditionEmbedType { get; }
    /// <summary>class_embed_type ("timestep" for DeepFloyd IF stage II: <c>class_labels</c> carry the noise level), or null.</summary>
    public string? ClassEmbedType { get; }
    /// <summary>addition_time_embed_dim (SDXL: the sinusoidal width of each time id), or null.</summary>
    public int? AdditionTimeEmbedDim { get; }
    /// <summary>projection_class_embeddings_input_dim (SDXL: the input width of add_embedding, pooled text + 6 time ids), or null.</summary>
    public int? ProjectionClassEmbeddingsInputDim { get; }

    public static UNet2DConditionModel FromConfig(DiffusersConfig cfg) => new(cfg);

    public UNet2DConditionModel(DiffusersConfig cfg) : base(nameof(UNet2DConditionModel))
    {
        Config = cfg;
        string[] downBlockTypes = cfg.Has("down_block_types") ? cfg.StrArray("down_block_types")
            : ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"];
        string? midBlockType = NullableStr(cfg, "mid_block_type", "UNetMidBlock2DCrossAttn");
        string[] upBlockTypes = cfg.Has("up_block_types") ? cfg.StrArray("up_block_types")
            : ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];
        int[] blockOutChannels = cfg.Has("block_out_channels") ? cfg.IntArray("block_out_channels") : [320, 640, 1280, 1280];
        int n = downBlockTypes.Length;

        // values this implementation does not support: an error naming the field, its value and the file
        cfg.RequireSupported("down_block_types", UNet2DBlocks.WithLegacyPrefix(UNet2DBlocks.DownBlockTypes));
        cfg.RequireSupported("mid_block_type", UNet2DBlocks.MidBlockTypes);
        cfg.RequireSupported("up_block_types", UNet2DBlocks.WithLegacyPrefix(UNet2DBlocks.UpBlockTypes));
        foreach (var key in new[] { "act_fn", "time_embedding_act_fn", "timestep_post_act" })
            cfg.RequireSupported(key, Activations.Names, ignoreCase: true);
        cfg.RequireSupported("resnet_time_scale_shift", ["default", "scale_shift"]);
        cfg.RequireSupported("cross_attention_norm", ["layer_norm", "group_norm"]);
        // (time_embedding_type, attention_type, encoder_hid_dim_type, class_embed_type, addition_embed_type: checked below)

        // _check_config
        if (upBlockTypes.Length != n)
            throw new LensException($"{cfg.Path}: {n} down_block_types but {upBlockTypes.Length} up_block_types");
        if (blockOutChannels.Length != n)
            throw new LensException($"{cfg.Path}: {blockOutChannels.Length} block_out_channels for {n} down_block_types");

        InChannels = cfg.Int("in_channels", 4);
        OutChannels = cfg.Int("out_channels", 4);
        BlockOutChannels = blockOutChannels;
        SampleSize = cfg.Has("sample_size") && !cfg.IsArray("sample_size") ? cfg.Int("sample_size") : null;
        _centerInputSample = cfg.Bool("center_input_sample", false);
        bool flipSinToCos = cfg.Bool("flip_sin_to_cos", true);
        double freqShift = cfg.Double("freq_shift", 0);
        bool onlyCrossIsBool = !cfg.IsArray("only_cross_attention");
        bool[] onlyCrossAttention = cfg.BoolOrArray("only_cross_attention", n, false);
        int[] layersPerBlock = cfg.Has("layers_per_block") ? cfg.IntOrArray("layers_per_block", n) : Enumerable.Repeat(2, n).ToArray();
        int downsamplePadding = cfg.Int("downsample_padding", 1);
        double midBlockScaleFactor = cfg.Double("mid_block_scale_factor", 1);
        double dropout = cfg.Double("dropout", 0.0);
        string actFn = cfg.Str("act_fn", "silu");
        int? normNumGroups = NullableInt(cfg, "norm_num_groups", 32);
        double normEps = cfg.Double("norm_eps", 1e-5);
        int[] crossAttentionDim = cfg.Has("cross_attention_dim") ? cfg.IntOrArray("cross_attention_dim", n) : Enumerable.Repeat(1280, n).ToArray();
        CrossAttentionDims = crossAttentionDim;
        int[][] transformerLayers = ParseTransformerLayers(cfg, "transformer_layers_per_block", n);
        int[][]? reverseTransformerLayers = cfg.Has("reverse_transformer_layers_per_block")
            ? ParseTransformerLayers(cfg, "reverse_transformer_layers_per_block", n) : null;
        if (cfg.IsArray("transformer_layers_per_block") && reverseTransformerLayers is null
            && cfg.Root["transformer_layers_per_block"]!.AsArray().Any(e => e is JsonArray))
            throw new LensException($"{cfg.Path}: 'reverse_transformer_layers_per_block' is required when transformer_layers_per_block has per-layer lists");
        int[] attentionHeadDim = cfg.Has("attention_head_dim") ? cfg.IntOrArray("attention_head_dim", n) : Enumerable.Repeat(8, n).ToArray();
        if (cfg.Has("num_attention_heads"))
            throw new LensException($"{cfg.Path}: 'num_attention_heads' is set; diffusers rejects it for UNet2DConditionModel (the head count comes from attention_head_dim)");
        // The legacy rule: num_attention_heads = num_attention_heads or attention_head_dim.
        int[] numAttentionHeads = attentionHeadDim;
        cfg.RequireValue("dual_cross_attention", false, false);
        bool useLinearProjection = cfg.Bool("use_linear_projection", false);
        bool upcastAttention = cfg.Bool("upcast_attention", false);
        string resnetTimeScaleShift = cfg.Str("resnet_time_scale_shift", "default");
        bool resnetSkipTimeAct = cfg.Bool("resnet_skip_time_act", false);
        double resnetOutScaleFactor = cfg.Double("resnet_out_scale_factor", 1.0);
        string timeEmbeddingType = cfg.Str("time_embedding_type", "positional");
        int? timeEmbeddingDim = cfg.IntOrNull("time_embedding_dim");
        string? timeEmbeddingActFn = cfg.StrOrNull("time_embedding_act_fn");
        string? timestepPostAct = cfg.StrOrNull("timestep_post_act");
        int? timeCondProjDim = cfg.IntOrNull("time_cond_proj_dim");
        int convInKernel = cfg.Int("conv_in_kernel", 3);
        int convOutKernel = cfg.Int("conv_out_kernel", 3);
        string attentionType = cfg.Str("attention_type", "default");
        bool classEmbeddingsConcat = cfg.Bool("class_embeddings_concat", false);
        bool midBlockOnlyCrossAttention = cfg.Has("mid_block_only_cross_attention")
            ? cfg.Bool("mid_block_only_cross_attention")
            : onlyCrossIsBool && onlyCrossAttention[0];
        string? crossAttentionNorm = cfg.StrOrNull("cross_attention_norm");

        if (attentionType != "default")
            throw new LensException($"{cfg.Path}: 'attention_type' = {attentionType} is not supported (only default)");
        if (timeCondProjDim is not null)
            throw new LensException($"{cfg.Path}: 'time_cond_proj_dim' is not supported (only null)");
        if (classEmbeddingsConcat)
            throw new LensException($"{cfg.Path}: 'class_embeddings_concat' = true is not supported");

        // input
        conv_in = Layers.Conv2d(InChannels, blockOutChannels[0], convInKernel, padding: (convInKernel - 1) / 2);

        // time (_set_time_proj)
        if (timeEmbeddingType != "positional")
            throw new LensException($"{cfg.Path}: 'time_embedding_type' = {timeEmbeddingType} is not supported (only positional)");
        int timeEmbedDim = timeEmbeddingDim ?? blockOutChannels[0] * 4;
        int timestepInputDim = blockOutChannels[0];
        time_proj = new Timesteps(blockOutChannels[0], flipSinToCos, freqShift);
        time_embedding = new TimestepEmbedding(timestepInputDim, timeEmbedDim, actFn, postActFn: timestepPostAct,
            condProjDim: timeCondProjDim);

        // _set_encoder_hid_proj
        string? encoderHidDimType = cfg.StrOrNull("encoder_hid_dim_type");
        int? encoderHidDim = cfg.IntOrNull("encoder_hid_dim");
        if (encoderHidDimType is null && encoderHidDim is not null) encoderHidDimType = "text_proj";
        if (encoderHidDim is null && encoderHidDimType is not null)
            throw new LensException($"{cfg.Path}: 'encoder_hid_dim' has to be set when 'encoder_hid_dim_type' is {encoderHidDimType}");
        EncoderHidDimType = encoderHidDimType;
        switch (encoderHidDimType)
        {
            case null: break;
            case "text_proj":
                // diffusers passes the raw cross_attention_dim here (a per-block list would fail there too)
                if (cfg.IsArray("cross_attention_dim"))
                    throw new LensException($"{cfg.Path}: 'encoder_hid_dim_type' = text_proj needs a single 'cross_attention_dim', not a list");
                encoder_hid_proj = Layers.Linear(encoderHidDim!.Value, crossAttentionDim[0]);
                break;
            default: throw new LensException($"{cfg.Path}: 'encoder_hid_dim_type' = {encoderHidDimType} is not supported (only null or text_proj)");
        }

        // _set_class_embedding
        string? classEmbedType = cfg.StrOrNull("class_embed_type");
        int? numClassEmbeds = cfg.IntOrNull("num_class_embeds");
        if (classEmbedType is null && numClassEmbeds is not null)
            throw new LensException($"{cfg.Path}: 'num_class_embeds' (class embedding table) is not supported");
        ClassEmbedType = classEmbedType;
        switch (classEmbedType)
        {
            case null: break;
            case "timestep":
                // TimestepEmbedding(timestep_input_dim, time_embed_dim, act_fn=act_fn): no post activation, no cond_proj
                class_embedding = new TimestepEmbedding(timestepInputDim, timeEmbedDim, actFn);
                break;
            default: throw new LensException($"{cfg.Path}: 'class_embed_type' = {classEmbedType} is not supported (only null or timestep)");
        }

        // _set_add_embedding
        string? additionEmbedType = cfg.StrOrNull("addition_embed_type");
        AdditionEmbedType = additionEmbedType;
        switch (additionEmbedType)
        {
            case null: break;
            case "text":
            {
                if (encoderHidDim is null && cfg.IsArray("cross_attention_dim"))
                    throw new LensException($"{cfg.Path}: 'addition_embed_type' = text needs 'encoder_hid_dim' or a single 'cross_attention_dim'");
                int textTimeEmbeddingFromDim = encoderHidDim ?? crossAttentionDim[0];
                add_embedding = new TextTimeEmbedding(textTimeEmbeddingFromDim, timeEmbedDim,
                    numHeads: cfg.Int("addition_embed_type_num_heads", 64));
                break;
            }
            case "text_time":
            {
                // SDXL: add_time_proj = Timesteps(addition_time_embed_dim, flip_sin_to_cos, freq_shift),
                // add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim)
                int? timeDim = cfg.IntOrNull("addition_time_embed_dim");
                int? projDim = cfg.IntOrNull("projection_class_embeddings_input_dim");
                if (timeDim is null || projDim is null)
                    throw new LensException($"{cfg.Path}: 'addition_embed_type' = text_time needs 'addition_time_embed_dim' and 'projection_class_embeddings_input_dim'");
                AdditionTimeEmbedDim = timeDim;
                ProjectionClassEmbeddingsInputDim = projDim;
                add_time_proj = new Timesteps(timeDim.Value, flipSinToCos, freqShift);
                add_embedding = new TimestepEmbedding(projDim.Value, timeEmbedDim);
                break;
            }
            default: throw new LensException($"{cfg.Path}: 'addition_embed_type' = {additionEmbedType} is not supported (only null, text or text_time)");
        }

        if (timeEmbeddingActFn is not null) _timeEmbedAct = Activations.Get(timeEmbeddingActFn);
        int blocksTimeEmbedDim = timeEmbedDim;

        // down
        var downs = new UNetDownBlock[n];
        int outputChannel = blockOutChannels[0];
        for (int i = 0; i < n; i++)
        {
            int inputChannel = outputChannel;
            outputChannel = blockOutChannels[i];
            bool isFinal = i == blockOutChannels.Length - 1;
            downs[i] = UNet2DBlocks.GetDownBlock(new DownBlockArgs
            {
                BlockType = downBlockTypes[i],
                NumLayers = layersPerBlock[i],
                TransformerLayersPerBlock = transformerLayers[i],
                InChannels = inputChannel,
                OutChannels = outputChannel,
                TembChannels = blocksTimeEmbedDim,
                AddDownsample = !isFinal,
                ResnetEps = normEps,
                ResnetActFn = actFn,
                ResnetGroups = normNumGroups,
                CrossAttentionDim = crossAttentionDim[i],
                NumAttentionHeads = numAttentionHeads[i],
                DownsamplePadding = downsamplePadding,
                DualCrossAttention = false,
                UseLinearProjection = useLinearProjection,
                OnlyCrossAttention = onlyCrossAttention[i],
                UpcastAttention = upcastAttention,
                ResnetTimeScaleShift = resnetTimeScaleShift,
                AttentionType = attentionType,
                ResnetSkipTimeAct = resnetSkipTimeAct,
                ResnetOutScaleFactor = resnetOutScaleFactor,
                CrossAttentionNorm = crossAttentionNorm,
                AttentionHeadDim = attentionHeadDim[i],
                Dropout = dropout,
            });
        }
        down_blocks = new ModuleList<UNetDownBlock>(downs);

        // mid
        mid_block = UNet2DBlocks.GetMidBlock(new MidBlockArgs
        {
            BlockType = midBlockType,
            TembChannels = blocksTimeEmbedDim,
            InChannels = blockOutChannels[^1],
            ResnetEps = normEps,
            ResnetActFn = actFn,
            ResnetGroups = normNumGroups,
            OutputScaleFactor = midBlockScaleFactor,
            TransformerLayersPerBlock = transformerLayers[^1],
            NumAttentionHeads = numAttentionHeads[^1],
            CrossAttentionDim = crossAttentionDim[^1],
            DualCrossAttention = false,
            UseLinearProjection = useLinearProjection,
            MidBlockOnlyCrossAttention = midBlockOnlyCrossAttention,
            UpcastAttention = upcastAttention,
            ResnetTimeScaleShift = resnetTimeScaleShift,
            AttentionType = attentionType,
            ResnetSkipTimeAct = resnetSkipTimeAct,
            CrossAttentionNorm = crossAttentionNorm,
            AttentionHeadDim = attentionHeadDim[^1],
            Dropout = dropout,
        });

        // up
        var reversedBlockOut = blockOutChannels.Reverse().ToArray();
        var reversedNumHeads = numAttentionHeads.Reverse().ToArray();
        var reversedLayersPerBlock = layersPerBlock.Reverse().ToArray();
        var reversedCrossAttentionDim = crossAttentionDim.Reverse().ToArray();
        var reversedTransformerLayers = reverseTransformerLayers ?? transformerLayers.Reverse().ToArray();
        var reversedOnlyCross = onlyCrossAttention.Reverse().ToArray();
        var ups = new UNetUpBlock[n];
        bool resnetUpsampling = false;
        outputChannel = reversedBlockOut[0];
        for (int i = 0; i < n; i++)
        {
            bool isFinal = i == blockOutChannels.Length - 1;
            int prevOutputChannel = outputChannel;
            outputChannel = reversedBlockOut[i];
            int inputChannel = reversedBlockOut[Math.Min(i + 1, blockOutChannels.Length - 1)];
            bool addUpsample = !isFinal;
            if (addUpsample) NumUpsamplers++;
            if (addUpsample && upBlockTypes[i] is "ResnetUpsampleBlock2D" or "SimpleCrossAttnUpBlock2D") resnetUpsampling = true;
            ups[i] = UNet2DBlocks.GetUpBlock(new UpBlockArgs
            {
                BlockType = upBlockTypes[i],
                NumLayers = reversedLayersPerBlock[i] + 1,
                TransformerLayersPerBlock = reversedTransformerLayers[i],
                InChannels = inputChannel,
                OutChannels = outputChannel,
                PrevOutputChannel = prevOutputChannel,
                TembChannels = blocksTimeEmbedDim,
                AddUpsample = addUpsample,
                ResnetEps = normEps,
                ResnetActFn = actFn,
                ResolutionIdx = i,
                ResnetGroups = normNumGroups,
                CrossAttentionDim = reversedCrossAttentionDim[i],
                NumAttentionHeads = reversedNumHeads[i],
                DualCrossAttention = false,
                UseLinearProjection = useLinearProjection,
                OnlyCrossAttention = reversedOnlyCross[i],
                UpcastAttention = upcastAttention,
                ResnetTimeScaleShift = resnetTimeScaleShift,
                AttentionType = attentionType,
                ResnetSkipTimeAct = resnetSkipTimeAct,
                ResnetOutScaleFactor = resnetOutScaleFactor,
                CrossAttentionNorm = crossAttentionNorm,
                // diffusers passes attention_head_dim[i] here, not reversed
                AttentionHeadDim = attentionHeadDim[i],
                Dropout = dropout,
            });
        }
        up_blocks = new ModuleList<UNetUpBlock>(ups);
        SizeMultiple = resnetUpsampling ? 1 << NumUpsamplers : 1;

        // out
        if (normNumGroups is int g)
        {
            conv_norm_out = Norms.GroupNorm(g, blockOutChannels[0], normEps, affine: true);
            _convAct = Activations.Get(actFn);
        }
        conv_out = Layers.Conv2d(blockOutChannels[0], OutChannels, convOutKernel, padding: (convOutKernel - 1) / 2);
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates) =>
        Forward(sample, timestep, encoderHiddenStates);

    /// <summary>
    /// The noise (or v / x0) prediction [B, out_channels, H, W].
    /// </summary>
    /// <param name="sample">[B, in_channels, H, W]</param>
    /// <param name="timestep">a scalar tensor or a [B] (or [1]) tensor, any numeric dtype</param>
    /// <param name="encoderHiddenStates">[B, T, cross_attention_dim]</param>
    /// <param name="encoderAttentionMask">[B, T] keep-mask (1 keep, 0 discard) for the cross-attention</param>
    /// <param name="attentionMask">[B, T] keep-mask diffusers' UNet passes to every attention as <c>attention_mask</c></param>
    /// <param name="classLabels">[B] class labels, required when the config has a class embedding (IF stage II: the
    /// noise level of the upscaled image, int64); ignored without one, as in diffusers</param>
    /// <param name="textEmbeds">addition_embed_type "text_time" (SDXL): the pooled text embeddings [B, P] (diffusers'
    /// <c>added_cond_kwargs["text_embeds"]</c>)</param>
    /// <param name="timeIds">addition_embed_type "text_time": the micro-conditioning ids [B, 6] (original size, crop top-left,
    /// target size; <c>added_cond_kwargs["time_ids"]</c>)</param>
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, Tensor? encoderAttentionMask = null,
        Tensor? attentionMask = null, Tensor? classLabels = null, Tensor? textEmbeds = null, Tensor? timeIds = null)
    {
        using var scope = NewDisposeScope();
        int defaultOverallUpFactor = 1 << NumUpsamplers;
        bool forwardUpsampleSize = sample.shape[^2] % defaultOverallUpFactor != 0 || sample.shape[^1] % defaultOverallUpFactor != 0;
        long[]? upsampleSize = null;

        if (attentionMask is not null)
            attentionMask = ((1 - attentionMask.to(sample.dtype)) * -10000.0).unsqueeze(1);
        if (encoderAttentionMask is not null)
            encoderAttentionMask = ((1 - encoderAttentionMask.to(sample.dtype)) * -10000.0).unsqueeze(1);

        if (_centerInputSample) sample = 2 * sample - 1.0;

        var tEmb = GetTimeEmbed(sample, timestep);
        var emb = time_embedding.forward(tEmb, null);

        var classEmb = GetClassEmbed(sample, classLabels);
        if (classEmb is not null) emb = emb + classEmb;

        var augEmb = GetAugEmbed(emb, encoderHiddenStates, textEmbeds, timeIds);
        if (augEmb is not null) emb = emb + augEmb;

        if (_timeEmbedAct is not null) emb = _timeEmbedAct(emb);

        encoderHiddenStates = ProcessEncoderHiddenStates(encoderHiddenStates);

        sample = conv_in.forward(sample);

        var downBlockResSamples = new List<Tensor> { sample };
        foreach (var block in down_blocks)
        {
            (sample, var res) = block.HasCrossAttention
                ? block.Forward(sample, emb, encoderHiddenStates, attentionMask, encoderAttentionMask)
                : block.Forward(sample, emb);
            downBlockResSamples.AddRange(res);
        }

        if (mid_block is not null)
            sample = mid_block.HasCrossAttention
                ? mid_block.Forward(sample, emb, encoderHiddenStates, attentionMask, encoderAttentionMask)
                : mid_block.Forward(sample, emb);

        for (int i = 0; i < up_blocks.Count; i++)
        {
            var block = up_blocks[i];
            bool isFinal = i == up_blocks.Count - 1;
            int k = block.NumResnets;
            var resSamples = downBlockResSamples.GetRange(downBlockResSamples.Count - k, k).ToArray();
            downBlockResSamples.RemoveRange(downBlockResSamples.Count - k, k);
            if (!isFinal && forwardUpsampleSize)
                upsampleSize = downBlockResSamples[^1].shape[2..];
            sample = block.HasCrossAttention
                ? block.Forward(sample, resSamples, emb, encoderHiddenStates, upsampleSize, attentionMask, encoderAttentionMask)
                : block.Forward(sample, resSamples, emb, upsampleSize: upsampleSize);
        }

        if (conv_norm_out is not null)
        {
            sample = conv_norm_out.forward(sample);
            sample = _convAct!(sample);
        }
        sample = conv_out.forward(sample);
        return sample.MoveToOuterDisposeScope();
    }

    /// <summary>diffusers <c>get_time_embed</c>: broadcast the timestep to the batch, sinusoidal embedding in float32, cast to the sample dtype.</summary>
    private Tensor GetTimeEmbed(Tensor sample, Tensor timestep)
    {
        var timesteps = timestep;
        if (timesteps.ndim == 0) timesteps = timesteps.unsqueeze(0);
        if (timesteps.device != sample.device) timesteps = timesteps.to(sample.device);
        timesteps = timesteps.expand(sample.shape[0]);
        var tEmb = time_proj.forward(timesteps);
        return tEmb.to(sample.dtype);
    }

    /// <summary>
    /// diffusers <c>get_class_embed</c>: for class_embed_type "timestep" the labels go through <c>time_proj</c> (float32,
    /// NOT broadcast to the batch: one label per row), are cast to the sample dtype, then through
    /// <c>class_embedding</c>; the result is cast to the sample dtype.
    /// </summary>
    private Tensor? GetClassEmbed(Tensor sample, Tensor? classLabels)
    {
        if (class_embedding is null) return null;
        if (classLabels is null) throw new LensException("class_labels should be provided when num_class_embeds > 0");
        if (classLabels.device != sample.device) classLabels = classLabels.to(sample.device);
        var labels = time_proj.forward(classLabels).to(sample.dtype);
        return class_embedding.forward(labels).to(sample.dtype);
    }

    /// <summary>
    /// diffusers <c>get_aug_embed</c>: for addition_embed_type "text", the <see cref="TextTimeEmbedding"/> of the encoder
    /// hidden states as given (before encoder_hid_proj); for "text_time" (SDXL), <c>add_embedding</c> of
    /// concat([text_embeds, add_time_proj(time_ids.flatten()).reshape(B, -1)]) cast to the embedding's dtype.
    /// </summary>
    private Tensor? GetAugEmbed(Tensor emb, Tensor encoderHiddenStates, Tensor? textEmbeds, Tensor? timeIds)
    {
        switch (AdditionEmbedType)
        {
            case null: return null;
            case "text": return ((nn.Module<Tensor, Tensor>)add_embedding!).forward(encoderHiddenStates);
            case "text_time":
            {
                if (textEmbeds is null)
                    throw new LensException("this UNet has addition_embed_type 'text_time', which requires text_embeds (the pooled text embeddings)");
                if (timeIds is null)
                    throw new LensException("this UNet has addition_embed_type 'text_time', which requires time_ids");
                var timeEmbeds = add_time_proj!.forward(timeIds.flatten()).reshape(textEmbeds.shape[0], -1);
                var addEmbeds = torch.cat(new[] { textEmbeds, timeEmbeds.to(textEmbeds.dtype) }, -1).to(emb.dtype);
                return ((TimestepEmbedding)add_embedding!).forward(addEmbeds, null);
            }
            default: throw new LensException($"addition_embed_type '{AdditionEmbedType}' is not supported");
        }
    }

    /// <summary>diffusers <c>process_encoder_hidden_states</c>: encoder_hid_proj for encoder_hid_dim_type "text_proj".</summary>
    private Tensor ProcessEncoderHiddenStates(Tensor encoderHiddenStates)
    {
        if (encoder_hid_proj is not null && EncoderHidDimType == "text_proj")
            return encoder_hid_proj.forward(encoderHiddenStates);
        return encoderHiddenStates;
    }

    // ---- config helpers ----

    private static bool IsExplicitNull(DiffusersConfig cfg, string key) =>
        cfg.Root.TryGetPropertyValue(key, out var v) && v is null;

    /// <summary>A string whose explicit JSON null means "none" (e.g. mid_block_type), with a default when the key is absent.</summary>
    private static string? NullableStr(DiffusersConfig cfg, string key, string dflt) =>
        IsExplicitNull(cfg, key) ? null : cfg.Str(key, dflt);

    private static int? NullableInt(DiffusersConfig cfg, string key, int dflt) =>
        IsExplicitNull(cfg, key) ? null : cfg.Int(key, dflt);

    /// <summary>
    /// transformer_layers_per_block: an int (every layer of every block), or one entry per block, each an int or a
    /// per-layer list. Returns one array per block (length 1 = broadcast over the block's layers).
    /// </summary>
    private static int[][] ParseTransformerLayers(DiffusersConfig cfg, string key, int n)
    {
        if (!cfg.Has(key)) return Enumerable.Range(0, n).Select(_ => new[] { 1 }).ToArray();
        var node = cfg.Root[key]!;
        try
        {
            if (node is JsonArray arr)
            {
                if (arr.Count != n) throw new LensException($"{cfg.Path}: '{key}' has {arr.Count} entries, expected {n}");
                return arr.Select(e => e is JsonArray inner
                    ? inner.Select(x => x!.GetValue<int>()).ToArray()
                    : new[] { e!.GetValue<int>() }).ToArray();
            }
            int v = node.GetValue<int>();
            return Enumerable.Range(0, n).Select(_ => new[] { v }).ToArray();
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new LensException($"{cfg.Path}: key '{key}' has an unexpected value {node.ToJsonString()}");
        }
    }
}
